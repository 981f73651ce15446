"""Pickle and joblib uploads: the opcode scan, the bubblewrap sandbox, the equivalence check and admin trust.

Real files and the real sandbox: a malicious pickle's canary must never appear outside the sandbox.
"""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import shutil
import uuid
from pathlib import Path

import joblib
import numpy as np
import pytest

from apps.audit.models import AuditEvent
from apps.registry import safety
from apps.registry.models import ModelVersion
from apps.registry.safety import convert, sandbox
from apps.registry.safety.scan import ScanResult, scan_bytes, scan_file
from tests.registry.conftest import FEATURES, fitted_tree, imported, run_import, training_frame

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (make test-tools)"),
]

EXAMPLE = json.dumps(training_frame(rows=20)[FEATURES].to_dict(orient="records"))


class Shell:
    """Unpickling this runs a shell command (how a real malicious model file works)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class Call:
    """Unpickling this calls any callable with the given arguments."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.fixture
def canary(tmp_path) -> Path:
    """A path outside any sandbox work directory that a malicious pickle tries to create."""
    target = tmp_path / f"canary-{uuid.uuid4().hex}"
    yield target
    assert not target.exists(), "the malicious pickle ran outside the sandbox"




def joblib_bytes(model, tmp_path: Path, compress) -> bytes:
    path = tmp_path / f"model-{uuid.uuid4().hex}.joblib"
    joblib.dump(model, path, compress=compress)
    return path.read_bytes()


def no_scan(monkeypatch):
    """Pretend the scanner was fooled, to show the sandbox alone contains the file."""
    monkeypatch.setattr(convert, "scan_file", lambda path, fmt: ScanResult())


# --- The opcode scanner -------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_scikit_learn_pickle_scans_clean(protocol):
    result = scan_bytes(pickle.dumps(fitted_tree(), protocol=protocol))
    assert result.verdict == "clean", result.flagged
    assert "sklearn.tree._classes.DecisionTreeClassifier" in result.globals
    assert result.counts.get("REDUCE") and result.counts.get("BUILD")


def _short(text: str) -> bytes:
    return b"\x8c" + bytes([len(text)]) + text.encode()


MEMO_TRICK = (  # strings memoized, popped, then fetched back for STACK_GLOBAL
    b"\x80\x04" + _short("os") + b"\x94" + _short("system") + b"\x94" + b"00" + b"h\x00h\x01\x93"
    + _short("true") + b"\x85R."
)
BINPUT_TRICK = (
    b"\x80\x04" + _short("posix") + b"q\x07" + _short("system") + b"r\x00\x01\x00\x00" + b"00"
    + b"h\x07j\x00\x01\x00\x00\x93" + _short("true") + b"\x85R."
)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (pickle.dumps(Shell("true")), "posix.system"),
        (MEMO_TRICK, "os.system"),
        (BINPUT_TRICK, "posix.system"),
        (pickle.dumps(Call(__import__("importlib").import_module, "os")), "importlib.import_module"),
        (pickle.dumps(Call(getattr, Call(__import__("importlib").import_module, "pip"), "main")), "builtins.getattr"),
        (b"cbuiltins\neval\n(S'1'\ntR.", "builtins.eval"),
        (b"(cbuiltins\nexec\nS'1'\no.", "builtins.exec"),
        (b"\x80\x02csklearn.datasets._base\nos.system\nq\x00.", "sklearn.datasets._base.os.system"),
    ],
    ids=["reduce", "stack-global-memoize", "stack-global-binput", "importlib", "getattr-chain", "global", "inst",
         "dotted-re-export"],
)
def test_dangerous_globals_are_flagged_however_they_are_spelled(data, expected):
    with open(os.devnull, "w") as devnull:
        pickletools.dis(data, out=devnull)  # each is a well-formed pickle, not noise the scan gives up on
    result = scan_bytes(data)
    assert result.verdict == "flagged"
    assert expected in [f["global"] for f in result.flagged]


def test_an_unresolvable_stack_global_is_flagged():
    data = b"\x80\x04K\x01" + _short("system") + b"\x93" + _short("true") + b"\x85R."  # module: an integer
    result = scan_bytes(data)
    assert result.dangerous and result.flagged[0]["global"].startswith("<")


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("bz2", 3), ("lzma", 3), ("xz", 3)])
def test_joblib_files_are_decompressed_and_read_up_to_the_raw_array_bytes(tmp_path, compress):
    benign = tmp_path / "benign.joblib"
    joblib.dump(fitted_tree(), benign, compress=compress)
    result = scan_file(benign, "joblib")
    assert result.verdict == "incomplete" and not result.flagged
    assert "sklearn.tree._classes.DecisionTreeClassifier" in result.globals
    malicious = tmp_path / "malicious.joblib"
    joblib.dump({"model": Shell("true"), "tree": fitted_tree()}, malicious, compress=compress)
    assert "posix.system" in [f["global"] for f in scan_file(malicious, "joblib").flagged]


# --- Imports through the API ----------------------------------------------------------------------------------


def test_a_malicious_pickle_is_quarantined_unopened_naming_the_global(
        people, api_as, canary, django_capture_on_commit_callbacks):
    version = imported(api_as(people["scientist"]), "model.pkl", pickle.dumps(Shell(f"touch {canary}")),
                       django_capture_on_commit_callbacks, format="pickle", input_example=EXAMPLE)
    assert version.status == "quarantined" and not version.mlflow_model_uri
    assert version.safety["verdict"] == "flagged"
    assert "posix.system" in version.safety["summary"] and "not opened" in version.safety["summary"]
    assert "conversion" not in version.safety, "flagged files never reach the sandbox"


def test_a_compressed_malicious_joblib_is_flagged(people, api_as, canary, tmp_path,
                                                  django_capture_on_commit_callbacks):
    content = joblib_bytes(Call(__import__("importlib").import_module, "os"), tmp_path, ("gzip", 3))
    version = imported(api_as(people["scientist"]), "model.joblib", content, django_capture_on_commit_callbacks)
    assert version.status == "quarantined" and "importlib.import_module" in version.safety["summary"]


def test_when_the_scanner_is_fooled_the_sandbox_still_contains_the_file(
        people, api_as, canary, settings, monkeypatch, django_capture_on_commit_callbacks):
    no_scan(monkeypatch)
    inside_project = Path(settings.BASE_DIR) / f"canary-{uuid.uuid4().hex}"
    command = f"touch {canary} {inside_project}; echo x > {canary}"
    try:
        version = imported(api_as(people["scientist"]), "model.pkl", pickle.dumps(Shell(command)),
                           django_capture_on_commit_callbacks, format="pickle", input_example=EXAMPLE)
        assert not inside_project.exists()
    finally:
        inside_project.unlink(missing_ok=True)
    assert version.status == "quarantined" and version.safety["verdict"] == "conversion_failed"
    assert "no predict method" in version.safety["summary"]


@pytest.mark.parametrize(
    ("filename", "make"),
    [
        ("tree.pkl", lambda tmp: pickle.dumps(fitted_tree())),
        ("tree.joblib", lambda tmp: joblib_bytes(fitted_tree(), tmp, 0)),
        ("tree.joblib", lambda tmp: joblib_bytes(fitted_tree(), tmp, 3)),
    ],
    ids=["pickle", "joblib", "joblib-zlib"],
)
def test_a_benign_model_is_converted_to_skops_with_the_same_predictions(
        people, api_as, tmp_path, filename, make, django_capture_on_commit_callbacks):
    version = imported(api_as(people["scientist"]), filename, make(tmp_path), django_capture_on_commit_callbacks,
                       input_example=EXAMPLE)
    assert version.status == "ready", (version.error, version.safety)
    assert version.mlflow_model_uri.startswith("models:/") and len(version.artifact_sha256) == 64
    assert version.flavor == "sklearn (skops, converted from pickle)"
    assert version.safety["verdict"] == "converted"
    assert version.safety["equivalence"] == {"rows": 20, "matching": True}
    assert version.safety["conversion"]["ok"] and version.is_servable
    assert [c["name"] for c in version.signature["inputs"]] == FEATURES
    import mlflow.pyfunc

    from apps.registry import mlflow_store

    mlflow_store.configure()
    loaded = mlflow.pyfunc.load_model(version.mlflow_model_uri)  # skops underneath: loading runs no pickle
    frame = training_frame(rows=20)[FEATURES]
    assert np.array_equal(np.asarray(loaded.predict(frame)), fitted_tree().predict(frame))


def test_without_input_rows_a_converted_model_stays_quarantined(people, api_as, django_capture_on_commit_callbacks):
    version = imported(api_as(people["scientist"]), "tree.pkl", pickle.dumps(fitted_tree()),
                       django_capture_on_commit_callbacks)
    assert version.status == "quarantined" and version.safety["verdict"] == "converted_unchecked"
    assert "input example" in version.safety["summary"] and not version.is_servable


def test_a_model_whose_predict_fails_in_the_sandbox_is_quarantined_with_the_error(
        people, api_as, django_capture_on_commit_callbacks):
    from sklearn.tree import DecisionTreeClassifier

    wide = DecisionTreeClassifier().fit(np.arange(50).reshape(10, 5), [0, 1] * 5)  # 5 features, the rows have 3
    version = imported(api_as(people["scientist"]), "wide.pkl", pickle.dumps(wide),
                       django_capture_on_commit_callbacks, input_example=EXAMPLE)
    assert version.status == "quarantined" and version.safety["verdict"] == "conversion_failed"
    assert "predicting on the sample" in version.safety["summary"] and "features" in version.safety["summary"]


def test_a_memory_bomb_is_stopped_by_the_memory_limit(people, api_as, monkeypatch,
                                                     django_capture_on_commit_callbacks):
    monkeypatch.setattr(sandbox, "MEMORY_BYTES", 1024**3)
    bomb = pickle.dumps(Call(bytearray, 8 * 1024**3))  # bytearray is allowed: its size is what the sandbox limits
    version = imported(api_as(people["scientist"]), "bomb.pkl", bomb, django_capture_on_commit_callbacks,
                       format="pickle", input_example=EXAMPLE)
    assert version.status == "quarantined" and version.safety["verdict"] == "conversion_failed"
    assert "MemoryError" in version.safety["summary"]


@pytest.mark.parametrize(
    ("code", "limit"),
    [("while True: pass", "CPU_SECONDS"), ("import time; time.sleep(120)", "WALL_SECONDS")],
    ids=["cpu", "wall-clock"],
)
def test_a_file_that_never_finishes_is_killed(tmp_path, monkeypatch, code, limit):
    no_scan(monkeypatch)
    monkeypatch.setattr(sandbox, "CPU_SECONDS", 2)
    monkeypatch.setattr(sandbox, "WALL_SECONDS", 3 if limit == "WALL_SECONDS" else 30)
    model = tmp_path / "loop.pkl"
    model.write_bytes(pickle.dumps(Call(exec, code)))
    (tmp_path / "work").mkdir()
    prepared = safety.examine_pickle(model, "pickle", work=tmp_path / "work", sample=training_frame()[FEATURES],
                                     progress=lambda pct, message: None)
    assert prepared.quarantined and prepared.directory is None
    assert prepared.safety["verdict"] == "conversion_failed"
    assert "sandbox stopped it" in prepared.safety["summary"]
    assert prepared.safety["conversion"]["seconds"] < 15


def test_without_bubblewrap_pickles_are_never_opened(people, api_as, canary, monkeypatch,
                                                     django_capture_on_commit_callbacks):
    no_scan(monkeypatch)
    real_which = shutil.which
    monkeypatch.setattr(sandbox.shutil, "which", lambda name, *a, **k: None if name == "bwrap" else real_which(name))
    api = api_as(people["scientist"])
    for content in (pickle.dumps(Shell(f"touch {canary}")), pickle.dumps(fitted_tree())):
        version = imported(api, "model.pkl", content, django_capture_on_commit_callbacks, input_example=EXAMPLE)
        assert version.status == "quarantined" and version.safety["verdict"] == "no_sandbox"
        assert "cannot open pickles safely" in version.safety["summary"] and "bubblewrap" in version.safety["summary"]


# --- Trust --------------------------------------------------------------------------------------------------------


def trust(api, version: ModelVersion):
    return api.post(f"/api/v1/model-versions/{version.uuid}/trust/", {"comment": "reviewed"}, format="json")


def test_another_admin_trusts_a_pickle_which_is_then_stored_as_is(people, api_as,
                                                                   django_capture_on_commit_callbacks):
    version = imported(api_as(people["scientist"]), "tree.pkl", pickle.dumps(fitted_tree()),
                       django_capture_on_commit_callbacks)
    assert version.status == "quarantined"
    assert trust(api_as(people["viewer"]), version).status_code == 403
    assert trust(api_as(people["scientist"]), version).status_code == 403
    with django_capture_on_commit_callbacks(execute=False):
        response = trust(api_as(people["admin"]), version)
    assert response.status_code == 202, response.content
    version = run_import(ModelVersion.objects.get(pk=version.pk))
    assert version.mlflow_model_uri and version.trusted_sha256 == version.sha256 and version.is_servable
    assert version.status == "quarantined" and version.flavor == "sklearn (pickle, trusted)"
    assert version.safety["verdict"] == "trusted"
    assert AuditEvent.objects.filter(action="model.trust").exists()


def test_an_admin_cannot_trust_their_own_upload(people, api_as, django_capture_on_commit_callbacks):
    api = api_as(people["admin"])
    version = imported(api, "tree.pkl", pickle.dumps(fitted_tree()), django_capture_on_commit_callbacks)
    response = trust(api, version)
    assert response.status_code == 400 and "another project admin" in json.dumps(response.json())


def test_trust_does_not_let_a_shell_command_run_in_the_worker(people, api_as, canary,
                                                             django_capture_on_commit_callbacks):
    version = imported(api_as(people["scientist"]), "evil.pkl", pickle.dumps(Shell(f"touch {canary}")),
                       django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        assert trust(api_as(people["admin"]), version).status_code == 202
    version = run_import(ModelVersion.objects.get(pk=version.pk))
    assert version.status == "failed" and "posix.system" in version.error and not version.mlflow_model_uri
