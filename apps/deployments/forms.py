"""Forms of the deployment pages; they only collect input: the rules are in services.py, which the views call."""

from __future__ import annotations

from django import forms
from django.conf import settings

from apps.approvals.models import Environment
from apps.deployments.models import Deployment
from apps.registry.models import ModelVersion

NEW = "new"


def _where(deployment: Deployment) -> str:
    environment = deployment.environment.name
    return "" if environment.lower() in deployment.name.lower() else f" (in {environment})"


class DeployForm(forms.Form):
    """Deploy a version: to a new deployment in an environment, or as the new champion of an existing one."""

    environment = forms.ModelChoiceField(queryset=Environment.objects.none(), to_field_name="slug",
                                         empty_label=None, label="Environment",
                                         error_messages={"required": "Choose the environment to deploy to.",
                                                         "invalid_choice": "Choose one of the project's environments."})
    target = forms.ChoiceField(label="Deploy to", choices=[(NEW, "A new deployment")],
                               help_text="An existing deployment keeps its URL, history and tokens; its current "
                                         "champion becomes the fallback you can roll back to.")
    name = forms.CharField(max_length=120, required=False, label="Name of the new deployment",
                           help_text="Also makes its URL, e.g. churn-production.")
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False, max_length=5000,
                                  label="Description (optional)")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False, max_length=2000,
                             label="Why (optional)", help_text="Goes into the deployment's history and the audit "
                                                               "trail, e.g. “better recall on Q3 data”.")

    def __init__(self, *args, version: ModelVersion, **kwargs):
        super().__init__(*args, **kwargs)
        self.version = version
        project = version.model.project
        self.fields["environment"].queryset = Environment.objects.filter(project=project).order_by("name")
        self.deployments = list(Deployment.objects.filter(project=project)
                                .select_related("environment", "champion__model").order_by("name"))
        self.fields["target"].choices = [(NEW, "A new deployment")] + [
            (d.slug, f"{d.name}{_where(d)}: replace {d.champion}") for d in self.deployments]

    def deployment(self) -> Deployment | None:
        slug = self.cleaned_data.get("target")
        return next((d for d in self.deployments if d.slug == slug), None)

    def clean(self):
        data = super().clean()
        environment, target = data.get("environment"), data.get("target")
        if environment is None or not target:
            return data
        if target == NEW:
            if not (data.get("name") or "").strip():
                self.add_error("name", "Give the new deployment a name.")
        else:
            deployment = self.deployment()
            if deployment.environment_id != environment.pk:
                self.add_error("target", f"{deployment.name} runs in {deployment.environment.name}: choose that "
                                         f"environment, or a new deployment in {environment.name}.")
        return data


class RollbackForm(forms.Form):
    prefix = "rollback"  # several forms share the page: distinct ids and names
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000, label="Why roll back",
                             error_messages={"required": "Say why you roll back: it goes into the audit trail."},
                             help_text="Goes into the history and the audit trail.")


class ChallengerForm(forms.Form):
    prefix = "challenger"  # several forms share the page: distinct ids and names
    version = forms.ModelChoiceField(queryset=ModelVersion.objects.none(), to_field_name="uuid", empty_label=None,
                                     label="Challenger version",
                                     error_messages={"required": "Choose the version to try as challenger."})
    mode = forms.ChoiceField(choices=Deployment.ChallengerMode.choices, label="Mode", initial="canary")
    share = forms.IntegerField(min_value=0, max_value=100, required=False, initial=10, label="Share of traffic (%)",
                               help_text="Canary only: the percentage of requests the challenger answers.")

    def __init__(self, *args, deployment: Deployment, **kwargs):
        super().__init__(*args, **kwargs)
        versions = (ModelVersion.objects.filter(model__project_id=deployment.project_id)
                    .exclude(pk=deployment.champion_id)
                    .filter(status__in=[ModelVersion.Status.READY, ModelVersion.Status.QUARANTINED])
                    .select_related("model").order_by("model__name", "-number"))
        self.fields["version"].queryset = versions
        self.fields["version"].label_from_instance = lambda v: f"{v.model.name} v{v.number}"


class StatusForm(forms.Form):
    prefix = "status"  # several forms share the page: distinct ids and names
    reason = forms.CharField(max_length=2000, required=False, label="Reason (optional)")


class SettingsForm(forms.Form):
    prefix = "settings"  # several forms share the page: distinct ids and names
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False, max_length=5000,
                                  label="Description")
    max_rows = forms.IntegerField(min_value=0, label="Most rows per request",
                                  help_text="0: the site default.")
    rate_limit_per_minute = forms.IntegerField(min_value=0, label="Requests per minute per caller",
                                               help_text="0: the site default.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["max_rows"].help_text = f"0: the site default ({settings.PORTAL_SERVING_MAX_ROWS:,})."
        self.fields["rate_limit_per_minute"].help_text = (
            f"0: the site default ({settings.PORTAL_SERVING_RATE_LIMIT_PER_MINUTE:,}). Past it, callers get 429.")


class TokenForm(forms.Form):
    prefix = "token"  # several forms share the page: distinct ids and names
    name = forms.CharField(max_length=100, label="Token name",
                           help_text="Name it after the application that will call this deployment.",
                           error_messages={"required": "Name the token after the application that will use it."})
    expires_at = forms.DateTimeField(required=False, label="Expires (optional)",
                                     widget=forms.DateTimeInput(attrs={"type": "datetime-local"},
                                                                format="%Y-%m-%dT%H:%M"),
                                     input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
                                     help_text="Leave empty for a token that works until revoked.")
