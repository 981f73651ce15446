"""Models that data scientists logged on the MLflow tracking server, imported into the registry.

A version imported from the server is named by a canonical URI (`models:/<name>/<number>` or
`runs:/<run id>/<path>`) kept in `ModelVersion.source_uri`. The import job downloads that model, applies
the same checks as an uploaded MLflow zip (no pickle without an admin's trust) and copies the run's
lineage (params, metrics, tags, git commit). Following a server model imports its new versions on a beat.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from apps.accounts.permissions import Action, can, require
from apps.audit import services as audit
from apps.registry import importers, mlflow_store, services
from apps.registry.formats import ModelFileError
from apps.registry.models import ModelVersion, RegisteredModel

logger = logging.getLogger(__name__)

# Registered model names: no "/" (it would make `models:/a/b/3` ambiguous) and no control characters.
_NAME = r"[^/@\s][^/@\x00-\x1f]{0,254}"
_MODELS_URI = re.compile(rf"^models:/(?P<name>{_NAME})(?:/(?P<version>\d{{1,9}})|@(?P<alias>[A-Za-z0-9_.-]{{1,255}}))$")
_RUNS_URI = re.compile(r"^runs:/(?P<run_id>[A-Za-z0-9_-]{1,64})/(?P<path>[A-Za-z0-9_.\-/]{1,300})$")
_PORTAL_PREFIX = "portal."  # the portal's own registered models in the same store
_SECRET_TAG = re.compile(r"token|secret|password|passwd|credential|api[_-]?key|auth", re.IGNORECASE)
_KEPT_MLFLOW_TAGS = {"mlflow.runName", "mlflow.user", "mlflow.note.content"}
_COMMIT = re.compile(r"^[0-9a-fA-F]{7,64}$")
PAGE_SIZE = 20
VERSIONS_SHOWN = 10


class TrackingServerUnavailable(Exception):
    """The MLflow tracking server could not be reached (not the caller's fault: a 503, never a 500)."""


def _unavailable_message(detail: str = "") -> str:
    return (
        f"The MLflow tracking server (MLFLOW_TRACKING_URI = {_display_uri(settings.MLFLOW_TRACKING_URI)}) is not "
        "reachable" + (f": {detail}" if detail else "") + ". Try again later, or ask the operators to check it."
    )


def _display_uri(uri: str) -> str:
    """The URI without credentials, for messages."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        return urlunsplit((parts.scheme, host + (f":{parts.port}" if parts.port else ""), parts.path, "", ""))
    return uri


# --- URIs ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceRef:
    """A parsed, validated model URI; an alias is resolved to a number before it becomes canonical."""

    kind: str  # "models" or "runs"
    name: str = ""
    version: str = ""
    alias: str = ""
    run_id: str = ""
    path: str = ""

    @property
    def canonical(self) -> str:
        if self.kind == "runs":
            return f"runs:/{self.run_id}/{self.path}"
        return f"models:/{self.name}/{self.version}" if self.version else f"models:/{self.name}@{self.alias}"


def _bad_uri(message: str) -> ValidationError:
    return ValidationError({"model_uri": [message]})


def parse_model_uri(uri: str) -> SourceRef:
    """Only registered versions (by number or alias) and run artifacts; never files, URLs or other stores."""
    uri = str(uri or "").strip()
    if not uri:
        raise _bad_uri("Give the model's MLflow URI, e.g. models:/churn-model/3 or runs:/<run id>/model.")
    if not uri.startswith(("models:/", "runs:/")):
        raise _bad_uri(
            "Only models:/<name>/<version>, models:/<name>@<alias> and runs:/<run id>/<path> URIs can be imported "
            "(file, http, s3 and other locations are refused: the portal reads models only through the tracking "
            "server)."
        )
    if uri.startswith("models:/"):
        match = _MODELS_URI.match(uri)
        if not match:
            raise _bad_uri("A model URI is models:/<registered model name>/<version number> or "
                           "models:/<name>@<alias>, e.g. models:/churn-model/3.")
        if match["name"].startswith(_PORTAL_PREFIX):
            raise _bad_uri("portal.* models are the portal's own copies; import the scientist's model instead.")
        return SourceRef("models", name=match["name"], version=str(int(match["version"])) if match["version"] else "",
                         alias=match["alias"] or "")
    match = _RUNS_URI.match(uri)
    if not match:
        raise _bad_uri("A run URI is runs:/<run id>/<artifact path>, e.g. runs:/0a1b2c…/model.")
    segments = match["path"].split("/")
    if match["path"].startswith("/") or any(s in ("", ".", "..") for s in segments):
        raise _bad_uri("The artifact path must stay inside the run: no “..”, “.”, empty or absolute segments.")
    return SourceRef("runs", run_id=match["run_id"], path=match["path"])


# --- Talking to the tracking server ------------------------------------------------------------------------


def _client():
    return mlflow_store.client()


def _probe() -> None:
    """Fail fast on an unreachable HTTP server: MLflow's own client retries for minutes before giving up."""
    uri = settings.MLFLOW_TRACKING_URI
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=5)
    except requests.RequestException as exc:
        raise TrackingServerUnavailable(_unavailable_message(type(exc).__name__)) from None


@contextlib.contextmanager
def _server():
    """Calls to the tracking server; network failures become TrackingServerUnavailable."""
    import requests
    from mlflow.exceptions import MlflowException

    _probe()
    try:
        yield _client()
    except requests.RequestException as exc:
        raise TrackingServerUnavailable(_unavailable_message(type(exc).__name__)) from None
    except MlflowException as exc:
        if "Max retries exceeded" in str(exc) or "Connection" in str(exc) and "refused" in str(exc):
            raise TrackingServerUnavailable(_unavailable_message("connection refused")) from None
        raise


def _missing(exc) -> bool:
    return getattr(exc, "error_code", "") in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}


@dataclass(frozen=True)
class Resolved:
    ref: SourceRef  # with the alias resolved to a number
    default_name: str
    run_id: str
    description: str = ""


def resolve(ref: SourceRef) -> Resolved:
    """Check the URI names something on the server; a 400 on `model_uri` when it does not."""
    from mlflow.exceptions import MlflowException

    with _server() as client:
        try:
            if ref.kind == "models":
                if ref.alias:
                    mv = client.get_model_version_by_alias(ref.name, ref.alias)
                else:
                    mv = client.get_model_version(ref.name, ref.version)
                return Resolved(SourceRef("models", name=mv.name, version=str(mv.version)), default_name=mv.name,
                                run_id=mv.run_id or "", description=mv.description or "")
            run = client.get_run(ref.run_id)
            artifacts = {a.path for a in client.list_artifacts(ref.run_id, ref.path.rsplit("/", 1)[0]
                                                               if "/" in ref.path else None)}
            logged = {m.name for m in _logged_models(client, run)}
            if ref.path not in artifacts and ref.path not in logged:
                raise _bad_uri(f"Run {ref.run_id} has no model at “{ref.path}”.")
            return Resolved(ref, default_name=run.info.run_name or f"run {ref.run_id[:8]}", run_id=ref.run_id)
        except MlflowException as exc:
            if _missing(exc):
                raise _bad_uri(f"“{ref.canonical}” does not exist on the MLflow tracking server.") from None
            raise


def _logged_models(client, run) -> list:
    """MLflow 3 keeps a run's models as logged models outside the run's artifacts; runs:/<id>/<name> finds them."""
    try:
        return list(client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                                filter_string=f"source_run_id = '{run.info.run_id}'"))
    except Exception:  # older servers have no logged models
        return []


# --- Starting an import ---------------------------------------------------------------------------------------


def start_mlflow_import(
    project, *, actor, model_uri: str, name: str | None = None, model_fields: dict | None = None,
    lineage: dict | None = None, description: str = "",
) -> ModelVersion:
    """Check the URI on the server, create (or reuse) the model and its next version, and queue the import."""
    require(actor, Action.IMPORT_MODEL, project)
    ref = parse_model_uri(model_uri)
    lineage_clean = services.clean_lineage(project, actor, lineage or {})
    resolved = resolve(ref)
    canonical = resolved.ref.canonical
    earlier = ModelVersion.objects.filter(model__project=project, source_uri=canonical).exclude(
        status=ModelVersion.Status.FAILED).select_related("model").first()
    if earlier is not None:
        raise _bad_uri(f"{canonical} is already imported as {earlier}.")
    name = (name or "").strip() or resolved.default_name
    with transaction.atomic():
        existing = RegisteredModel.objects.filter(project=project, name=name).first()
        if existing is None:
            model = services.create_model(project, actor=actor, name=name, **(model_fields or {}))
        else:
            model = services.update_model(existing, actor=actor, **model_fields) if model_fields else existing
        return _create_version(model, actor=actor, canonical=canonical, description=description or
                               resolved.description, lineage=lineage_clean)


def _create_version(model: RegisteredModel, *, actor, canonical: str, description: str = "",
                    lineage: dict | None = None) -> ModelVersion:
    lineage = lineage or {}
    return services.create_version(
        model,
        actor=actor,
        description=description[:10_000],
        format=ModelVersion.Format.MLFLOW_SERVER,
        source_uri=canonical,
        training_dataset=lineage.get("training_dataset"),
        code_repository=lineage.get("code_repository", ""),
        code_commit=lineage.get("code_commit", ""),
        params=lineage.get("params", {}),
        metrics=lineage.get("metrics", {}),
        requirements=lineage.get("requirements", []),
        input_example=lineage.get("input_example"),
        tags={"target_column": lineage["target_column"]} if lineage.get("target_column") else {},
    )


# --- The import job's step ------------------------------------------------------------------------------------


def prepare(version: ModelVersion, *, work: Path, trusted: bool) -> importers.Prepared:
    """Download the version's source into `work`, check it like an uploaded MLflow zip, gather the run's lineage."""
    from mlflow.exceptions import MlflowException

    try:
        ref = parse_model_uri(version.source_uri)
    except ValidationError as exc:
        raise ModelFileError(exc.message_dict["model_uri"][0]) from None
    target = work / "download"
    target.mkdir()
    try:
        with _server() as client:
            root = Path(_download(ref, target))
            run_id = ref.run_id or (client.get_model_version(ref.name, ref.version).run_id or "")
            lineage = _run_lineage(client, run_id) if run_id else {}
    except TrackingServerUnavailable as exc:
        raise ModelFileError(str(exc)) from None
    except MlflowException as exc:
        if _missing(exc):
            raise ModelFileError(f"{ref.canonical} no longer exists on the MLflow tracking server.") from None
        raise
    _refuse_links(root, target)
    if not (root / "MLmodel").is_file():
        raise ModelFileError(f"{ref.canonical} is not an MLflow model (it has no MLmodel file).")
    mlmodel = importers.read_mlmodel(root)
    digest = mlflow_store.directory_sha256(root)
    pinned = version.trusted_sha256 or (version.safety or {}).get("source_sha256", "")
    if trusted and pinned and digest != pinned:
        raise ModelFileError(
            f"The model at {ref.canonical} changed on the tracking server since it was reviewed (its files' "
            "SHA-256 differs from the trusted one). Import it again as a new version."
        )
    flavor = ", ".join(f for f in mlmodel["flavors"] if f != "python_function") or "python_function"
    signature = _signature(mlmodel)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    prepared = importers.Prepared(
        directory=root,
        flavor=flavor,
        signature=signature,
        input_example=_input_example(root, mlmodel),
        requirements=mlflow_store.requirements_of(root),
        notes=[] if signature else [importers._no_signature_note()],
        lineage=lineage,
    )
    source = {"source_sha256": digest, "source_bytes": size, "source_uri": ref.canonical}
    reason = importers.mlmodel_needs_pickle(mlmodel)
    if reason:
        prepared.quarantined = True
        prepared.safety = {
            **source,
            "verdict": "needs_pickle",
            "summary": f"Loading this MLflow model would run pickle: {reason}. It stays quarantined until a "
            "project admin (not the importer) trusts these exact files (pinned by their SHA-256).",
        }
    else:
        prepared.safety = {**source, "verdict": "safe_format",
                           "summary": f"MLflow model ({flavor}) from the tracking server that loads without pickle."}
    return prepared


def _download(ref: SourceRef, target: Path) -> str:
    import mlflow.artifacts

    mlflow_store.configure()  # models:/ URIs are resolved through the process-wide registry URI
    return mlflow.artifacts.download_artifacts(artifact_uri=ref.canonical, dst_path=str(target),
                                               tracking_uri=settings.MLFLOW_TRACKING_URI)


def _refuse_links(root: Path, target: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if path.is_symlink() or not path.resolve().is_relative_to(target.resolve()):
            raise ModelFileError("The downloaded model contains links or paths outside its directory; refused.")


def _signature(mlmodel: dict) -> dict | None:
    raw = mlmodel.get("signature") or {}
    if not raw.get("inputs"):
        return None
    try:
        return {p: json.loads(raw[p]) if raw.get(p) else [] for p in ("inputs", "outputs")}
    except (TypeError, ValueError):
        raise ModelFileError("The MLmodel file's signature is not valid JSON.") from None


def _input_example(root: Path, mlmodel: dict) -> dict | None:
    info = mlmodel.get("saved_input_example_info") or {}
    name = info.get("artifact_path")
    if not name or info.get("pandas_orient", "split") != "split" or "/" in name:
        return None
    try:
        data = json.loads((root / name).read_text()[:1_000_000])
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("columns"), list) and isinstance(data.get("data"), list):
        return {"columns": [str(c) for c in data["columns"]], "data": data["data"][:100]}
    return None


def _run_lineage(client, run_id: str) -> dict:
    """What the run recorded: params, latest metrics, tags without secrets, and the git commit and repository."""
    run = client.get_run(run_id)
    params = {str(k)[:250]: str(v)[:500] for k, v in list(run.data.params.items())[:500]}
    metrics = {str(k)[:250]: float(v) for k, v in list(run.data.metrics.items())[:500]
               if isinstance(v, int | float) and math.isfinite(v)}
    tags = {}
    for key, value in run.data.tags.items():
        if _SECRET_TAG.search(key):
            continue
        if key.startswith("mlflow.") and not key.startswith("mlflow.source.") and key not in _KEPT_MLFLOW_TAGS:
            continue  # MLflow's bookkeeping (model history JSON, parent ids): noise on a model card
        tags[key[:250]] = _strip_credentials(str(value))[:500]
        if len(tags) >= 200:
            break
    lineage = {"params": params, "metrics": metrics, "mlflow_tags": tags}
    commit = run.data.tags.get("mlflow.source.git.commit", "")
    if _COMMIT.match(commit):
        lineage["code_commit"] = commit.lower()
    repository = _strip_credentials(run.data.tags.get("mlflow.source.git.repoURL", ""))
    if re.match(r"^(https?|ssh|git)://|^git@", repository):
        lineage["code_repository"] = repository[:500]
    return lineage


def _strip_credentials(value: str) -> str:
    """https://user:token@host/repo → https://host/repo (repository URLs logged by MLflow may carry tokens)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@\s]+@", r"\1", value, flags=re.IGNORECASE)


# --- Browsing the server ----------------------------------------------------------------------------------------


def list_server_models(search: str = "", page_token: str | None = None, *, project=None) -> tuple[list[dict], str]:
    """Registered models on the tracking server (not the portal's own) with their newest versions.

    Each version says whether it is already imported in `project` (by its canonical URI). Returns the page
    and the token of the next one ("" at the end).
    """
    from mlflow.exceptions import MlflowException

    search = re.sub(r"[^A-Za-z0-9 _.-]", "", str(search or ""))[:100].strip()
    filter_string = f"name ILIKE '%{search}%'" if search else ""
    try:
        with _server() as client:
            page = client.search_registered_models(filter_string=filter_string, max_results=PAGE_SIZE,
                                                   page_token=page_token or None, order_by=["name ASC"])
            models = []
            for rm in page:
                if rm.name.startswith(_PORTAL_PREFIX):
                    continue
                versions = client.search_model_versions(f"name = '{_quote(rm.name)}'", max_results=VERSIONS_SHOWN,
                                                        order_by=["version_number DESC"])
                models.append(_model_row(rm, versions))
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "INVALID_PARAMETER_VALUE":
            raise ValidationError({"page_token": ["This page link has expired; start from the first page."]}) \
                from None
        raise
    _mark_imported(models, project)
    return models, page.token or ""


def _quote(name: str) -> str:
    return name.replace("'", "\\'")


def _model_row(rm, versions) -> dict:
    from datetime import UTC, datetime

    aliases_of: dict[str, list[str]] = {}
    for alias, number in (rm.aliases or {}).items():
        aliases_of.setdefault(str(number), []).append(alias)
    rows = []
    for mv in versions:
        rows.append({
            "version": int(mv.version),
            "uri": f"models:/{rm.name}/{mv.version}",
            "stage": mv.current_stage if mv.current_stage not in (None, "None") else "",
            "aliases": sorted(set(mv.aliases or []) | set(aliases_of.get(str(mv.version), []))),
            "run_id": mv.run_id or "",
            "created_at": datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC)
            if mv.creation_timestamp else None,
            "description": mv.description or "",
            "status": mv.status or "",
            "imported": None,
        })
    return {"name": rm.name, "description": rm.description or "", "versions": rows}


def _mark_imported(models: list[dict], project) -> None:
    if project is None:
        return
    uris = [v["uri"] for m in models for v in m["versions"]]
    imported = {
        v.source_uri: v
        for v in ModelVersion.objects.filter(model__project=project, source_uri__in=uris)
        .exclude(status=ModelVersion.Status.FAILED).select_related("model").order_by("number")
    }
    for model in models:
        for row in model["versions"]:
            version = imported.get(row["uri"])
            row["imported"] = {"model": version.model.slug, "number": version.number,
                               "id": str(version.uuid), "status": version.status} if version else None


# --- Following a server model ---------------------------------------------------------------------------------


def set_follow(model: RegisteredModel, *, actor, mlflow_name: str) -> RegisteredModel:
    """Follow (or stop following, with "") a registered model on the server; its new versions get imported."""
    from mlflow.exceptions import MlflowException

    require(actor, Action.IMPORT_MODEL, model)
    mlflow_name = str(mlflow_name or "").strip()
    if mlflow_name:
        if not re.fullmatch(_NAME, mlflow_name) or mlflow_name.startswith(_PORTAL_PREFIX):
            raise ValidationError({"mlflow_name": ["Name a registered model of the MLflow server, e.g. churn-model."]})
        with _server() as client:
            try:
                client.get_registered_model(mlflow_name)
            except MlflowException as exc:
                if _missing(exc):
                    raise ValidationError({"mlflow_name": [
                        f"The MLflow tracking server has no registered model called “{mlflow_name}”."]}) from None
                raise
    previous = model.follow_mlflow_name
    if previous == mlflow_name:
        return model
    with transaction.atomic():
        model.follow_mlflow_name = mlflow_name
        model.save(update_fields=["follow_mlflow_name", "updated_at"])
        audit.record("model.follow_mlflow", actor=actor, obj=model,
                     details={"from": previous, "to": mlflow_name})
    return model


def sync_followed_models() -> int:
    """Import the server's new versions of every followed model; returns how many imports were queued."""
    queued = 0
    for model in RegisteredModel.objects.exclude(follow_mlflow_name="").select_related("project", "created_by"):
        try:
            queued += sync_model(model)
        except TrackingServerUnavailable as exc:
            logger.warning("MLflow sync stopped: %s", exc)
            break
        except Exception:
            logger.exception("MLflow sync of %s (follows %s) failed", model, model.follow_mlflow_name)
    return queued


def sync_model(model: RegisteredModel) -> int:
    actor = model.created_by
    name = model.follow_mlflow_name
    if actor is None or not actor.is_active or not can(actor, Action.IMPORT_MODEL, model):
        logger.info("MLflow sync skips %s: its creator can no longer import models in %s", model, model.project)
        return 0
    with _server() as client:
        server_versions = sorted(int(mv.version) for mv in client.search_model_versions(f"name = '{_quote(name)}'"))
    if not server_versions:
        return 0
    prefix = f"models:/{name}/"
    with transaction.atomic():
        RegisteredModel.objects.select_for_update().filter(pk=model.pk).first()  # one sync of a model at a time
        imported = [
            int(uri[len(prefix):])
            for uri in ModelVersion.objects.filter(model__project=model.project, source_uri__startswith=prefix)
            .values_list("source_uri", flat=True)
            if uri[len(prefix):].isdigit()
        ]
        # Following starts from the newest version; older ones can be imported by hand from the browse page.
        wanted = [n for n in server_versions if n > max(imported)] if imported else server_versions[-1:]
        for number in wanted:
            _create_version(model, actor=actor, canonical=f"{prefix}{number}",
                            description=f"Imported by the MLflow sync (follows {name}).")
    if wanted:
        logger.info("MLflow sync queued %d import(s) of %s into %s", len(wanted), name, model)
    return len(wanted)
