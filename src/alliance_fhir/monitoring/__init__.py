"""Ongoing evaluation of the alliance: rules over clients' check-ins, alert decisions for
the clinician (FHIR Flag + Task), and the one-page report's HTML.

The path of the data: ``rules`` (validated rule files) -> ``evaluate`` (a patient's check-ins
-> triggers) -> ``alerts`` (triggers + open alerts -> decisions; Flag/Task JSON) and
``report`` (HTML). ``pull`` reads and scores QuestionnaireResponses the caller fetched.
Everything here is free of I/O except reading rule files: the server requests, alert writes,
report files and the report's screenshot belong to ``alliance_fhir.app``. Nothing here
imports ``sync``, ``fhir``, ``config`` or ``app``.
"""

from alliance_fhir.monitoring.alerts import (
    PRIORITY,
    AlertDecision,
    AlertState,
    OpenAlert,
    closed_flag,
    completed_task,
    decide_alerts,
    flag_resource,
    rule_code,
    rule_concepts,
    task_resource,
)
from alliance_fhir.monitoring.evaluate import (
    CheckIn,
    Trigger,
    alert_key,
    checkin_from_answers,
    evaluate,
    flagged_points,
    recovery_note,
)
from alliance_fhir.monitoring.report import (
    RenderError,
    ReportGoal,
    ReportMilestone,
    ReportSeries,
    render_report_html,
    series_for,
)
from alliance_fhir.monitoring.rules import (
    KINDS,
    Rule,
    is_rule_file,
    load_rules,
    load_rules_file,
    rules_from_data,
    validate_rules_document,
)

__all__ = [
    "KINDS",
    "PRIORITY",
    "AlertDecision",
    "AlertState",
    "CheckIn",
    "OpenAlert",
    "RenderError",
    "ReportGoal",
    "ReportMilestone",
    "ReportSeries",
    "Rule",
    "Trigger",
    "alert_key",
    "checkin_from_answers",
    "closed_flag",
    "completed_task",
    "decide_alerts",
    "evaluate",
    "flag_resource",
    "flagged_points",
    "is_rule_file",
    "load_rules",
    "load_rules_file",
    "recovery_note",
    "render_report_html",
    "rule_code",
    "rule_concepts",
    "rules_from_data",
    "series_for",
    "task_resource",
    "validate_rules_document",
]
