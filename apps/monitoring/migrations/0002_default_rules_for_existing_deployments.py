"""Deployments made before monitoring existed get the default alert rules new deployments get (idempotent)."""

from django.db import migrations

# A copy of alerts.DEFAULT_RULES as it was when this migration was written: migrations never import app code.
DEFAULT_RULES = [
    {"name": "Error rate above 5 %", "metric": "error_rate", "comparator": "gt", "threshold": 0.05,
     "window_minutes": 60, "min_samples": 30, "severity": "critical", "notify_email": True},
    {"name": "Slow answers (p95 above 500 ms)", "metric": "latency_p95", "comparator": "gt", "threshold": 500.0,
     "window_minutes": 60, "min_samples": 30, "severity": "warning"},
    {"name": "Input data drift (PSI 0.25 or more)", "metric": "drift_psi", "comparator": "gte", "threshold": 0.25,
     "window_minutes": 24 * 60, "min_samples": 500, "severity": "warning"},
    {"name": "Traffic drop (less than half of last week)", "metric": "traffic_change", "comparator": "lt",
     "threshold": -0.5, "window_minutes": 24 * 60, "min_samples": 100, "severity": "warning"},
]


def add_default_rules(apps, schema_editor):
    Deployment = apps.get_model("deployments", "Deployment")
    AlertRule = apps.get_model("monitoring", "AlertRule")
    for deployment in Deployment.objects.all().iterator():
        taken = set(AlertRule.objects.filter(deployment=deployment).values_list("name", flat=True))
        AlertRule.objects.bulk_create([
            AlertRule(deployment=deployment, is_default=True, created_by_id=deployment.created_by_id, **spec)
            for spec in DEFAULT_RULES if spec["name"] not in taken])


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0001_initial"), ("deployments", "0001_initial")]

    operations = [migrations.RunPython(add_default_rules, migrations.RunPython.noop)]
