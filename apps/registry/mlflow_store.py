"""The portal's MLflow store: where every version's canonical artifact (an MLflow pyfunc model) lives.

The portal is the store's only client (with a service credential in production). Each import logs the
model directory as the artifacts of a run in the project's experiment and registers it as a version of
`portal.<model slug>`, so scientists' own registered models on a shared server never clash with ours.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

_configure_lock = threading.Lock()

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredArtifact:
    run_id: str
    model_uri: str  # models:/portal.<slug>/<n>
    mlflow_version: str
    artifact_sha256: str


def client():
    from mlflow import MlflowClient

    configure()
    return MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI, registry_uri=settings.MLFLOW_TRACKING_URI)


def configure() -> None:
    """Point MLflow's process-wide URIs at the configured store (pyfunc loading reads them).

    Set every time, not once: anything else in the process (a test, a library) may have moved them since.
    """
    import mlflow

    with _configure_lock:
        mlflow.set_tracking_uri(settings.MLFLOW_TRACKING_URI)
        mlflow.set_registry_uri(settings.MLFLOW_TRACKING_URI)


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


def _experiment_id(project_slug: str) -> str:
    from mlflow.exceptions import MlflowException

    mlflow = client()
    name = f"portal/{project_slug}"
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if _is_local_store(settings.MLFLOW_TRACKING_URI):
        location = (Path(settings.MLFLOW_ARTIFACT_ROOT) / project_slug).as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except MlflowException:  # created by a concurrent import
        return mlflow.get_experiment_by_name(name).experiment_id


def store_directory(
    directory: Path, *, registered_name: str, project_slug: str, tags: dict[str, str]
) -> StoredArtifact:
    """Log an MLflow model directory as a run's `model` artifacts and register it; return where it went."""
    from mlflow.exceptions import MlflowException

    mlflow = client()
    digest = directory_sha256(directory)
    run = mlflow.create_run(_experiment_id(project_slug), run_name=tags.get("portal.version_label"), tags=tags)
    run_id = run.info.run_id
    try:
        mlflow.log_artifacts(run_id, str(directory), artifact_path="model")
        mlflow.set_tag(run_id, "portal.artifact_sha256", digest)
    finally:
        mlflow.set_terminated(run_id)
    try:
        mlflow.create_registered_model(registered_name, tags={"portal": "true"})
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    version = mlflow.create_model_version(
        registered_name, source=f"{run.info.artifact_uri}/model", run_id=run_id, tags={"portal.sha256": digest}
    )
    return StoredArtifact(
        run_id=run_id,
        model_uri=f"models:/{registered_name}/{version.version}",
        mlflow_version=str(version.version),
        artifact_sha256=digest,
    )


def artifact_location(model_uri: str, artifact_sha256: str = "") -> str:
    """Where a registered version's files are (e.g. file:///…/model): `models:/` URIs cost a registry lookup on
    every load (a second on a SQLite store), so the answer is kept in the shared cache, where deploying puts it
    before any serving process asks."""
    if not model_uri.startswith("models:/"):
        return model_uri
    from django.core.cache import cache

    key = f"mlflow-location:{hashlib.sha256(f'{model_uri}|{artifact_sha256}'.encode()).hexdigest()}"
    try:
        location = cache.get(key)
    except Exception as exc:  # the cache (Redis) is down: ask the registry, as on a miss
        logger.warning("model location cache unreadable, asking the registry: %s: %s", type(exc).__name__, exc)
        location = None
    if location is None:
        name, _, number = model_uri[len("models:/"):].rpartition("/")
        location = client().get_model_version_download_uri(name, number)
        with contextlib.suppress(Exception):  # a cache that is down only costs the next process a lookup
            cache.set(key, location, timeout=None)
    return location


def download(model_uri: str, target: Path) -> Path:
    """The model directory of `model_uri`, copied under `target`."""
    import mlflow

    configure()
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(target)))


def directory_sha256(directory: Path) -> str:
    """One digest of a directory's files: their relative paths and contents, in a fixed order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix().encode()
        digest.update(len(relative).to_bytes(4, "big") + relative)
        with path.open("rb") as handle:
            file_digest = hashlib.sha256()
            while chunk := handle.read(1 << 20):
                file_digest.update(chunk)
        digest.update(file_digest.digest())
    return digest.hexdigest()


def requirements_of(directory: Path) -> list[str]:
    path = directory / "requirements.txt"
    if not path.is_file():
        return []
    lines = path.read_text(errors="replace").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith(("#", "-"))][:200]

