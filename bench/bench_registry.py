"""Benchmark model imports and cold loads (issue 4): the import job for a small and a ~50 MB skops model, and
the first load of a version through the portal against `mlflow.pyfunc.load_model` on the same artifact.

Run from the repository root:

    .venv/bin/python bench/bench_registry.py [--repeat 5] [--big-mb 50] [--json]

Everything happens in a temporary directory (SQLite database, media, MLflow store) that is deleted at the end.
The parent sets up Django there, creates a project and a scientist, and imports two skops models through
`services.start_import` + `services.import_version` (what the Celery task runs): a small decision tree and a
random forest grown to about --big-mb MB. Each import is timed end to end (store the upload, sniff, check the
skops types, load, infer the signature, save the MLflow model, log and register it).

Cold loads are measured in fresh subprocesses, alternating, --repeat times each:
- portal: `evidence.load_predictor(version)` (permission-free core of every predict path: checks the version
  is servable, resolves `models:/portal.<slug>/<n>`, loads the pyfunc);
- mlflow: `mlflow.pyfunc.load_model(<same models:/ URI>)`.
Both children import their libraries (Django, MLflow, scikit-learn) before the clock starts, as a running
worker has, and then time one load followed by one prediction. The target: portal <= 1.2 x mlflow (best run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine_facts  # bench/machine.py, beside this script

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.2

_CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
os.environ.update({env!r})
import django
django.setup()
import mlflow.pyfunc, pandas as pd, sklearn.ensemble  # noqa: F401  (imported before the clock, as in a worker)
from apps.registry.models import ModelVersion
from apps.registry import mlflow_store
from apps.registry.evidence.predictor import load_predictor
kind, version_id = sys.argv[1], sys.argv[2]
version = ModelVersion.objects.select_related("model__project").get(uuid=version_id)
row = pd.DataFrame([version.input_example["data"][0]], columns=version.input_example["columns"])
mlflow_store.configure()
start = time.perf_counter()
model = load_predictor(version) if kind == "portal" else mlflow.pyfunc.load_model(version.mlflow_model_uri)
loaded = time.perf_counter() - start
model.predict(row)
print(json.dumps({{"load_s": loaded, "load_and_predict_s": time.perf_counter() - start}}))
"""


def setup_django(var_dir: Path) -> dict:
    env = {"DEBUG": "1", "PORTAL_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "portal.settings"}
    os.environ.update(env)
    sys.path.insert(0, str(REPO_ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return env


def frame(rows: int, seed: int = 7):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    data = pd.DataFrame({f"x{i}": rng.normal(size=rows) for i in range(10)})
    data["y"] = ((data.x0 + data.x1 * data.x2 + rng.normal(0, 0.5, rows)) > 0).astype(int)
    return data


def skops_model(big_mb: float | None) -> tuple[bytes, float]:
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    data = frame(20_000)
    features = data.drop(columns="y")
    if big_mb is None:
        model = DecisionTreeClassifier(max_depth=6, random_state=0).fit(features, data["y"])
        return sio.dumps(model), 0.0
    trees = 8
    while True:  # grow the forest until its skops file reaches the wanted size
        model = RandomForestClassifier(n_estimators=trees, random_state=0, n_jobs=-1).fit(features, data["y"])
        blob = sio.dumps(model)
        if len(blob) >= big_mb * 1e6 or trees > 2000:
            return blob, len(blob) / 1e6
        trees = int(trees * max(1.2, big_mb * 1e6 / len(blob)))


def import_model(name: str, blob: bytes) -> tuple[object, float]:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from apps.accounts.models import Membership, Project, User
    from apps.registry import services

    project, _ = Project.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    user, _ = User.objects.get_or_create(username="bench-scientist")
    Membership.objects.get_or_create(user=user, project=project, defaults={"role": "scientist"})
    example = frame(5).drop(columns="y").to_dict("records")
    started = time.perf_counter()
    version = services.start_import(
        project, actor=user, name=name, uploaded=SimpleUploadedFile(f"{name}.skops", blob), fmt="skops",
        lineage={"input_example": example},
    )
    services.import_version(str(version.import_job_id))
    seconds = time.perf_counter() - started
    version.refresh_from_db()
    if version.status != "ready":
        raise SystemExit(f"bench_registry: the import of {name} failed: {version.error}")
    return version, seconds


def cold_load(kind: str, version_id: str, env: dict) -> dict:
    code = _CHILD.format(root=str(REPO_ROOT), env=env)
    done = subprocess.run([sys.executable, "-c", code, kind, version_id], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=600)
    if done.returncode:
        raise SystemExit(f"bench_registry: the {kind} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--big-mb", type=float, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="portal-bench-registry-"))
    try:
        env = setup_django(tmp)
        import mlflow
        import sklearn

        small_blob, _ = skops_model(None)
        big_blob, big_mb = skops_model(args.big_mb)
        small, small_s = import_model("small-tree", small_blob)
        big, big_s = import_model("big-forest", big_blob)
        loads: dict[str, dict[str, list[float]]] = {}
        for label, version in (("small", small), ("big", big)):
            loads[label] = {"portal": [], "mlflow": []}
            for _ in range(args.repeat):
                for kind in ("mlflow", "portal"):
                    loads[label][kind].append(cold_load(kind, str(version.uuid), env)["load_s"])
        result = {
            "machine": machine_facts(mlflow=mlflow.__version__, sklearn=sklearn.__version__),
            "imports": {
                "small": {"bytes": len(small_blob), "seconds": round(small_s, 2)},
                "big": {"bytes": len(big_blob), "seconds": round(big_s, 2)},
            },
            "cold_load_s": {
                label: {kind: [round(x, 3) for x in runs] for kind, runs in kinds.items()}
                for label, kinds in loads.items()
            },
        }
        for label, kinds in loads.items():
            ratio = min(kinds["portal"]) / min(kinds["mlflow"])
            result["cold_load_s"][label]["ratio_best"] = round(ratio, 3)
        if args.json:
            print(json.dumps(result, indent=2))
            return
        print(json.dumps(result["machine"]))
        print(f"import small skops ({len(small_blob) / 1e6:.2f} MB): {small_s:.2f} s")
        print(f"import big skops ({big_mb:.1f} MB): {big_s:.2f} s")
        for label, kinds in loads.items():
            ratio = result["cold_load_s"][label]["ratio_best"]
            verdict = "met" if ratio <= TARGET else "MISSED"
            print(f"cold load {label}: mlflow best {min(kinds['mlflow']):.3f} s {kinds['mlflow']}; portal best "
                  f"{min(kinds['portal']):.3f} s {kinds['portal']}; ratio {ratio:.2f}x "
                  f"(target <= {TARGET}x: {verdict})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
