"""Ongoing evaluation of the alliance: rules over clients' check-ins, alerts for the
clinician (FHIR Flag + Task), and a one-page report.

The path of the data: ``rules`` (validated rule files) -> ``evaluate`` (a patient's check-ins
-> triggers) -> ``alerts`` (triggers + open alerts -> decisions; Flag/Task JSON) and
``report`` (HTML, PNG). Everything here is free of I/O except reading rule files and writing
the report's screenshot.
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
    render_png,
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
    "render_png",
    "render_report_html",
    "rule_code",
    "rule_concepts",
    "rules_from_data",
    "series_for",
    "task_resource",
    "validate_rules_document",
]
