"""Forms of the alert pages; they only collect input: the rules are in alerts.py, which the views call."""

from __future__ import annotations

from django import forms

from apps.accounts.models import User
from apps.monitoring import metrics
from apps.monitoring.models import AlertRule

GROUP_LABELS = {"usage": "Usage", "errors": "Errors", "latency": "Speed", "quality": "Data quality",
                "drift": "Drift", "performance": "Performance (needs ground truth)"}
WINDOWS = [(5, "5 minutes"), (15, "15 minutes"), (60, "1 hour"), (6 * 60, "6 hours"), (24 * 60, "24 hours"),
           (7 * 24 * 60, "7 days"), (30 * 24 * 60, "30 days")]
SNOOZE_HOURS = [(1, "1 hour"), (4, "4 hours"), (24, "1 day"), (72, "3 days"), (168, "1 week")]


def metric_choices() -> list:
    groups: dict[str, list] = {}
    for key, info in metrics.METRICS.items():
        groups.setdefault(info.group, []).append((key, info.label))
    return [(GROUP_LABELS.get(group, group.capitalize()), choices) for group, choices in groups.items()]


def is_percent(metric: str) -> bool:
    info = metrics.METRICS.get(metric)
    return bool(info and info.unit == "%")


class AlertRuleForm(forms.Form):
    """An alert rule; percentages are typed as percentages here (5 for 5 %) and stored as fractions."""

    name = forms.CharField(max_length=120, help_text="Says what is wrong when it fires, e.g. “Error rate above 5 %”.")
    metric = forms.ChoiceField(choices=metric_choices, help_text="What to watch. Performance metrics need ground "
                                                                 "truth (feedback) to be sent back.")
    comparator = forms.ChoiceField(choices=AlertRule.Comparator.choices, label="Alert when the value is",
                                   initial=AlertRule.Comparator.ABOVE)
    threshold = forms.FloatField(
        help_text="Percentages as percentages (5 means 5 %; traffic change -50 means half of last week's), latency "
                  "in milliseconds, drift as a PSI (0.1 moderate, 0.25 high).")
    window_minutes = forms.TypedChoiceField(choices=WINDOWS, coerce=int, initial=60, label="Over the last",
                                            help_text="Longer windows are steadier; shorter ones react faster.")
    min_samples = forms.IntegerField(min_value=1, initial=30, label="Minimum sample size",
                                     help_text="Requests (or rows, or labelled predictions) needed before the rule "
                                               "judges: fewer, and nothing changes.")
    severity = forms.ChoiceField(choices=AlertRule.Severity.choices, initial=AlertRule.Severity.WARNING,
                                 help_text="Critical turns the deployment red in the Operations Center; the others "
                                           "amber.")
    notify_in_app = forms.BooleanField(required=False, initial=True, label="Notify in the portal")
    notify_email = forms.BooleanField(required=False, label="Also send e-mail",
                                      help_text="To the project's scientists and admins, and the alert's owner.")
    webhook_url = forms.CharField(required=False, max_length=500, label="Webhook URL (optional)",
                                  help_text="An http(s) address that receives a signed JSON POST when the alert "
                                            "opens and resolves (retried for about half an hour).")
    webhook_secret = forms.CharField(required=False, max_length=128, label="Webhook secret (optional)",
                                     widget=forms.PasswordInput(render_value=False),
                                     help_text="Signs each POST (X-Portal-Signature: sha256=HMAC of the body). Leave "
                                               "empty to keep the current one.")
    clear_secret = forms.BooleanField(required=False, label="Remove the webhook secret")
    action = forms.ChoiceField(choices=AlertRule.Action.choices, required=False, label="When it fires",
                               help_text="Retraining fits a challenger on recent data; it still needs approval "
                                         "before it serves.")
    enabled = forms.BooleanField(required=False, initial=True, label="Enabled")

    def __init__(self, *args, rule: AlertRule | None = None, **kwargs):
        if rule is not None and "initial" not in kwargs:
            threshold = rule.threshold * 100 if is_percent(rule.metric) else rule.threshold
            kwargs["initial"] = {key: getattr(rule, key) for key in (
                "name", "metric", "comparator", "window_minutes", "min_samples", "severity", "notify_in_app",
                "notify_email", "webhook_url", "action", "enabled")} | {"threshold": round(threshold, 6)}
        super().__init__(*args, **kwargs)
        self.rule = rule
        if rule is not None and rule.window_minutes not in dict(WINDOWS):
            self.fields["window_minutes"].choices = sorted(
                [*WINDOWS, (rule.window_minutes, f"{rule.window_minutes} minutes")])
        if rule is None or not rule.webhook_secret:
            del self.fields["clear_secret"]
        else:
            self.fields["webhook_secret"].help_text = ("A secret is set. Type a new one to replace it, or leave "
                                                       "empty to keep it.")

    def service_fields(self) -> dict:
        """The cleaned data as alerts.create_rule / update_rule take it."""
        data = dict(self.cleaned_data)
        clear = data.pop("clear_secret", False)
        if is_percent(data["metric"]):
            data["threshold"] = data["threshold"] / 100
        if clear:
            data["webhook_secret"] = ""
        elif not data["webhook_secret"]:
            data.pop("webhook_secret")
        return data


class SnoozeForm(forms.Form):
    hours = forms.TypedChoiceField(choices=SNOOZE_HOURS, coerce=int, initial=24, label="Snooze for",
                                   help_text="No reminders meanwhile; if it is still happening then, you are told "
                                             "again.")


class AssignForm(forms.Form):
    owner = forms.ModelChoiceField(queryset=User.objects.none(), to_field_name="username", required=False,
                                   empty_label="Nobody", label="Owner",
                                   help_text="A project member who looks after this alert; they are notified.")

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["owner"].queryset = User.objects.filter(memberships__project=project,
                                                            is_active=True).order_by("username")
