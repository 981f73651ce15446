"""The model card page of a version, its Try-it form, evidence jobs, trust/archive buttons and the HTML export."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from apps.accounts.permissions import Action, require
from apps.core.models import Job
from apps.registry import charts, evidence, services
from apps.registry.evidence import baselines
from apps.registry.evidence.facts import card_facts
from apps.registry.models import ModelVersion


def _version_for(request, model_slug: str, number: int) -> ModelVersion:
    return get_object_or_404(
        ModelVersion.objects.visible_to(request.user).select_related(
            "model__project", "model__owner", "created_by", "trusted_by", "training_dataset__dataset",
            "import_job", "converted_from"),
        model__slug=model_slug, number=number,
    )


def _card_url(version: ModelVersion, anchor: str = "") -> str:
    return reverse("model-version", args=[version.model.slug, version.number]) + (f"#{anchor}" if anchor else "")


def _message_of(exc: ValidationError) -> str:
    return " ".join(exc.messages)


def _render_card(request, version: ModelVersion, *, status: int = 200, **extra):
    context = card_facts(version, request.user)
    context["importance_figure"] = charts.importance_figure(version.explainability)
    context.update(baselines.baselines_state(version, request.user))
    context.update(extra)
    return render(request, "registry/card.html", context, status=status)


@login_required
def card(request, model_slug: str, number: int):
    return _render_card(request, _version_for(request, model_slug, number))


@login_required
def job_progress(request, model_slug: str, number: int, job_id):
    """htmx polling of one of this version's jobs: the progress fragment, then a page refresh once it ends."""
    version = _version_for(request, model_slug, number)
    job = get_object_or_404(Job, pk=job_id, params__version=str(version.uuid))
    if job.is_finished:
        response = HttpResponse(status=204)
        response["HX-Refresh"] = "true"
        return response
    return render(request, "components/job_progress.html", {"job": job, "poll_url": request.path})


@login_required
@require_POST
def try_it(request, model_slug: str, number: int):
    """The Try-it form: a result fragment for htmx, or the whole card again without JavaScript."""
    version = _version_for(request, model_slug, number)
    require(request.user, Action.PREDICT, version)
    names = evidence.input_columns(version)
    inputs = {c["name"]: request.POST.get(c["name"], "") for c in names}
    result, errors, error = None, {}, ""
    try:
        result = evidence.predict(version, actor=request.user, inputs=inputs)
    except ValidationError as exc:
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"inputs": exc.messages}
    except evidence.PredictionFailed as exc:
        error = str(exc)
    field_ids = {c["name"]: f"try-{i}" for i, c in enumerate(names)}  # the ids _card_try.html gives the inputs
    context = {"result": result, "error": error, "version": version,
               "errors": [(name, messages, field_ids.get(name)) for name, messages in errors.items()]}
    status = 200 if result else 400
    if request.htmx:
        # htmx swaps only 2xx answers by default; the fragment carries the error either way.
        return render(request, "registry/_try_result.html", context)
    return _render_card(request, version, status=status, try_result=context, submitted=inputs)


def _action(request, model_slug: str, number: int, work, success: str, anchor: str = ""):
    version = _version_for(request, model_slug, number)
    try:
        outcome = work(version)
    except ValidationError as exc:
        messages.error(request, _message_of(exc))
    else:
        messages.success(request, success.format(version=version, outcome=outcome))
    return redirect(_card_url(version, anchor))


@login_required
@require_POST
def explain(request, model_slug: str, number: int):
    return _action(request, model_slug, number, lambda v: evidence.start_explain(v, actor=request.user),
                   "Computing feature importance…", "explainability")


@login_required
@require_POST
def validate(request, model_slug: str, number: int):
    ref = request.POST.get("dataset_version", "")
    return _action(request, model_slug, number,
                   lambda v: evidence.start_validation(v, ref, actor=request.user),
                   "Validating {outcome.dataset_version}…", "validations")


@login_required
@require_POST
def optimise(request, model_slug: str, number: int):
    return _action(request, model_slug, number, lambda v: evidence.start_optimisation(v, actor=request.user),
                   "Checking the ONNX conversion…", "optimisation")


def _register(request, model_slug: str, number: int, register, what: str, anchor: str):
    """Register something derived from this version as a new version: on to its card, or back with the reason."""
    version = _version_for(request, model_slug, number)
    try:
        created = register(version)
    except ValidationError as exc:
        messages.error(request, _message_of(exc))
        return redirect(_card_url(version, anchor))
    messages.success(request, f"Registering {what} as v{created.number}…")
    return redirect(_card_url(created))


@login_required
@require_POST
def register_onnx(request, model_slug: str, number: int):
    return _register(request, model_slug, number, lambda v: evidence.register_onnx_variant(v, actor=request.user),
                     "the ONNX variant", "optimisation")


@login_required
@require_POST
def compare_baselines(request, model_slug: str, number: int):
    return _action(request, model_slug, number, lambda v: baselines.start_baselines(v, actor=request.user),
                   "Comparing {version} with simple baselines…", "baselines")


@login_required
@require_POST
def register_baseline(request, model_slug: str, number: int):
    return _register(request, model_slug, number, lambda v: baselines.register_baseline(v, actor=request.user),
                     "the baseline", "baselines")


@login_required
@require_POST
def trust(request, model_slug: str, number: int):
    comment = request.POST.get("comment", "")[:1000]
    return _action(request, model_slug, number,
                   lambda v: services.trust_version(v, actor=request.user, comment=comment),
                   "You trusted this exact file; it is being stored as-is.")


@login_required
@require_POST
def reexamine(request, model_slug: str, number: int):
    lineage = {key: request.POST.get(key, "").strip() for key in ("training_dataset", "target_column", "input_example")}
    return _action(request, model_slug, number,
                   lambda v: services.reexamine_version(v, actor=request.user, lineage=lineage),
                   "Examining {version} again with the rows you linked…")


@login_required
@require_POST
def archive(request, model_slug: str, number: int):
    return _action(request, model_slug, number, lambda v: services.archive_version(v, actor=request.user),
                   "{version} is archived.")


@login_required
@require_POST
def restore(request, model_slug: str, number: int):
    return _action(request, model_slug, number, lambda v: services.restore_version(v, actor=request.user),
                   "{version} is restored.")


@login_required
def export(request, model_slug: str, number: int):
    version = _version_for(request, model_slug, number)
    html = evidence.export_card_html(version, user=request.user)
    response = HttpResponse(html, content_type="text/html; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{version.model.slug}-v{version.number}-card.html"'
    return response




_V = "models/<slug:model_slug>/v<int:number>/"
urlpatterns = [
    path(_V, card, name="model-version"),
    path(f"{_V}jobs/<uuid:job_id>/", job_progress, name="card-job"),
    path(f"{_V}try/", try_it, name="card-try"),
    path(f"{_V}explain/", explain, name="card-explain"),
    path(f"{_V}validate/", validate, name="card-validate"),
    path(f"{_V}optimise/", optimise, name="card-optimise"),
    path(f"{_V}register-onnx/", register_onnx, name="card-register-onnx"),
    path(f"{_V}baselines/", compare_baselines, name="card-baselines"),
    path(f"{_V}register-baseline/", register_baseline, name="card-register-baseline"),
    path(f"{_V}trust/", trust, name="card-trust"),
    path(f"{_V}reexamine/", reexamine, name="card-reexamine"),
    path(f"{_V}archive/", archive, name="card-archive"),
    path(f"{_V}restore/", restore, name="card-restore"),
    path(f"{_V}card.html", export, name="card-export"),
]
