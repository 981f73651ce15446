"""Hostile or broken model files: each gets a clear error (or quarantine), the job ends cleanly, nothing leaks."""

from __future__ import annotations

import functools
import io
import stat
import zipfile

import pytest

from apps.registry.formats import ModelFileError, safe_extract
from apps.registry.models import RegisteredModel
from tests.registry import conftest
from tests.registry.conftest import FEATURES, mlflow_zip_bytes, skops_bytes, training_frame

pytestmark = pytest.mark.django_db

# Every file here is imported as a model of its own, "Hostile".
import_file = functools.partial(conftest.import_file, name="Hostile")
imported = functools.partial(conftest.imported, name="Hostile")




def zip_with(entries: list[tuple[str, bytes, int | None]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            archive.writestr(info, data)
    return buffer.getvalue()


MLMODEL = b"flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("model/MLmodel", MLMODEL, None), ("model/../../evil.txt", b"x", None)], "leaves its folder"),
        ([("model/MLmodel", MLMODEL, None), ("/etc/evil.txt", b"x", None)], "absolute path"),
        ([("model/MLmodel", MLMODEL, None), ("model/link", b"/etc/passwd", stat.S_IFLNK | 0o777)], "symbolic link"),
    ],
)
def test_hostile_zip_entries_are_refused_and_nothing_is_written_outside(
    people, api_as, tmp_path, entries, message, django_capture_on_commit_callbacks
):
    version = imported(api_as(people["scientist"]), "model.zip", zip_with(entries),
                       django_capture_on_commit_callbacks)
    assert version.status == "failed" and message in version.error
    assert not version.mlflow_model_uri
    assert not (tmp_path / "evil.txt").exists()


def test_zip_bomb_is_refused_before_it_expands(tmp_path):
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model/MLmodel", MLMODEL)
        archive.writestr("model/zeros.bin", b"\0" * (50 * 1024 * 1024))
    path = tmp_path / "bomb.zip"
    path.write_bytes(bomb.getvalue())
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(ModelFileError, match="zip bomb"):
        safe_extract(path, target)
    assert not (target / "model" / "zeros.bin").exists()


def test_mlmodel_with_python_object_tags_is_refused(people, api_as, django_capture_on_commit_callbacks):
    evil = b"flavors: !!python/object/apply:os.system ['touch /tmp/portal-yaml-canary']\n"
    version = imported(api_as(people["scientist"]), "model.zip", zip_with([("model/MLmodel", evil, None)]),
                       django_capture_on_commit_callbacks)
    assert version.status == "failed" and "not plain YAML" in version.error


def test_onnx_with_external_data_is_refused(people, api_as, tmp_path, django_capture_on_commit_callbacks):
    from onnx import TensorProto, helper

    weights = helper.make_tensor("W", TensorProto.FLOAT, [3, 1], [0.1, 0.2, 0.3])
    weights.data_location = TensorProto.EXTERNAL
    del weights.float_data[:]
    weights.external_data.add(key="location", value="../../../etc/passwd")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])], [weights],
    )
    content = helper.make_model(graph).SerializeToString()
    version = imported(api_as(people["scientist"]), "ext.onnx", content, django_capture_on_commit_callbacks,
                       format="onnx")
    assert version.status == "failed" and "External data is refused" in version.error


def test_skops_with_unknown_types_is_quarantined_and_never_loaded(people, api_as, monkeypatch,
                                                                  django_capture_on_commit_callbacks):
    import skops.io as sio

    from apps.registry import importers

    loads = []
    monkeypatch.setattr(sio, "load", lambda *a, **k: loads.append(a) or None)
    # A type the allow-list does not know stands in for a hostile one: skops refuses to load it untrusted.
    monkeypatch.setattr(importers, "SKOPS_ALLOWED_TYPES", frozenset())
    version = imported(api_as(people["scientist"]), "tree.skops", skops_bytes(), django_capture_on_commit_callbacks)
    assert version.status == "quarantined" and not loads
    assert version.safety["untrusted_types"] == ["sklearn.tree._tree.Tree"]
    assert "sklearn.tree._tree.Tree" in version.safety["summary"]


def test_a_model_whose_predict_raises_fails_the_import_cleanly(people, api_as, django_capture_on_commit_callbacks):
    from sklearn.linear_model import LogisticRegression

    frame = training_frame()
    model = LogisticRegression().fit(frame[FEATURES].to_numpy(), frame["churned"])  # fitted on 3 columns
    example = '[{"age": 30, "income": 41000.5}]'  # two columns: predict raises inside scikit-learn
    version = imported(api_as(people["scientist"]), "lr.skops", skops_bytes(model),
                       django_capture_on_commit_callbacks, input_example=example)
    assert version.status == "failed"
    assert "could not predict" in version.error
    assert RegisteredModel.objects.filter(slug="hostile").exists() and not version.mlflow_model_uri


def test_a_failed_import_leaves_earlier_versions_alone(people, api_as, tmp_path, django_capture_on_commit_callbacks):
    api = api_as(people["scientist"])
    good = imported(api, "model.zip", mlflow_zip_bytes(tmp_path), django_capture_on_commit_callbacks)
    bad = imported(api, "model.zip", zip_with([("model/MLmodel", b"flavors: [unclosed", None)]),
                   django_capture_on_commit_callbacks)
    good.refresh_from_db()
    assert (good.status, bad.status) == ("ready", "failed")
    assert bad.number == 2 and good.mlflow_model_uri


def test_native_formats_without_their_library_say_so(people, api_as, monkeypatch, django_capture_on_commit_callbacks):
    import builtins

    real_import = builtins.__import__

    def no_xgboost(name, *args, **kwargs):
        if name == "xgboost" or name.startswith("xgboost."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_xgboost)
    version = imported(api_as(people["scientist"]), "booster.json", b'{"learner": {}, "version": [2, 1, 0]}',
                       django_capture_on_commit_callbacks, format="xgboost")
    assert version.status == "failed" and "XGBoost is not installed" in version.error
