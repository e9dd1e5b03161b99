"""Alerts on the server: reading the open ones, raising, changing and closing Flag + Task.

What to do is decided in ``monitoring.alerts`` (pure); this module does it:

* ``new`` -> Flag (active) + Task (requested) in one transaction, each created only if no
  *open* one with its identifier exists. A rule that fires again after recovering reopens
  its Flag (one Flag per alert key: R4 Flag has no ``status`` search parameter) and opens a
  new Task (the completed one stays as history). An alert the clinician closed by hand is
  not raised again for the same check-in (a new check-in that fires the rule raises it).
* ``changed`` -> the open Flag's text and Task's description/focus/priority patched under
  If-Match.
* ``recovered`` -> Flag inactive with ``period.end``, Task completed with the recovery note
  and ``statusReason`` :data:`RECOVERED_REASON`. When the Task's focus is a response since
  entered in error, the note says the response was withdrawn (:func:`withdrawn_note`), not
  that the scores recovered: nothing improved, the evidence went away.

Clinicians edit our Flags and Tasks too (complete or cancel a Task, change its priority), so
every edit is a three-way merge (``sync.merge3``) of what this run wants with the server's
version over the *base* kept in the state store (what we last wrote of the fields we own,
:data:`FLAG_FIELDS`/:data:`TASK_FIELDS`): a field only the clinician changed keeps their
value; one both changed is a conflict settled by ``conflict_policy`` (``skip``: nothing is
written for that resource, the state store and ``status`` name the fields). Reopening a
Flag for a new episode is our decision over the closed one, not a merge.

Where the server takes no Flag (``app.alert_mode``), an alert is its Task alone, carrying
what the Flag would have said in ``reasonCode`` (the rule's code, the message as text); it
is merged and closed like the pair's Task. Where it takes no Task either, alerts are only
counted (``reported``) and nothing is read or written.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from alliance_fhir.adapters import fhirjson
from alliance_fhir.adapters.dates import parse_when
from alliance_fhir.adapters.fhirjson import content_hash
from alliance_fhir.adapters.identity import identifier_system, search_token
from alliance_fhir.adapters.record import record_uuid
from alliance_fhir.app.alert_mode import AlertResources
from alliance_fhir.app.patient_view import PatientView, identifier_value
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import ConflictError, Problem
from alliance_fhir.fhir import FhirClient, WriteResult, entry_results
from alliance_fhir.instruments.library import InstrumentLibrary
from alliance_fhir.log import get_logger
from alliance_fhir.monitoring.alerts import (
    FLAG_KIND,
    PRIORITY,
    TASK_KIND,
    AlertDecision,
    AlertState,
    OpenAlert,
    closed_flag,
    completed_task,
    flag_resource,
    task_resource,
)
from alliance_fhir.monitoring.evaluate import Trigger, recovery_note
from alliance_fhir.monitoring.pull import NO_CACHE, ServerResponse
from alliance_fhir.monitoring.rules import Rule
from alliance_fhir.sync.merge3 import Policy, canonical, merged_update, path_rules, policy_of
from alliance_fhir.sync.state import StateStore

__all__ = [
    "FLAG_FIELDS",
    "OPEN_TASK_STATUSES",
    "RECOVERED_REASON",
    "TASK_FIELDS",
    "AlertWriter",
    "OpenOnServer",
    "withdrawn_note",
]

log = get_logger("alliance_fhir.monitoring")

#: Task statuses that mean the clinician still has it to do.
OPEN_TASK_STATUSES = ("requested", "received", "accepted", "ready", "in-progress", "on-hold")

#: ``Task.statusReason.text`` of a Task we completed because the scores recovered (a Task
#: closed without it was closed by a person: not raised again for the same check-in).
RECOVERED_REASON = "Closed by alliance-fhir: the rule no longer applies."


@dataclass
class OpenOnServer:
    """An alert open on the server: the decision's view plus the resources to edit."""

    alert: OpenAlert
    flag: dict[str, Any] | None = None
    task: dict[str, Any] | None = None


#: The Flag fields we own (merged three ways); the rest of a Flag is the EHR's.
FLAG_FIELDS = ("status", "code.text", "period.start", "period.end")
#: The Task fields we own; ``lastModified`` is stamped on every write we make, not merged.
TASK_FIELDS = ("status", "statusReason", "priority", "description", "reasonCode", "focus", "note")

_RULES = {
    "Flag": path_rules(FLAG_FIELDS),
    "Task": path_rules(TASK_FIELDS, sets={"note": canonical}),
}
_KINDS = {"Flag": FLAG_KIND, "Task": TASK_KIND}


def withdrawn_note(response_ref: str) -> str:
    """The closing note of an alert whose check-in was withdrawn (entered in error)."""
    return (
        f"Closed: the check-in this alert was raised on ({response_ref}) was withdrawn "
        "(entered in error); the remaining check-ins no longer meet the rule."
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _editable(resource: Mapping[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in resource.items() if k not in ("meta", "text")}


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AlertWriter:
    """Reads and writes our alert Flags and Tasks (identifiers ``alert-flag``/``alert-task``
    in the configured namespace)."""

    def __init__(
        self,
        client: FhirClient,
        library: InstrumentLibrary,
        settings: Settings,
        rules: Sequence[Rule],
        store: StateStore | None = None,
        *,
        resources: AlertResources = "flag+task",
        transactions: bool = True,
    ) -> None:
        self.client = client
        #: What carries an alert on this server (see ``app.alert_mode``).
        self.resources = resources
        #: False on a server that takes no transaction: a raise is conditional creates.
        self.transactions = transactions
        #: Where the bases live; None (read-only users such as the report) merges with the
        #: server's content as base, i.e. every difference is ours, as before bases were kept.
        self.store = store
        self._policy: Policy = policy_of(settings.conflict_policy)
        self.library = library
        self._ns = settings.identifier_namespace
        self._base = settings.canonical_base
        self._flag_system = identifier_system(FLAG_KIND, self._ns)
        self._task_system = identifier_system(TASK_KIND, self._ns)
        self._rules_by_id = {r.id: r for r in rules}
        #: Flags and Tasks with our identifier that could not be used (see ``_unusable``).
        self.problems: list[Problem] = []
        #: Alert resources left as they were because the clinician and we changed the same
        #: field (``Task/12: status, priority``: names only, values may be patient data).
        self.conflicts: list[str] = []

    # -- reading ---------------------------------------------------------------------------

    def open_alerts(self, patient_id: str | None = None) -> dict[str, list[OpenOnServer]]:
        """Alerts open on the server (active Flag or open Task of ours), by patient id."""
        found: dict[str, OpenOnServer] = {}
        if self.resources == "report":
            return {}  # nothing of ours on the server to read
        subject = {"subject": f"Patient/{patient_id}"} if patient_id else {}
        # Flag has no ``status`` search parameter in R4: one Flag per alert key (it is reopened
        # when the rule fires again), so filtering here stays cheap. Task-only alerts leave
        # Flags alone (the server would refuse their edits).
        flags = (
            self.client.search(
                "Flag", {"identifier": f"{self._flag_system}|", **subject}, headers=NO_CACHE
            )
            if self.resources == "flag+task"
            else iter(())
        )
        for flag in flags:
            key = identifier_value(flag, self._flag_system)
            if key and flag.get("status") == "active":
                entry = found.setdefault(key, OpenOnServer(OpenAlert("", "")))
                entry.flag = entry.flag or flag
        tasks = self.client.search(
            "Task",
            {
                "identifier": f"{self._task_system}|",
                "status": ",".join(OPEN_TASK_STATUSES),
                **subject,
            },
            headers=NO_CACHE,
        )
        for task in tasks:
            key = identifier_value(task, self._task_system)
            if not key:
                continue
            entry = found.setdefault(key, OpenOnServer(OpenAlert("", "")))
            entry.task = entry.task or task
        out: dict[str, list[OpenOnServer]] = defaultdict(list)
        for key, entry in sorted(found.items()):
            rule_id, sep, pid = key.partition(":")
            open_flag, open_task = entry.flag or {}, entry.task or {}
            if not sep or not pid:
                # our identifier system with a value we did not write: not an alert of ours
                for res in (open_flag, open_task):
                    if res:
                        self._unusable(res, "identifier", "not an alert key (rule:patient)")
                continue
            description = _text(open_task.get("description")) or _text(
                _mapping(open_flag.get("code")).get("text")
            )
            since = parse_when(_mapping(open_flag.get("period")).get("start")) or parse_when(
                open_task.get("authoredOn")
            )
            entry.alert = OpenAlert(
                rule_id=rule_id,
                patient_key=pid,
                flag_id=str(open_flag["id"]) if open_flag else None,
                task_id=str(open_task["id"]) if open_task else None,
                description=description,
                since=since,
            )
            out[pid].append(entry)
        return dict(out)

    def _unusable(self, resource: Mapping[str, Any], path: str, reason: str) -> None:
        """A Flag or Task of ours we cannot use: a problem naming its id and JSON path
        (``problems``, and the log), never an exception."""
        rtype = str(resource.get("resourceType"))
        problem = Problem(f"{rtype}/{resource.get('id')}", path, reason, path=f"{rtype}.{path}")
        self.problems.append(problem)
        log.warning(
            "monitoring.alert_unreadable", record=problem.location, path=problem.path, reason=reason
        )

    # -- writing ---------------------------------------------------------------------------

    def apply(
        self,
        decision: AlertDecision,
        current: OpenOnServer | None,
        info: PatientView,
        now: datetime,
    ) -> str:
        """Carry out one decision; what happened (``new``, ``changed``, ``unchanged``,
        ``recovered``, ``dismissed``, or ``conflict``: a Flag or Task left as the clinician
        made it, see ``conflicts``)."""
        if decision.state == AlertState.UNCHANGED:
            return "unchanged"
        if self.resources == "report":
            return "reported"
        if decision.state == AlertState.NEW:
            assert decision.trigger is not None
            return self._raise(decision.trigger, info, now)
        assert current is not None
        if decision.state == AlertState.CHANGED:
            assert decision.trigger is not None
            return "changed" if self._change(decision.trigger, current, info, now) else "conflict"
        return "recovered" if self._recover(current, info, now) else "conflict"

    def _focus(self, trigger: Trigger, info: PatientView) -> ServerResponse | None:
        if trigger.focus_key is None:
            return None
        return next((r for r in info.responses if r.key == trigger.focus_key), None)

    def _owner(self, focus: ServerResponse | None, info: PatientView) -> dict[str, Any] | None:
        if focus is not None and focus.author_ref is not None:
            return {"reference": str(focus.author_ref["reference"])}
        return info.plan_owner

    def _dismissed(self, trigger: Trigger, focus: ServerResponse | None, info: PatientView) -> bool:
        """Whether the clinician closed this alert by hand and nothing new fired it since."""
        token = search_token(TASK_KIND, trigger.key, self._ns)
        # The newest by meta.lastUpdated, chosen here: many EHRs refuse _sort (issue #13).
        tasks = self.client.search("Task", {"identifier": token}, headers=NO_CACHE)
        latest = max(tasks, key=_updated_at, default=None)
        if latest is None or latest.get("status") in OPEN_TASK_STATUSES:
            return False
        if (latest.get("statusReason") or {}).get("text") == RECOVERED_REASON:
            return False
        if focus is not None:
            return (latest.get("focus") or {}).get("reference") == focus.reference
        closed = parse_when((latest.get("meta") or {}).get("lastUpdated"))
        checkins = info.series.get(trigger.instrument, [])
        last = max((c.authored for c in checkins), default=None)
        return closed is not None and (last is None or last <= closed)

    def _raise(self, trigger: Trigger, info: PatientView, now: datetime) -> str:
        focus = self._focus(trigger, info)
        if self._dismissed(trigger, focus, info):
            log.info("monitoring.alert_dismissed", alert=trigger.key)
            return "dismissed"
        subject = {"reference": f"Patient/{info.patient_id}"}
        focus_ref = {"reference": focus.reference} if focus is not None else None
        flag = flag_resource(
            trigger, subject_ref=subject, namespace=self._ns, canonical_base=self._base, now=now
        )
        task = task_resource(
            trigger,
            subject_ref=subject,
            owner_ref=self._owner(focus, info),
            focus_ref=focus_ref,
            namespace=self._ns,
            canonical_base=self._base,
            now=now,
        )
        flag_token = search_token(FLAG_KIND, trigger.key, self._ns)
        task_token = search_token(TASK_KIND, trigger.key, self._ns)
        open_tasks = ",".join(OPEN_TASK_STATUSES)
        entries: list[dict[str, Any]] = []
        if self.resources == "task":
            # No Flag on this server: what it would have said (the rule's code, the message)
            # goes on the Task.
            task = fhirjson.validate(
                {**task, "reasonCode": copy.deepcopy(flag["code"])}, source=f"Task {trigger.key}"
            )
        elif earlier := list(
            self.client.search("Flag", {"identifier": flag_token}, headers=NO_CACHE)
        ):
            # The rule fired before and recovered: reopen its Flag (the last episode stays
            # in the Flag's history) rather than a second Flag with the same identifier.
            def reopen(old: dict[str, Any]) -> dict[str, Any]:
                return {**flag, "id": old["id"]}

            self._write("Flag", str(earlier[0]["id"]), trigger.key, reopen, merge=False)
        else:
            entries.append(
                {
                    "fullUrl": record_uuid(FLAG_KIND, trigger.key),
                    "resource": flag,
                    "request": {
                        "method": "POST",
                        "url": "Flag",
                        "ifNoneExist": f"identifier={flag_token}",
                    },
                }
            )
        entries.append(
            {
                "fullUrl": record_uuid(TASK_KIND, trigger.key),
                "resource": task,
                "request": {
                    "method": "POST",
                    "url": "Task",
                    "ifNoneExist": f"identifier={task_token}&status={open_tasks}",
                },
            }
        )
        if self.transactions:
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            results = entry_results(self.client.transaction(bundle))
        else:  # Flag and Task do not point at each other: one conditional create each
            results = [
                self.client.create(e["resource"], if_none_exist=e["request"]["ifNoneExist"])
                for e in entries
            ]
        self._remember_created(results, entries)
        log.info("monitoring.alert_raised", alert=trigger.key, severity=trigger.severity)
        return "new"

    def _write(
        self,
        resource_type: str,
        resource_id: str,
        key: str,
        edit: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        merge: bool = True,
    ) -> bool:
        """Read, edit, merge three ways over the stored base (``merge=False``: the server's
        content is the base, every difference ours) and write back under If-Match, the
        version the merge was computed on; a write racing another edit (412) is read and
        merged again once. False when a conflict under ``skip`` left it as it was."""
        kind, rules = _KINDS[resource_type], _RULES[resource_type]
        for attempt in (1, 2):
            current = self.client.read(resource_type, resource_id, headers=NO_CACHE)
            ours = edit(current.resource)
            base = self._stored_base(kind, key, resource_id) if merge else None
            update = merged_update(base, current.resource, ours, rules, self._policy)
            if update.conflicts:
                self._conflict(resource_type, resource_id, key, update.conflicts, update.values)
                if update.resource is None and not update.unchanged:
                    return False
            if update.resource is None:
                self._remember(
                    kind, key, resource_type, resource_id, current.version_id, ours, update.base
                )
                return True
            resource = _editable(update.resource)
            if "lastModified" in ours:
                resource["lastModified"] = ours["lastModified"]
            resource = fhirjson.validate(resource, source=f"{resource_type} {key}")
            try:
                written = self.client.update(resource, if_match=current.version_id)
            except ConflictError:
                if attempt == 2:
                    raise
                continue
            # a stand-in client may answer nothing: the base is kept all the same
            version = written.version_id if written is not None else None
            self._remember(kind, key, resource_type, resource_id, version, resource, update.base)
            return True
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _stored_base(self, kind: str, key: str, resource_id: str) -> dict[str, Any] | None:
        """The base of the resource we last wrote for ``key``: None without a store, for
        alerts written before bases were kept, and for another resource of the key (an
        earlier episode's Task)."""
        if self.store is None:
            return None
        state = self.store.get(kind, key)
        if state is None or state.server_id != resource_id:
            return None
        return self.store.base(kind, key)

    def _conflict(
        self,
        resource_type: str,
        resource_id: str,
        key: str,
        fields: Sequence[str],
        values: Mapping[str, Any],
    ) -> None:
        """A field both the clinician and we changed: named (never its values) in
        ``conflicts``, the log and, under ``skip``, the state store for ``status``."""
        self.conflicts.append(f"{resource_type}/{resource_id}: {', '.join(fields)}")
        log.info(
            "monitoring.alert_conflict",
            alert=key,
            resource=f"{resource_type}/{resource_id}",
            fields=",".join(fields),
            policy=self._policy,
        )
        if self.store is not None and self._policy == "skip":
            state = self.store.get(_KINDS[resource_type], key)
            self.store.record(
                kind=_KINDS[resource_type],
                key=key,
                resource_type=resource_type,
                server_id=resource_id,
                version_id=state.version_id if state and state.server_id == resource_id else None,
                content_hash=state.content_hash if state else None,
                status="conflict",
                run_id=None,
                conflict_fields=fields,
            )
            self.store.set_conflict_values(_KINDS[resource_type], key, values)

    def _remember(
        self,
        kind: str,
        key: str,
        resource_type: str,
        resource_id: str | None,
        version_id: str | None,
        resource: Mapping[str, Any],
        base: Mapping[str, Any],
    ) -> None:
        """The base of what the server now holds from us, for the next merge."""
        if self.store is None or resource_id is None:
            return
        self.store.record(
            kind=kind,
            key=key,
            resource_type=resource_type,
            server_id=resource_id,
            version_id=version_id,
            content_hash=content_hash(dict(resource)),
            status="synced",
            run_id=None,
            base=base,
        )

    def _remember_created(self, results: Sequence[WriteResult], sent: Sequence[Any]) -> None:
        """Bases of the Flag/Task a raise created (an ``ifNoneExist`` that found an open one
        created nothing: that one's base stays)."""
        for result, entry in zip(results, sent, strict=False):
            resource = entry["resource"]
            if not result.created:
                continue
            rtype = str(resource["resourceType"])
            key = identifier_value(resource, identifier_system(_KINDS[rtype], self._ns))
            if key:
                self._remember(
                    _KINDS[rtype],
                    key,
                    rtype,
                    result.resource_id,
                    result.version_id,
                    resource,
                    _RULES[rtype].owned(resource),
                )

    def _change(
        self, trigger: Trigger, current: OpenOnServer, info: PatientView, now: datetime
    ) -> bool:
        focus = self._focus(trigger, info)

        def edit_flag(flag: dict[str, Any]) -> dict[str, Any]:
            out = _editable(flag)
            out["code"] = {**(out.get("code") or {}), "text": trigger.message}
            return fhirjson.validate(out, source=f"Flag {trigger.key}")

        def edit_task(task: dict[str, Any]) -> dict[str, Any]:
            out = _editable(task)
            out["description"] = trigger.message
            out["priority"] = PRIORITY[trigger.severity]
            if self.resources == "task":  # the Flag's text, kept on the Task alone
                out["reasonCode"] = {**_mapping(out.get("reasonCode")), "text": trigger.message}
            out["lastModified"] = _stamp(now)
            if focus is not None:
                out["focus"] = {"reference": focus.reference}
            return fhirjson.validate(out, source=f"Task {trigger.key}")

        written = True
        if current.alert.flag_id:
            written &= self._write("Flag", current.alert.flag_id, trigger.key, edit_flag)
        if current.alert.task_id:
            written &= self._write("Task", current.alert.task_id, trigger.key, edit_task)
        log.info("monitoring.alert_updated", alert=trigger.key)
        return written

    def _recover(self, current: OpenOnServer, info: PatientView, now: datetime) -> bool:
        alert = current.alert
        rule = self._rules_by_id[alert.rule_id]
        instrument = self.library.get(rule.instrument)
        focus = str(((current.task or {}).get("focus") or {}).get("reference") or "")
        if focus in info.withdrawn:
            note = withdrawn_note(focus)
        else:
            note = recovery_note(
                rule,
                instrument,
                info.series.get(instrument.id, []),
                care_plan_active=info.care_plan_active,
            )

        def close_flag(flag: dict[str, Any]) -> dict[str, Any]:
            return closed_flag(flag, now=now)

        def complete_task(task: dict[str, Any]) -> dict[str, Any]:
            out = completed_task(task, now=now, note=note)
            out["statusReason"] = {"text": RECOVERED_REASON}
            return fhirjson.validate(out, source=f"Task {alert.key}")

        written = True
        if alert.flag_id:
            written &= self._write("Flag", alert.flag_id, alert.key, close_flag)
        if alert.task_id:
            written &= self._write("Task", alert.task_id, alert.key, complete_task)
        log.info("monitoring.alert_closed", alert=alert.key)
        return written


def _updated_at(resource: dict[str, Any]) -> datetime:
    """A resource's meta.lastUpdated (the oldest possible time when missing)."""
    when = parse_when((resource.get("meta") or {}).get("lastUpdated"))
    return when or datetime.min.replace(tzinfo=UTC)
