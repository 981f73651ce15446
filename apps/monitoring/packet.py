"""The audit packet's "Monitoring" section: how a version did while it served, what alerts fired, and the
retraining it came from or led to. Registered from MonitoringConfig.ready(), so approvals never imports monitoring."""

from __future__ import annotations

from django.db.models import Max, Min, Q

from apps.approvals.packet import ORDER_MONITORING, register_section, when
from apps.monitoring import metrics
from apps.monitoring.models import Alert, RetrainingRun, Rollup
from apps.monitoring.rollups import merge
from apps.registry.models import ModelVersion

MAX_ALERTS = 200


def _percent(value) -> str:
    return "—" if value is None else f"{value:.1%}"


def _ms(value) -> str:
    return "—" if value is None else f"{value:,.1f} ms"


def _performance(merged: dict) -> str:
    kind = (merged.get("performance") or {}).get("kind")
    if kind == "classification":
        measured = metrics.value_of("accuracy", merged)
        return f"{measured.value:.1%} accuracy on {measured.samples:,} labelled rows"
    if kind == "regression":
        measured = metrics.value_of("mae", merged)
        return f"MAE {measured.value:,.4g} on {measured.samples:,} labelled rows"
    return "No outcomes sent back"


def monitoring_section(version: ModelVersion, user) -> dict | None:
    days = list(Rollup.objects.filter(model_version=version, bucket="1d", shadow=False)
                .select_related("deployment__environment").order_by("deployment_id", "start"))
    runs = list(RetrainingRun.objects.filter(Q(base_version=version) | Q(new_version=version))
                .select_related("base_version__model", "new_version__model", "deployment").order_by("created_at"))
    if not days and not runs:
        return None
    tables, facts = [], []
    by_deployment: dict[int, list[Rollup]] = {}
    for row in days:
        by_deployment.setdefault(row.deployment_id, []).append(row)
    usage_rows = []
    for rows in by_deployment.values():
        merged = merge(rows)
        deployment = rows[0].deployment
        usage_rows.append([
            deployment.name, deployment.environment.name, when(rows[0].start), when(rows[-1].start),
            f"{merged['requests']:,}", _percent(metrics.value_of("error_rate", merged).value),
            _ms(metrics.value_of("latency_p95", merged).value), _performance(merged)])
    if usage_rows:
        tables.append({"caption": "While it served", "columns": ["Deployment", "Environment", "First day",
                                                                  "Last day", "Requests", "Error rate",
                                                                  "Latency p95", "Performance"],
                       "rows": usage_rows})
        span = Rollup.objects.filter(model_version=version, bucket="1d", shadow=False).aggregate(
            first=Min("start"), last=Max("start"))
        alerts = list(Alert.objects.filter(rule__deployment_id__in=by_deployment, opened_at__gte=span["first"])
                      .select_related("rule__deployment").order_by("opened_at")[:MAX_ALERTS])
        if alerts:
            tables.append({"caption": "Alerts", "columns": ["Opened", "Deployment", "Severity", "Alert", "Status",
                                                             "Resolved"],
                           "rows": [[when(a.opened_at), a.rule.deployment.name, a.get_severity_display(), a.title,
                                     a.get_status_display(), when(a.resolved_at) if a.resolved_at else "—"]
                                    for a in alerts]})
        else:
            facts.append(["Alerts", "None opened while this version served."])
    if runs:
        rows = []
        for run in runs:
            comparison = run.comparison or {}
            rows.append([when(run.created_at), f"{run.base_version.model.name} v{run.base_version.number}",
                         f"v{run.new_version.number}" if run.new_version else "—", run.get_status_display(),
                         run.trigger, comparison.get("summary") or run.error or "—"])
        tables.append({"caption": "Retraining", "columns": ["Started", "From", "New version", "Status", "Why",
                                                             "Result"], "rows": rows})
    return {"intro": "How this version did in production, from the portal's monitoring rollups: usage, errors, "
                     "latency and, where outcomes were sent back, performance; the alerts raised while it served; "
                     "and any retraining it came from or led to.",
            "facts": facts, "tables": tables, "notes": []}


def register() -> None:
    register_section("monitoring", "Monitoring", ORDER_MONITORING, monitoring_section)
