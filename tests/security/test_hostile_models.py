"""Hostile model uploads through the API and the wizard, imported by the real job: never a 500, never run.

Each file is refused (400 naming the field, or a failed import saying why) or quarantined with a summary that
names the problem; a canary that the file's code would create must not exist afterwards; nothing reaches the
MLflow store. tests/registry/test_safety.py and test_bad_files.py cover the basic cases; these are the evasions.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import json
import lzma
import os
import pickle
import re
import shutil
import stat
import uuid
import zipfile
from pathlib import Path

import joblib
import pytest
from django.urls import reverse

from apps.core.models import Job
from apps.registry.models import ImportDraft, ModelVersion
from apps.registry.safety import convert, scan
from apps.registry.safety.scan import ScanResult
from tests.registry import conftest as registry_tests
from tests.registry.conftest import (  # noqa: F401 - the registry's MLflow store and media fixtures, used here too
    FEATURES,
    _mlflow_store,
    fitted_tree,
    mlflow_store,
    mlflow_zip_bytes,
    run_import,
    skops_bytes,
    training_frame,
    upload,
)
from tests.security import hostile_models_payloads as hostile

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (make test-tools)"),
]

EXAMPLE = json.dumps(training_frame(rows=20)[FEATURES].to_dict(orient="records"))


@pytest.fixture
def canary(tmp_path) -> Path:
    """Where a hostile file's code tries to write; it must never appear."""
    target = tmp_path / f"canary-{uuid.uuid4().hex}"
    yield target
    assert not target.exists(), "code from the uploaded file ran outside the sandbox"


@pytest.fixture
def store_untouched(settings):
    """The MLflow artifact store gains no file from a refused or quarantined import."""
    root = Path(settings.MLFLOW_ARTIFACT_ROOT)  # set by the registry's autouse mlflow_store fixture

    def files() -> set[Path]:
        return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()

    before = files()
    yield
    assert files() == before, "a hostile file reached the MLflow store"


@pytest.fixture
def scientist(people, api_as):
    return api_as(people["scientist"])


post_import = functools.partial(registry_tests.import_file, name="Hostile")


def imported(api, filename: str, content: bytes, capture, **fields) -> ModelVersion:
    """Upload through the API and run the import job in-process, as the Celery task does."""
    version = registry_tests.imported(api, filename, content, capture, name="Hostile", **fields)
    assert Job.objects.get(pk=version.import_job_id).status in ("succeeded", "failed")  # ended cleanly
    return version


def assert_quarantined_unopened(version: ModelVersion, *names: str) -> None:
    assert version.status == "quarantined" and not version.mlflow_model_uri and not version.is_servable
    assert version.safety["verdict"] == "flagged", version.safety
    assert "conversion" not in version.safety, "a flagged file must never reach the sandbox"
    summary = version.safety["summary"]
    assert "was not opened" in summary and "quarantined" in summary
    for name in names:
        assert name in summary, summary


def trust(api, version: ModelVersion, capture) -> ModelVersion:
    with capture(execute=False):
        response = api.post(f"/api/v1/model-versions/{version.uuid}/trust/", {"comment": "looks fine"},
                            format="json")
    assert response.status_code == 202, response.content
    return run_import(ModelVersion.objects.get(pk=version.pk))


def no_scan(monkeypatch):
    """Pretend the scanner was fooled: only the sandbox stands between the file and the worker."""
    monkeypatch.setattr(convert, "scan_file", lambda path, fmt: ScanResult())


def joblib_bytes(value, tmp_path: Path, compress) -> bytes:
    path = tmp_path / f"model-{uuid.uuid4().hex}.joblib"
    joblib.dump(value, path, compress=compress)
    return path.read_bytes()


# --- Pickle: code execution and scanner evasion ------------------------------------------------------------------


@pytest.mark.parametrize("case", list(hostile.PICKLES))
def test_a_hostile_pickle_is_quarantined_unopened_naming_what_it_imports(
        case, scientist, canary, store_untouched, django_capture_on_commit_callbacks):
    build, named = hostile.PICKLES[case]
    version = imported(scientist, "model.pkl", build(canary), django_capture_on_commit_callbacks,
                       input_example=EXAMPLE)
    assert_quarantined_unopened(version, named)


@pytest.mark.parametrize("case", ["os-system", "stack-global-built-on-stack", "operator-attrgetter", "memo-binget"])
def test_when_the_scanner_is_fooled_the_sandbox_holds_the_file(
        case, scientist, canary, settings, monkeypatch, store_untouched, django_capture_on_commit_callbacks):
    no_scan(monkeypatch)
    in_media = Path(settings.MEDIA_ROOT) / f"canary-{uuid.uuid4().hex}"  # the worker's own files, hidden in the box
    in_media.parent.mkdir(parents=True, exist_ok=True)
    build, _ = hostile.PICKLES[case]
    content = build(f"{canary} {in_media}")  # touch both
    version = imported(scientist, "model.pkl", content, django_capture_on_commit_callbacks, input_example=EXAMPLE)
    assert not in_media.exists()
    assert version.status == "quarantined" and version.safety["verdict"] == "conversion_failed"
    assert "sandboxed conversion failed" in version.safety["summary"]


@pytest.mark.parametrize("case", ["operator-attrgetter", "stack-global-built-on-stack", "importlib"])
def test_an_admin_trusting_a_hostile_pickle_does_not_let_it_run_in_the_worker(
        case, people, api_as, canary, django_capture_on_commit_callbacks):
    build, named = hostile.PICKLES[case]
    version = imported(api_as(people["scientist"]), "model.pkl", build(canary), django_capture_on_commit_callbacks)
    version = trust(api_as(people["admin"]), version, django_capture_on_commit_callbacks)
    assert version.status == "failed" and not version.mlflow_model_uri
    assert "was not opened" in version.error or "refused" in version.error, version.error
    assert named in version.error


# --- joblib: compressed payloads, payloads after the first array, bombs --------------------------------------------


@pytest.mark.parametrize("compress", [3, ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3)],
                         ids=["zlib", "gzip", "bz2", "xz", "lzma"])
def test_a_compressed_hostile_joblib_is_quarantined_unopened(
        compress, scientist, canary, tmp_path, store_untouched, django_capture_on_commit_callbacks):
    content = joblib_bytes(hostile.Call(os.system, hostile.touch(canary)), tmp_path, compress)
    version = imported(scientist, "model.joblib", content, django_capture_on_commit_callbacks, input_example=EXAMPLE)
    assert_quarantined_unopened(version, "posix.system")


def test_a_payload_hidden_after_the_first_array_stays_in_the_sandbox(
        scientist, canary, tmp_path, store_untouched, django_capture_on_commit_callbacks):
    # The scan stops at joblib's raw array bytes, so it cannot see what comes after: the sandbox must hold it.
    content = joblib_bytes({"tree": fitted_tree(), "evil": hostile.Call(os.system, hostile.touch(canary))},
                           tmp_path, 3)
    version = imported(scientist, "model.joblib", content, django_capture_on_commit_callbacks, input_example=EXAMPLE)
    assert version.status == "quarantined" and version.safety["verdict"] == "conversion_failed"
    assert "no predict method" in version.safety["summary"]


def test_trust_does_not_run_a_payload_hidden_after_the_first_array(
        people, api_as, canary, tmp_path, django_capture_on_commit_callbacks):
    content = joblib_bytes([fitted_tree(), hostile.Call(os.system, hostile.touch(canary))], tmp_path, 3)
    version = imported(api_as(people["scientist"]), "model.joblib", content, django_capture_on_commit_callbacks)
    version = trust(api_as(people["admin"]), version, django_capture_on_commit_callbacks)
    assert version.status == "failed" and "posix.system" in version.error and not version.mlflow_model_uri


@pytest.mark.parametrize("opener", [gzip.compress, bz2.compress, lzma.compress], ids=["gzip", "bz2", "xz"])
def test_a_decompression_bomb_is_quarantined_without_being_opened_or_expanded_in_memory(
        opener, scientist, monkeypatch, store_untouched, django_capture_on_commit_callbacks):
    monkeypatch.setattr(scan, "MAX_DECOMPRESSED_BYTES", 8 * 1024**2)  # the same code path as 8 GiB, in 32 MiB
    size = 32 * 1024**2
    bomb = opener(b"\x80\x04\x8e" + size.to_bytes(8, "little") + b"\0" * size + b".")  # BINBYTES8: one huge value
    version = imported(scientist, "model.joblib", bomb, django_capture_on_commit_callbacks, input_example=EXAMPLE)
    assert version.status == "quarantined" and version.safety["verdict"] == "bomb", version.safety
    assert "decompression bomb" in version.safety["summary"] and "conversion" not in version.safety


def test_the_scan_reads_a_compressed_file_as_a_stream(tmp_path, monkeypatch):
    # A bomb must not be expanded in the worker's memory to be scanned: the scan stops at the limit.
    import tracemalloc

    monkeypatch.setattr(scan, "MAX_DECOMPRESSED_BYTES", 256 * 1024)
    path = tmp_path / "bomb.joblib"
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(b"\x80\x04")
        for _ in range(4 * 1024):
            out.write(b"N0" * 512)  # valid opcodes (None, pop): a scan reading everything would hold 4 MiB
    tracemalloc.start()
    result = scan.scan_file(path, "joblib")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.bomb and result.verdict == "bomb" and peak < 200 * 1024, peak


def test_an_lz4_joblib_the_portal_cannot_read_is_quarantined(
        scientist, store_untouched, django_capture_on_commit_callbacks):
    content = b"\x04\x22\x4d\x18" + os.urandom(200)
    version = imported(scientist, "model.joblib", content, django_capture_on_commit_callbacks, input_example=EXAMPLE)
    assert version.status == "quarantined" and not version.is_servable
    assert version.safety["scan"]["verdict"] == "incomplete" and "decompressed" in version.safety["scan"]["problem"]


# --- skops ------------------------------------------------------------------------------------------------------


def _skops_with_system() -> bytes:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    frame = training_frame()
    pipeline = make_pipeline(FunctionTransformer(os.system), fitted_tree())
    pipeline.steps[1][1].fit(frame[FEATURES], frame["churned"])
    return skops_bytes(pipeline)


def test_a_skops_file_with_dangerous_types_is_quarantined_and_trust_does_not_load_them(
        people, api_as, store_untouched, django_capture_on_commit_callbacks):
    version = imported(api_as(people["scientist"]), "model.skops", _skops_with_system(),
                       django_capture_on_commit_callbacks, input_example=EXAMPLE)
    assert version.status == "quarantined" and version.safety["verdict"] == "unknown_types"
    assert "posix.system" in version.safety["untrusted_types"] and "posix.system" in version.safety["summary"]
    version = trust(api_as(people["admin"]), version, django_capture_on_commit_callbacks)
    assert version.status == "failed" and "posix.system" in version.error and not version.mlflow_model_uri


# --- ONNX external data ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "..\\..\\etc\\passwd"])
@pytest.mark.parametrize("where", ["initializer", "constant"])
def test_onnx_external_data_outside_the_file_is_refused(
        location, where, scientist, store_untouched, django_capture_on_commit_callbacks):
    version = imported(scientist, "model.onnx", hostile.onnx_with_external_data(location, where=where),
                       django_capture_on_commit_callbacks, input_example=EXAMPLE)
    assert version.status == "failed" and "External data is refused" in version.error, version.error
    assert "root:" not in version.error


def _mlflow_onnx_zip(tmp_path: Path, location: str) -> bytes:
    mlmodel = (b"flavors:\n  onnx:\n    data: model.onnx\n    onnx_version: 1.17.0\n  python_function:\n"
               b"    data: model.onnx\n    loader_module: mlflow.onnx\n")
    return hostile.zip_with([("model/MLmodel", mlmodel, None),
                             ("model/model.onnx", hostile.onnx_with_external_data(location), None)])


@pytest.mark.parametrize("location", ["../../../../etc/passwd", "/etc/passwd"])
def test_an_mlflow_zip_holding_onnx_with_external_data_is_refused(
        location, scientist, tmp_path, store_untouched, django_capture_on_commit_callbacks):
    version = imported(scientist, "model.zip", _mlflow_onnx_zip(tmp_path, location),
                       django_capture_on_commit_callbacks)
    assert version.status == "failed" and "external" in version.error.lower(), version.error


# --- MLmodel YAML -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system ['touch {canary}']",
    "!!python/name:os.system",
    "!!python/object/new:subprocess.Popen [['touch', '{canary}']]",
    "!!python/module:os",
])
def test_mlmodel_yaml_python_tags_are_refused_and_never_run(
        tag, scientist, canary, store_untouched, django_capture_on_commit_callbacks):
    mlmodel = f"flavors:\n  python_function:\n    loader_module: {tag.format(canary=canary)}\n".encode()
    version = imported(scientist, "model.zip", hostile.zip_with([("model/MLmodel", mlmodel, None)]),
                       django_capture_on_commit_callbacks)
    assert version.status == "failed" and "not plain YAML" in version.error


@pytest.mark.parametrize("key", ["pickled_model", "data"])
@pytest.mark.parametrize("target", ["../../../../etc/passwd", "/etc/passwd"])
def test_mlmodel_paths_leaving_the_model_directory_are_refused(
        key, target, scientist, store_untouched, django_capture_on_commit_callbacks):
    mlmodel = (f"flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n    {key}: {target}\n"
               f"  sklearn:\n    serialization_format: skops\n    {key}: {target}\n").encode()
    version = imported(scientist, "model.zip", hostile.zip_with([("model/MLmodel", mlmodel, None)]),
                       django_capture_on_commit_callbacks)
    assert version.status == "failed" and "outside the model" in version.error, version.error


# --- Archives ----------------------------------------------------------------------------------------------------

MLMODEL = hostile.MLMODEL_SKOPS


@pytest.mark.parametrize(("entries", "message"), [
    ([("model/MLmodel", MLMODEL, None), ("model\\..\\..\\evil.txt", b"x", None)], "leaves its folder"),
    ([("model/MLmodel", MLMODEL, None), ("C:/evil.txt", b"x", None)], "absolute path"),
    ([("model/MLmodel", MLMODEL, None), ("model/sub/../../../evil.txt", b"x", None)], "leaves its folder"),
    ([("model/MLmodel", MLMODEL, None), ("model/dir/link", b"../../../../etc", stat.S_IFLNK | 0o777)],
     "symbolic link"),
    ([("model/MLmodel", MLMODEL, None), ("model/MLmodel/inner", b"x", None)], "clash"),
    ([("model/MLmodel", MLMODEL, None), ("model/a/", b"", None), ("model/a", b"x", None)], "clash"),
], ids=["backslash-dotdot", "drive-letter", "nested-dotdot", "symlink-to-dir", "file-then-folder",
        "folder-then-file"])
def test_hostile_zip_entries_fail_the_import_with_a_message_and_write_nothing_outside(
        entries, message, scientist, tmp_path, store_untouched, django_capture_on_commit_callbacks):
    version = imported(scientist, "model.zip", hostile.zip_with(entries), django_capture_on_commit_callbacks)
    assert version.status == "failed" and message in version.error, version.error
    assert not (tmp_path / "evil.txt").exists() and not list(Path("/tmp").glob("evil.txt"))


def test_a_zip_bomb_uploaded_as_a_model_fails_the_import(scientist, store_untouched,
                                                        django_capture_on_commit_callbacks):
    bomb = hostile.zip_with([("model/MLmodel", MLMODEL, None), ("model/zeros.bin", b"\0" * (20 * 1024**2), None)],
                            compression=zipfile.ZIP_DEFLATED)
    assert len(bomb) < 100_000
    version = imported(scientist, "model.zip", bomb, django_capture_on_commit_callbacks)
    assert version.status == "failed" and "zip bomb" in version.error


def test_a_zip_with_too_many_entries_fails_the_import(scientist, store_untouched,
                                                     django_capture_on_commit_callbacks):
    entries = [("model/MLmodel", MLMODEL, None)] + [(f"model/f{i}", b"", None) for i in range(10_001)]
    version = imported(scientist, "model.zip", hostile.zip_with(entries), django_capture_on_commit_callbacks)
    assert version.status == "failed" and "at most 10,000" in version.error


def test_a_skops_zip_bomb_is_refused_before_its_schema_is_read(scientist, store_untouched,
                                                              django_capture_on_commit_callbacks):
    bomb = hostile.zip_with([("schema.json", b" " * (20 * 1024**2), None)], compression=zipfile.ZIP_DEFLATED)
    version = imported(scientist, "model.skops", bomb, django_capture_on_commit_callbacks)
    assert version.status == "failed" and "zip bomb" in version.error


@pytest.mark.parametrize(("name", "entries", "mode"), [
    ("model.tar", [("model/MLmodel", MLMODEL, "file"), ("../evil.txt", b"x", "file")], "w"),
    ("model.tar.gz", [("model/MLmodel", MLMODEL, "file"), ("/tmp/evil.txt", b"x", "file")], "w:gz"),
    ("model.tgz", [("model/MLmodel", MLMODEL, "file"), ("model/link", None, "sym:/etc/passwd")], "w:gz"),
    ("model.tar.xz", [("model/MLmodel", MLMODEL, "file"), ("model/hard", None, "hard:/etc/passwd")], "w:xz"),
    ("model.joblib", [("model/MLmodel", MLMODEL, "file"), ("../evil.txt", b"x", "file")], "w:gz"),
], ids=["tar-dotdot", "tgz-absolute", "tgz-symlink", "txz-hardlink", "tgz-named-joblib"])
def test_tar_archives_are_refused_at_upload_and_never_unpacked(
        name, entries, mode, scientist, tmp_path, settings, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_import(scientist, name, hostile.tar_with(entries, mode=mode))
    assert response.status_code == 400 and "tar archive" in response.json()["errors"]["file"][0]
    assert not ModelVersion.objects.exists() and not (tmp_path / "evil.txt").exists()
    assert not list((Path(settings.MEDIA_ROOT) / "models/incoming").glob("*")), "a refused file is not kept"


# --- What the bytes are, whatever the name says ----------------------------------------------------------------------


def test_a_pickle_named_onnx_is_handled_as_the_pickle_it_is(scientist, canary, django_capture_on_commit_callbacks):
    content = hostile.PICKLES["os-system"][0](canary)
    version = imported(scientist, "model.onnx", content, django_capture_on_commit_callbacks)
    assert version.format == "pickle"
    assert_quarantined_unopened(version, "posix.system")
    response = post_import(scientist, "model.onnx", content, format="onnx")
    assert response.status_code == 400
    assert "uploaded as an ONNX model, but its content is a pickle file" in response.json()["errors"]["file"][0]


@pytest.mark.parametrize(("name", "content", "fmt", "message"), [
    ("model.pkl", hostile.zip_with([("readme.txt", b"hi", None)]), "", "holds neither an MLflow model"),
    ("model.skops", b"<!doctype html><html><script>alert(1)</script></html>", "", "cannot tell what kind"),
    ("model.pkl", b"<html><body>not a model</body></html>", "pickle", "cannot tell what kind"),
    ("model.joblib", hostile.zip_with([("model/MLmodel", MLMODEL, None)]), "joblib",
     "but its content is an MLflow model"),
    ("model.skops", pickle.dumps(1), "skops", "but its content is a pickle file"),
    ("model.json", b"\x80\x04K\x01.", "xgboost", "but its content is a pickle file"),
    ("model.onnx", b"", "", "file is empty"),
])
def test_a_file_whose_bytes_are_not_what_its_name_or_format_says_is_refused(
        name, content, fmt, message, scientist, settings):
    response = post_import(scientist, name, content, **({"format": fmt} if fmt else {}))
    assert response.status_code == 400, response.content
    assert message in response.json()["errors"]["file"][0]
    assert not ModelVersion.objects.exists()


def test_html_named_onnx_fails_the_import_as_not_onnx(scientist, django_capture_on_commit_callbacks):
    version = imported(scientist, "model.onnx", b"<html><body>hello</body></html>", django_capture_on_commit_callbacks)
    assert version.status == "failed" and "not a valid ONNX model" in version.error


# --- Hostile file names ----------------------------------------------------------------------------------------------

HOSTILE_NAMES = {
    "nul": "model\x00.pkl",
    "dotdot": "../../../../etc/cron.d/model.pkl",
    "long": "m" * 300 + ".pkl",
    "rtl": "model\u202egpj.pkl",
    "dots": "....",
    "windows-reserved": "CON",
    "windows-reserved-ext": "nul.pkl",
    "backslashes": "..\\..\\windows\\model.pkl",
    "html": "<img src=x onerror=alert(1)>.pkl",
}
STORED = re.compile(r"models/incoming/[0-9a-f]{32}-[A-Za-z0-9_.-]{1,100}")


def assert_safely_stored(version_or_draft, settings) -> None:
    name = version_or_draft.file_name
    assert STORED.fullmatch(name), name
    media = Path(settings.MEDIA_ROOT).resolve()
    assert (media / name).resolve().is_relative_to(media) and (media / name).is_file()
    shown = version_or_draft.original_filename
    assert len(shown) <= 255 and "\x00" not in shown and "\u202e" not in shown and "/" not in shown
    assert "\\" not in shown


@pytest.mark.parametrize("case", list(HOSTILE_NAMES))
def test_a_hostile_file_name_is_stored_under_a_generated_name_and_shown_escaped(
        case, people, scientist, client_as, settings, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        response = post_import(scientist, HOSTILE_NAMES[case], skops_bytes())  # the content decides the format
    assert response.status_code in (202, 400), response.content
    if response.status_code == 400:  # a name that is nothing but a path: no file at all
        assert "file" in response.json()["errors"]
        return
    version = run_import(ModelVersion.objects.get(uuid=response.json()["id"]))
    assert_safely_stored(version, settings)
    assert version.status == "ready", version.error
    page = client_as(people["viewer"]).get(reverse("model-version", args=[version.model.slug, version.number]))
    assert page.status_code == 200
    assert b"<img src=x" not in page.content and "\u202e" not in page.content.decode()


def test_the_card_of_a_flagged_pickle_names_the_global(people, scientist, client_as, canary,
                                                       django_capture_on_commit_callbacks):
    version = imported(scientist, "model.pkl", hostile.PICKLES["os-system"][0](canary),
                       django_capture_on_commit_callbacks)
    page = client_as(people["viewer"]).get(reverse("model-version", args=[version.model.slug, version.number]))
    assert page.status_code == 200 and b"posix.system" in page.content


@pytest.mark.parametrize("case", ["nul", "dotdot", "rtl", "html", "long"])
def test_the_wizard_stores_a_hostile_file_name_safely_and_escapes_it(case, people, client_as, canary, settings):
    client = client_as(people["scientist"])
    client.post(reverse("model-import", args=["alpha"]))
    draft = ImportDraft.objects.latest("created_at")
    client.post(reverse("model-import-step", args=[draft.uuid, "source"]))
    response = client.post(reverse("model-import-step", args=[draft.uuid, "file"]),
                           {"file": upload(HOSTILE_NAMES[case], hostile.PICKLES["os-system"][0](canary)),
                            "format": ""})
    assert response.status_code == 302, response.content.decode()[:2000]
    draft.refresh_from_db()
    assert_safely_stored(draft, settings)
    page = client.get(reverse("model-import-step", args=[draft.uuid, "file"]))
    assert page.status_code == 200 and b"<img src=x" not in page.content
    assert "\u202e" not in page.content.decode()


# --- Stored data --------------------------------------------------------------------------------------------------


def test_a_run_of_hostile_versions_leaves_the_good_version_and_its_artifact_alone(
        scientist, canary, tmp_path, django_capture_on_commit_callbacks):
    from apps.registry import mlflow_store as store

    good = imported(scientist, "model.zip", mlflow_zip_bytes(tmp_path), django_capture_on_commit_callbacks)
    assert good.status == "ready"
    before = (good.mlflow_model_uri, good.artifact_sha256, good.sha256)
    files_before = store.directory_sha256(store.download(good.mlflow_model_uri, tmp_path / "before"))
    hostile_files = [
        ("model.pkl", hostile.PICKLES["stack-global-built-on-stack"][0](canary)),
        ("model.zip", hostile.zip_with([("model/MLmodel", MLMODEL, None), ("model/../../x", b"x", None)])),
        ("model.onnx", hostile.onnx_with_external_data("/etc/passwd")),
        ("model.zip", hostile.zip_with([("model/MLmodel", b"flavors: !!python/name:os.system\n", None)])),
    ]
    for number, (name, content) in enumerate(hostile_files, start=2):
        version = imported(scientist, name, content, django_capture_on_commit_callbacks)
        assert version.number == number and version.status in ("failed", "quarantined")
    good.refresh_from_db()
    assert (good.mlflow_model_uri, good.artifact_sha256, good.sha256) == before and good.status == "ready"
    assert store.directory_sha256(store.download(good.mlflow_model_uri, tmp_path / "after")) == files_before
