"""Ground truth and monitoring settings in the browser: upload a CSV of outcomes, and choose the reference data,
the value of a prediction and the retraining options. Services do the work; these views collect the input."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import render
from django.urls import path, reverse

from apps.accounts.permissions import Action, can
from apps.approvals.forms import apply_service_errors
from apps.core.views import redirect_after_post
from apps.datasets.models import DatasetVersion
from apps.deployments.models import Deployment
from apps.monitoring import services
from apps.monitoring.models import GroundTruth
from apps.monitoring.views import deployment_for

RECENT_LABELS = 20




class FeedbackUploadForm(forms.Form):
    file = forms.FileField(label="CSV file of outcomes",
                           help_text="A header row naming <code>request_id</code> and <code>label</code> (and "
                                     "optionally <code>row</code>, counted from 0), one line per prediction. Up to "
                                     "10,000 lines and 20 MB per file.")


@login_required
def feedback(request, slug):
    deployment = deployment_for(request, slug)
    may_send = can(request.user, Action.SEND_FEEDBACK, deployment)
    form = FeedbackUploadForm()
    if request.method == "POST":
        if not may_send:
            raise PermissionDenied
        form = FeedbackUploadForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                items = services.parse_feedback_csv(form.cleaned_data["file"])
                result = services.record_feedback(deployment, actor=request.user, items=items, source="csv")
            except ValidationError as exc:
                apply_service_errors(form, exc, field_map={"items": "file"})
            else:
                messages.success(request, f"{result.received:,} labels received: {result.matched:,} matched to "
                                          f"logged predictions, {result.pending:,} waiting for their prediction "
                                          f"to be logged, {result.corrected:,} corrected.")
                return redirect_after_post(request, reverse("deployment-feedback", args=[slug]))
    labels = GroundTruth.objects.filter(deployment=deployment)
    context = {"deployment": deployment, "project": deployment.project, "form": form, "may_send": may_send,
               "total": labels.count(), "matched": labels.filter(predicted_at__isnull=False).count(),
               "recent": labels.select_related("model_version", "created_by").order_by("-created_at", "-id")
               [:RECENT_LABELS],
               "api_url": request.build_absolute_uri(reverse("api:deployment-feedback", args=[slug]))}
    return render(request, "monitoring/feedback.html", context)


class MonitoringSettingsForm(forms.Form):
    reference_dataset = forms.ModelChoiceField(
        queryset=DatasetVersion.objects.none(), required=False, empty_label="The champion's training dataset",
        label="Reference data for drift",
        help_text="Drift compares today's inputs with this data. Leave it on the training dataset unless the model "
                  "was trained on data unlike what it sees in production.")
    value_per_prediction = forms.DecimalField(
        required=False, min_value=0, max_digits=12, decimal_places=4, label="Value of one prediction",
        help_text="An estimate of what one prediction is worth to the organisation (time saved, losses avoided). "
                  "The impact view multiplies it by the predictions served.")
    value_unit = forms.CharField(required=False, max_length=16, label="Unit of value", initial="USD")
    retrain_with_feedback = forms.BooleanField(
        required=False, label="Retrain with recent labelled predictions",
        help_text="A retraining fits on the training data plus the predictions whose outcome was sent back.")
    retrain_feedback_days = forms.IntegerField(min_value=0, max_value=3650, label="Days of labelled predictions")
    retrain_every_days = forms.IntegerField(
        min_value=0, max_value=365, label="Retrain automatically every … days",
        help_text="0: only when someone asks or an alert rule's action does. Every retraining still needs approval.")

    def __init__(self, *args, deployment: Deployment, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["reference_dataset"].queryset = (
            DatasetVersion.objects.filter(dataset__project=deployment.project, status=DatasetVersion.Status.READY)
            .exclude(parquet_name="").select_related("dataset").order_by("dataset__name", "-number"))


@login_required
def monitoring_settings(request, slug):
    deployment = deployment_for(request, slug)
    may_change = can(request.user, Action.MANAGE_ALERTS, deployment)
    current = services.settings_for(deployment)
    initial = {name: getattr(current, name) for name in services.SETTING_FIELDS}
    form = MonitoringSettingsForm(initial=initial, deployment=deployment)
    if request.method == "POST":
        if not may_change:
            raise PermissionDenied
        form = MonitoringSettingsForm(request.POST, initial=initial, deployment=deployment)
        if form.is_valid():
            try:
                services.update_settings(deployment, actor=request.user, **form.cleaned_data)
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, "Monitoring settings saved.")
                return redirect_after_post(request, reverse("deployment-monitoring-settings", args=[slug]))
    if not may_change:
        for field in form.fields.values():
            field.disabled = True
    return render(request, "monitoring/settings.html",
                  {"deployment": deployment, "project": deployment.project, "form": form, "may_change": may_change})


urlpatterns = [
    path("deployments/<slug:slug>/feedback/", feedback, name="deployment-feedback"),
    path("deployments/<slug:slug>/monitoring/settings/", monitoring_settings, name="deployment-monitoring-settings"),
]
