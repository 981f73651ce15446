"""Export a deployment as a container build context: the champion's MLflow model, a scoring server, a Dockerfile.

The archive is a `.tar.gz` with everything at its root, so it is itself a Docker build context
(`docker build -t name - < archive.tar.gz`) and, unpacked, runs without Docker (`python serve.py`). Its
server (package_server.py, shipped as serve.py) parses payloads with a copy of protocol.py, so it answers
exactly as the portal's invocations endpoint does.

Quarantined-but-trusted pickles: the trust an admin gave covers serving that exact file inside the portal.
An archive carries the pickle outside the portal's governance, to whoever builds it, and loading it runs
its code. So only someone who could have trusted it (a project admin) may export it; the README and
MANIFEST.json say so in plain words, and serve.py refuses to start if a model file differs from the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from apps.accounts.permissions import Action, can, require
from apps.audit import services as audit
from apps.deployments import services
from apps.deployments.models import Deployment
from apps.registry import mlflow_store
from apps.registry.evidence.predictor import reference_values
from apps.registry.models import ModelVersion

FORMAT = 1
HERE = Path(__file__).resolve().parent
SERVER_SOURCE = HERE / "package_server.py"
PROTOCOL_SOURCE = HERE / "protocol.py"
PREDICTORS_SOURCE = HERE / "predictors.py"
PINNED = ("mlflow", "pandas", "numpy")  # what serve.py and protocol.py themselves need, at the versions tested here
PORT = 8080


class NotPackageable(Exception):
    """The deployment cannot be exported now; the message says why (the API answers 409)."""


@dataclass
class Package:
    file: IO[bytes]  # the archive, positioned at its start; deleted when closed
    filename: str
    size: int
    sha256: str
    manifest: dict


def package_name(deployment: Deployment) -> str:
    version = deployment.champion
    return f"{deployment.slug}-{version.model.slug}-v{version.number}"


def carries_pickle(version: ModelVersion, mlmodel: dict | None = None) -> bool:
    """Would loading this version unpickle something (a quarantined file an admin trusted, or such an MLmodel)?"""
    if version.status == ModelVersion.Status.QUARANTINED:
        return True
    if mlmodel is None:
        return False
    from apps.registry.importers import mlmodel_needs_pickle

    return mlmodel_needs_pickle(mlmodel) is not None


def refusal(deployment: Deployment) -> str | None:
    """Why the deployment's champion cannot be exported now, or None."""
    return services.refusal(deployment.champion, deployment.environment)


def export(deployment: Deployment, *, actor) -> Package:
    """Build the archive of the deployment's champion and audit the export."""
    require(actor, Action.DEPLOY, deployment)
    version = deployment.champion
    reason = refusal(deployment)
    if reason:
        raise NotPackageable(f"The champion cannot be exported: {reason}")
    if carries_pickle(version) and not can(actor, Action.TRUST_MODEL, deployment):
        raise PermissionDenied(f"{version.model.name} v{version.number} is a pickle a project admin trusted for "
                               "serving in the portal; an archive takes that code outside the portal, so only a "
                               "project admin can export it.")
    with tempfile.TemporaryDirectory(prefix="portal-package-") as work:
        # From the run's artifacts, not the models:/ URI: that adds the registry's own `registered_model_meta`
        # file, and the files must be exactly those whose digest was approved.
        location = mlflow_store.artifact_location(version.mlflow_model_uri, version.artifact_sha256)
        model_dir = mlflow_store.download(location, Path(work) / "download")
        if not (model_dir / "MLmodel").is_file():
            raise NotPackageable("The model store did not return an MLflow model directory for the champion.")
        if version.artifact_sha256 and mlflow_store.directory_sha256(model_dir) != version.artifact_sha256:
            raise NotPackageable("The champion's files in the model store no longer match the SHA-256 recorded when "
                                 "it was imported (and approved): the archive was not built. Tell a project admin.")
        package = _build(deployment, version, model_dir, actor=actor)
    with transaction.atomic():
        audit.record("deployment.package_export", actor=actor, obj=deployment, details={
            "deployment": deployment.slug, "champion": f"{version.model.slug} v{version.number}",
            "version": str(version.uuid), "artifact_sha256": version.artifact_sha256, "archive": package.filename,
            "archive_sha256": package.sha256, "bytes": package.size,
            "contains_pickle": package.manifest["model"]["contains_pickle"]})
    return package


# --- What goes in ----------------------------------------------------------------------------------------------


def _mlmodel(model_dir: Path) -> dict:
    import yaml

    return yaml.safe_load((model_dir / "MLmodel").read_text()) or {}


def _python_version(model_dir: Path) -> str:
    """major.minor the model was saved with (python_env.yaml), else this interpreter's."""
    path = model_dir / "python_env.yaml"
    if path.is_file():
        match = re.search(r"^python:\s*['\"]?(\d+)\.(\d+)", path.read_text(), flags=re.MULTILINE)
        if match:
            return f"{match[1]}.{match[2]}"
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def requirements(model_dir: Path) -> list[str]:
    """The model's own requirements, with mlflow, pandas and numpy pinned to the versions installed here."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    pins = [f"{name}=={metadata.version(name)}" for name in PINNED]
    lines = []
    for line in mlflow_store.requirements_of(model_dir):
        try:
            name = canonicalize_name(Requirement(line).name)
        except InvalidRequirement:
            name = ""
        if name not in PINNED and line not in lines:
            lines.append(line)
    return pins + lines


def dockerfile(python: str) -> str:
    return f"""\
# Built by Portal: the model in model/, served by serve.py with MLflow's scoring protocol on port {PORT}.
FROM python:{python}-slim

ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PIP_NO_CACHE_DIR=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    HOME=/tmp

RUN groupadd --system --gid 10001 model \\
 && useradd --system --uid 10001 --gid model --no-create-home --shell /usr/sbin/nologin model

WORKDIR /srv/model
COPY requirements.txt ./
RUN pip install -r requirements.txt

# Owned by root and read-only to the server's user: the model files cannot be changed from inside.
COPY . .
USER model
EXPOSE {PORT}
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s \\
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://localhost:{PORT}/ping', timeout=4)"]
CMD ["python", "serve.py", "--host", "0.0.0.0", "--port", "{PORT}"]
"""


def _example(version: ModelVersion) -> dict:
    """One row for the README's example call: the stored input example, else a placeholder per type."""
    columns = [c for c in (version.signature or {}).get("inputs", []) if c.get("name")]
    example = version.input_example or {}
    names = [c["name"] for c in columns]
    if example.get("columns") and example.get("data") and (not names or list(example["columns"]) == names):
        return {"columns": list(example["columns"]), "data": [example["data"][0]]}
    placeholder = {"long": 0, "integer": 0, "double": 0.5, "float": 0.5, "boolean": True,
                   "datetime": "2024-01-31"}
    return {"columns": names, "data": [[placeholder.get(c.get("type"), "text") for c in columns]]}


def readme(deployment: Deployment, version: ModelVersion, manifest: dict, name: str) -> str:
    inputs = [c for c in (version.signature or {}).get("inputs", []) if c.get("name")]
    outputs = (version.signature or {}).get("outputs") or []
    body = json.dumps({"dataframe_split": _example(version)})
    signature = "\n".join(f"| `{c['name']}` | {c.get('type', 'string')} | "
                          f"{'yes' if c.get('required', True) else 'no'} |" for c in inputs)
    signature = ("| input | type | required |\n|---|---|---|\n" + signature) if inputs else (
        "This model has no named input signature: rows go to the model as they come.")
    if outputs:
        signature += "\n\nOutputs: " + ", ".join(f"`{o.get('name') or 'prediction'}` ({o.get('type', '?')})"
                                                 for o in outputs)
    pickle_warning = ""
    if manifest["model"]["contains_pickle"]:
        pickle_warning = f"""
> **Warning: this archive contains a pickle.** Loading the model runs Python code stored in the model files.
> Inside Portal the file is quarantined; project admin {manifest['model']['trusted_by'] or 'unknown'} trusted
> this exact file (SHA-256 `{version.trusted_sha256}`) for serving there. Whoever builds this image takes on
> that trust: build it only from this archive as exported, and run it isolated (no secrets, no outbound
> network). `serve.py` refuses to start if a model file differs from MANIFEST.json.
"""
    limits = manifest["limits"]
    return f"""# {deployment.name}: {version.model.name} v{version.number}

A container build context exported from Portal on {manifest['exported_at']} by {manifest['exported_by']}:
deployment `{deployment.slug}` ({deployment.environment.name}, project {deployment.project.name}), champion
{version.model.name} v{version.number}.
{pickle_warning}
| | |
|---|---|
| Model version id | `{version.uuid}` |
| Uploaded file SHA-256 | `{version.sha256}` |
| MLflow model SHA-256 (what was approved) | `{version.artifact_sha256}` |
| Flavour | {version.flavor or version.format} |

## What is inside

- `model/`: the MLflow model, exactly as stored in Portal.
- `serve.py`: a small scoring server (Python standard library + MLflow), speaking MLflow's scoring protocol
  like Portal's invocations endpoint; `protocol.py` is Portal's own payload parser and `predictors.py` its way
  of running the model, so both answer the same
  payloads with the same predictions and the same errors.
- `requirements.txt`, `Dockerfile` (python:{manifest['python']}-slim, non-root user, port {PORT}).
- `MANIFEST.json`: where this came from and the SHA-256 of every file. At start-up `serve.py` checks the model,
  itself, `protocol.py` and `predictors.py` against it and refuses to start if any differs (`--skip-verify`
  turns that off).

## Build and run with Docker

```
docker build -t {name} - < {name}.tar.gz        # the archive is the build context
docker run --rm -p {PORT}:{PORT} {name}
```

## Run without Docker (Python {manifest['python']})

```
mkdir {name} && tar -xzf {name}.tar.gz -C {name} && cd {name}
python -m venv .venv && .venv/bin/pip install -r requirements.txt
.venv/bin/python serve.py --port {PORT}
```

Options: `--host` (default 127.0.0.1; 0.0.0.0 in the container), `--port`, `--max-rows` (default
{limits['max_rows']:,}, as the deployment), `--max-body-bytes` (default {limits['max_body_bytes']:,}),
`--timeout` seconds per prediction (default {limits['timeout_seconds']}), `--quiet` (no access log).

## Call it

`POST /invocations` (MLflow's path) or `POST /api/v1/deployments/{deployment.slug}/invocations` (Portal's), with
`dataframe_split`, `dataframe_records`, `instances` or `inputs` JSON, or CSV with a header row:

```
curl -s http://localhost:{PORT}/invocations -H 'Content-Type: application/json' \\
  -d '{body}'
```

The answer is `{{"predictions": [...]}}` with an `X-Request-ID` header. A request that does not match the
signature answers 400 `{{"detail", "errors": {{"<column>": [...]}}}}`; too many rows or too big a body 413; a
model that fails 502; one that takes too long 504. `GET /ping` answers 200 once the model is loaded;
`GET /health` describes what is served.

## Signature

{signature}

## Security

There is **no authentication**: the server is meant to sit behind your organisation's own gateway or
service mesh, which authenticates callers and terminates TLS. Predictions are not logged anywhere but the
access log (stderr); Portal's prediction log, monitoring and rollback do not see this copy.
"""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _build(deployment: Deployment, version: ModelVersion, model_dir: Path, *, actor) -> Package:
    name = package_name(deployment)
    python = _python_version(model_dir)
    contains_pickle = carries_pickle(version, _mlmodel(model_dir))
    model_files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    generated = {
        "serve.py": SERVER_SOURCE.read_bytes(),
        "protocol.py": PROTOCOL_SOURCE.read_bytes(),
        "predictors.py": PREDICTORS_SOURCE.read_bytes(),
        "requirements.txt": ("\n".join(requirements(model_dir)) + "\n").encode(),
        "Dockerfile": dockerfile(python).encode(),
    }
    manifest = {
        "format": FORMAT,
        "exported_at": timezone.now().isoformat(timespec="seconds"),
        "exported_by": actor.get_username(),
        "deployment": {"slug": deployment.slug, "name": deployment.name, "project": deployment.project.slug,
                       "environment": deployment.environment.slug},
        "model": {"id": str(version.uuid), "name": version.model.name, "slug": version.model.slug,
                  "version": version.number, "format": version.format, "flavor": version.flavor,
                  "status": version.status, "sha256": version.sha256, "artifact_sha256": version.artifact_sha256,
                  "contains_pickle": contains_pickle,
                  "trusted_by": version.trusted_by.get_username() if version.trusted_by_id else None,
                  "trusted_sha256": version.trusted_sha256 or None},
        "signature": version.signature,
        # Typical input values (training medians): the forest fast path checks itself on a sample around them.
        "typical": {name: value for name, value in reference_values(version).items()
                    if isinstance(value, int | float) and not isinstance(value, bool)},
        "limits": {"max_rows": deployment.effective_max_rows,
                   "max_body_bytes": settings.PORTAL_SERVING_MAX_BODY_BYTES,
                   "timeout_seconds": settings.PORTAL_SERVING_TIMEOUT_SECONDS},
        "python": python,
        "files": {},
    }
    generated["README.md"] = readme(deployment, version, manifest, name).encode()
    files = {path: _digest(data) for path, data in generated.items()}
    for path in model_files:
        files[f"model/{path.relative_to(model_dir).as_posix()}"] = _file_digest(path)
    manifest["files"] = dict(sorted(files.items()))
    generated["MANIFEST.json"] = (json.dumps(manifest, indent=2) + "\n").encode()

    # Not a context manager: the response streams it and closes (so deletes) it at the end.
    archive = tempfile.TemporaryFile(prefix="portal-package-", suffix=".tar.gz")  # noqa: SIM115
    now = int(time.time())
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for path, data in generated.items():
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), now, 0o644
            tar.addfile(info, io.BytesIO(data))
        tar.add(model_dir, arcname="model", recursive=True, filter=_normalise)
    size = archive.tell()
    archive.seek(0)
    digest = hashlib.sha256()
    while chunk := archive.read(1 << 20):
        digest.update(chunk)
    archive.seek(0)
    return Package(file=archive, filename=f"{name}.tar.gz", size=size, sha256=digest.hexdigest(), manifest=manifest)


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Plain files and folders only, owned by nobody in particular, readable by all (the image runs non-root)."""
    if not (info.isfile() or info.isdir()):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info
