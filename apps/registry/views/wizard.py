"""Registry pages: the model import wizard (source → file → describe → lineage → review → import).

Each step saves into an `ImportDraft` so a person can leave and resume; the last step hands everything to
`services.start_import`, the same operation as the API, and then shows the import job's progress.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, path, reverse
from django.views.decorators.http import require_POST

from apps.accounts.models import Project
from apps.accounts.permissions import Action, require
from apps.core import storage
from apps.core.views import form_errors_from, redirect_after_post
from apps.datasets.services import upload_too_large
from apps.registry import services
from apps.registry.formats import FORMAT_NAMES, ModelFileError, check_claim
from apps.registry.forms import DescribeForm, FileForm, LineageForm
from apps.registry.models import ImportDraft, ModelVersion, RegisteredModel

Step = ImportDraft.Step
STEPS = [Step.SOURCE, Step.FILE, Step.DESCRIBE, Step.LINEAGE, Step.REVIEW]
# Errors from start_import name a field; this says which step to send the person back to.
FIELD_STEP = {"file": Step.FILE, "format": Step.FILE, "name": Step.DESCRIBE, "lineage": Step.LINEAGE,
              **{f: Step.DESCRIBE for f in services.MODEL_FIELDS},
              **{f: Step.LINEAGE for f in ("training_dataset", "target_column", "code_repository", "code_commit",
                                           "params", "metrics", "requirements", "input_example")}}
QUARANTINED_FORMATS = {"pickle", "joblib"}


def _url(name: str, *args) -> str:
    """A link to a page another engineer owns, or "" while it does not exist yet."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return ""


def step_url(draft: ImportDraft, step: str) -> str:
    return reverse("model-import-step", args=[draft.uuid, step])


def _draft_for(request, draft_id) -> ImportDraft:
    # A draft is private to its creator: anyone else gets 404, as for an object they cannot see.
    draft = get_object_or_404(ImportDraft.objects.select_related("project", "version__model"),
                              uuid=draft_id, created_by=request.user)
    require(request.user, Action.IMPORT_MODEL, draft.project)
    return draft


def _reached(draft: ImportDraft) -> int:
    return STEPS.index(draft.step) if draft.step in STEPS else len(STEPS)


def _advance(draft: ImportDraft, step: str, data: dict | None, *, valid: bool = True) -> str:
    """Save a step's data; on success move the draft's resume point on. Returns the next step."""
    if data is not None:
        draft.data[step] = data
    completed = set(draft.data.get("valid", [])) - {step}
    if valid:
        completed.add(step)
    draft.data["valid"] = sorted(completed)
    nxt = STEPS[min(STEPS.index(step) + 1, len(STEPS) - 1)]
    if valid and STEPS.index(nxt) > _reached(draft):
        draft.step = nxt
    draft.save()
    return nxt




def _context(request, draft: ImportDraft, step: str, **extra) -> dict:
    reached = _reached(draft)
    stepper = [{"step": s, "label": s.label, "url": step_url(draft, s), "current": s == step,
                "done": s in draft.data.get("valid", []), "open": i <= reached} for i, s in enumerate(STEPS)]
    index = STEPS.index(step) if step in STEPS else None
    return {
        "draft": draft,
        "project": draft.project,
        "step": step,
        "stepper": stepper,
        "back_url": step_url(draft, STEPS[index - 1]) if index else "",
        "models_url": _url("model-list", draft.project.slug),
        "return_to_review": request.GET.get("then") == "review" or request.POST.get("then") == "review",
        **extra,
    }


def _next_url(request, draft: ImportDraft, nxt: str) -> str:
    # "Edit" links on the review page come back to it instead of walking through every later step.
    if request.POST.get("then") == "review" and STEPS.index(Step.REVIEW) <= _reached(draft):
        return step_url(draft, Step.REVIEW)
    return step_url(draft, nxt)


# --- Start and resume ------------------------------------------------------------------------------------------


@login_required
def start(request, slug):
    project = get_object_or_404(Project, slug=slug)
    require(request.user, Action.IMPORT_MODEL, project)
    request.session["current_project"] = project.slug
    # "Import a new version" on a model's page names the model, so the describe step starts from it.
    model = RegisteredModel.objects.filter(project=project, slug=request.GET.get("model") or "-").first()
    if request.method == "POST":
        draft = ImportDraft.objects.create(
            project=project, created_by=request.user,
            data={Step.DESCRIBE: DescribeForm.initial_from_model(model)} if model else {})
        return redirect(step_url(draft, Step.SOURCE))
    drafts = ImportDraft.objects.filter(project=project, created_by=request.user).exclude(step=Step.DONE)
    return render(request, "registry/wizard/start.html", {
        "project": project,
        "drafts": [(d, step_url(d, d.step)) for d in drafts],
        "models_url": _url("model-list", project.slug),
        "model": model,
    })


@login_required
@require_POST
def discard(request, draft_id):
    draft = _draft_for(request, draft_id)
    if draft.step == Step.DONE:
        raise Http404  # an imported draft's file belongs to its version now
    with transaction.atomic():
        name = draft.file_name
        draft.delete()
        transaction.on_commit(lambda: storage.delete(name))
    return redirect("model-import", slug=draft.project.slug)


@login_required
def step(request, draft_id, step):
    draft = _draft_for(request, draft_id)
    if step == Step.DONE:
        return done(request, draft)
    if step not in STEPS:
        raise Http404
    if draft.step == Step.DONE:
        return redirect(step_url(draft, Step.DONE))
    if STEPS.index(step) > _reached(draft):
        return redirect(step_url(draft, draft.step))
    return {Step.SOURCE: source_step, Step.FILE: file_step, Step.DESCRIBE: describe_step,
            Step.LINEAGE: lineage_step, Step.REVIEW: review_step}[step](request, draft)


# --- Steps -----------------------------------------------------------------------------------------------------


def source_step(request, draft: ImportDraft):
    if request.method == "POST":
        return redirect(_next_url(request, draft, _advance(draft, Step.SOURCE, {"kind": "upload"})))
    return render(request, "registry/wizard/source.html", _context(
        request, draft, Step.SOURCE, mlflow_url=_url("mlflow-browse", draft.project.slug)))


def file_step(request, draft: ImportDraft):
    saved = draft.data.get(Step.FILE, {})
    form = FileForm(initial={"format": saved.get("format", "")}, has_file=bool(draft.file_name))
    if request.method == "POST":
        if too_large := upload_too_large(request):
            return HttpResponse(too_large, status=413, content_type="text/plain; charset=utf-8")
        form = FileForm(request.POST, request.FILES, has_file=bool(draft.file_name))
        if form.is_valid() and _keep_file(draft, form):
            return redirect_after_post(request, _next_url(request, draft, _advance(draft, Step.FILE, None)))
    template = "registry/wizard/_file_form.html" if request.htmx else "registry/wizard/file.html"
    return render(request, template, _context(
        request, draft, Step.FILE, form=form, format_name=FORMAT_NAMES.get(saved.get("detected", ""), ""),
        quarantined=saved.get("detected") in QUARANTINED_FORMATS))


def _keep_file(draft: ImportDraft, form: FileForm) -> bool:
    """Store and sniff a new upload (replacing the old one), or re-check the claim on the kept file."""
    claimed = form.cleaned_data["format"] or None
    uploaded = form.cleaned_data.get("file")
    if uploaded is None:
        detected = draft.data.get(Step.FILE, {}).get("detected", "")
        try:
            check_claim(detected, claimed, draft.original_filename)
        except ModelFileError as exc:
            form.add_error("format", str(exc))
            return False
        draft.data[Step.FILE] = {"format": claimed or "", "detected": detected}
        return True
    filename = (uploaded.name or "model")[:255]
    try:
        stored, detected = services.store_upload(uploaded, claimed=claimed)
    except ValidationError as exc:
        form.add_error("file", " ".join(exc.messages))
        return False
    old = draft.file_name
    draft.file_name, draft.original_filename = stored.name, filename
    draft.size_bytes, draft.sha256 = stored.size, stored.sha256
    draft.data[Step.FILE] = {"format": claimed or "", "detected": detected, "encrypted": stored.encrypted}
    if old and old != stored.name:
        transaction.on_commit(lambda: storage.delete(old))
    return True


def describe_step(request, draft: ImportDraft):
    refresh = step_url(draft, Step.DESCRIBE)
    initial = dict(draft.data.get(Step.DESCRIBE, {}))
    if request.GET.get("model") is not None:  # the htmx refresh when a model is chosen
        chosen = RegisteredModel.objects.filter(project=draft.project, slug=request.GET["model"]).first()
        initial = DescribeForm.initial_from_model(chosen) if chosen else {**initial, "model": ""}
    form = DescribeForm(initial=initial, project=draft.project, refresh_url=refresh)
    if request.method == "POST":
        form = DescribeForm(request.POST, project=draft.project, refresh_url=refresh)
        raw = {k: request.POST.get(k, "") for k in form.fields}
        if request.POST.get("action") == "back":
            _advance(draft, Step.DESCRIBE, raw, valid=False)
            return redirect(step_url(draft, Step.FILE))
        if form.is_valid() and _check(form, lambda: services.clean_model_fields(draft.project, _model_fields(raw))):
            return redirect(_next_url(request, draft, _advance(draft, Step.DESCRIBE, raw)))
    return render(request, "registry/wizard/describe.html", _context(request, draft, Step.DESCRIBE, form=form))


def _model_fields(describe: dict) -> dict:
    return {k: describe.get(k, "") for k in ("description", "intended_use", "out_of_scope_uses", "owner",
                                             "task_type", "risk_tier")}


def _check(form, validate) -> bool:
    """Run a service's validation and put its errors next to the form's fields."""
    try:
        validate()
    except ValidationError as exc:
        form_errors_from(exc, form)
        return False
    return True


def lineage_step(request, draft: ImportDraft):
    refresh = step_url(draft, Step.LINEAGE)
    initial = dict(draft.data.get(Step.LINEAGE, {}))
    if "training_dataset" in request.GET:  # the htmx refresh of the target column's choices
        initial.update(training_dataset=request.GET["training_dataset"], target_column="")
    form = LineageForm(initial=initial, project=draft.project, refresh_url=refresh)
    if request.method == "POST":
        form = LineageForm(request.POST, project=draft.project, refresh_url=refresh)
        raw = {k: request.POST.get(k, "") for k in form.fields}
        if request.POST.get("action") == "back":
            _advance(draft, Step.LINEAGE, raw, valid=False)
            return redirect(step_url(draft, Step.DESCRIBE))
        if form.is_valid() and _check(form, lambda: services.clean_lineage(draft.project, request.user, raw)):
            return redirect(_next_url(request, draft, _advance(draft, Step.LINEAGE, raw)))
    return render(request, "registry/wizard/lineage.html", _context(request, draft, Step.LINEAGE, form=form))


def review_step(request, draft: ImportDraft):
    missing = [s for s in STEPS[:-1] if s not in draft.data.get("valid", [])]
    errors: dict[str, list[str]] = {}
    if request.method == "POST" and not missing:
        describe, saved_file = draft.data[Step.DESCRIBE], draft.data[Step.FILE]
        try:
            with transaction.atomic():
                # A double-clicked "Import" must not create two versions: the second waits here, then sees DONE.
                if ImportDraft.objects.select_for_update().get(pk=draft.pk).step == Step.DONE:
                    return redirect(step_url(draft, Step.DONE))
                version = services.start_import(
                    draft.project, actor=request.user, name=describe["name"] or _model_name(draft, describe),
                    stored=storage.StoredFile(name=draft.file_name, size=draft.size_bytes or 0,
                                              sha256=draft.sha256, encrypted=bool(saved_file.get("encrypted"))),
                    original_filename=draft.original_filename, fmt=saved_file.get("format") or None,
                    model_fields=_model_fields(describe), lineage=draft.data[Step.LINEAGE],
                    description=describe.get("description", ""),
                )
                draft.version, draft.step = version, Step.DONE
                draft.save()
        except ValidationError as exc:
            errors = exc.message_dict
            if "file" in errors:  # start_import deleted the file it refused
                draft.file_name = ""
                draft.data["valid"] = [s for s in draft.data.get("valid", []) if s != Step.FILE]
                draft.save()
        else:
            return redirect(step_url(draft, Step.DONE))
    return render(request, "registry/wizard/review.html", _context(
        request, draft, Step.REVIEW, summary=_summary(draft), missing=[s.label for s in missing],
        errors=[(FIELD_STEP.get(field, Step.REVIEW), field, message)
                for field, messages in errors.items() for message in messages],
    ))


def _model_name(draft: ImportDraft, describe: dict) -> str:
    model = RegisteredModel.objects.filter(project=draft.project, slug=describe.get("model") or "").first()
    return model.name if model else ""


def _summary(draft: ImportDraft) -> dict:
    """What the review page shows, resolved to names people recognise."""
    describe, lineage = draft.data.get(Step.DESCRIBE, {}), draft.data.get(Step.LINEAGE, {})
    saved_file = draft.data.get(Step.FILE, {})
    model = RegisteredModel.objects.filter(project=draft.project, slug=describe.get("model") or "").first()
    form = LineageForm(initial=lineage, project=draft.project)
    dataset = form.versions.get(lineage.get("training_dataset") or "")
    return {
        "existing_model": model,
        "name": model.name if model else describe.get("name", ""),
        "next_number": (model.latest_version.number + 1) if model and model.latest_version else 1,
        "describe": describe,
        "task_type": RegisteredModel.TaskType(describe["task_type"]).label
        if describe.get("task_type") in RegisteredModel.TaskType.values else "",
        "risk_tier": RegisteredModel.RiskTier(describe["risk_tier"]).label
        if describe.get("risk_tier") in RegisteredModel.RiskTier.values else "",
        "lineage": lineage,
        "dataset": dataset,
        "requirements": [r.strip() for r in (lineage.get("requirements") or "").splitlines() if r.strip()],
        "detected": saved_file.get("detected", ""),
        "format_name": FORMAT_NAMES.get(saved_file.get("detected", ""), ""),
        "size": storage.format_size(draft.size_bytes) if draft.size_bytes is not None else "",
        "quarantined": saved_file.get("detected") in QUARANTINED_FORMATS,
    }


# --- After the import ------------------------------------------------------------------------------------------


def done(request, draft: ImportDraft):
    if draft.step != Step.DONE or draft.version is None:
        return redirect(step_url(draft, draft.step))
    version = ModelVersion.objects.select_related("model", "import_job").get(pk=draft.version_id)
    job = version.import_job
    status_url = f"{step_url(draft, Step.DONE)}?status=1"
    context = {
        "draft": draft, "project": draft.project, "version": version, "job": job,
        "poll_url": status_url,
        "model_url": _url("model-detail", version.model.slug),
        "version_url": _url("model-version", version.model.slug, version.number),
        "models_url": _url("model-list", draft.project.slug),
        "quarantined": version.status == ModelVersion.Status.QUARANTINED,
    }
    if request.htmx and request.GET.get("status"):
        return render(request, "registry/wizard/_done_status.html", context)
    return render(request, "registry/wizard/done.html", context)


urlpatterns = [
    path("projects/<slug:slug>/models/import/", start, name="model-import"),
    path("imports/<uuid:draft_id>/discard/", discard, name="model-import-discard"),
    path("imports/<uuid:draft_id>/<str:step>/", step, name="model-import-step"),
]
