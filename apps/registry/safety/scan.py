"""Which globals a pickle would import, read from its opcodes without unpickling anything.

The verdict is a signal for people and a gate before the sandbox, not a proof: the file is only ever opened
in the sandbox, whatever the scan says.
"""

from __future__ import annotations

import bz2
import gzip
import importlib
import io
import lzma
import pickletools
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

MAX_DECOMPRESSED_BYTES = 8 * 1024**3  # past this a "compressed joblib" is a decompression bomb
MAX_OPCODES = 10_000_000  # a scan reads at ~1M opcodes/s; past this the sandbox's CPU limit takes over
MAX_TEXT_ARGUMENT = 1 << 20  # longer binary values (array data) are skipped, not held in memory

# Globals that exist only to rebuild data; calling them cannot reach the file system, processes or imports.
ALLOWED_GLOBALS = frozenset(
    {
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",
        "numpy._core.numeric._frombuffer",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random._mt19937.MT19937",
        "numpy.random._pcg64.PCG64",
        "numpy.random._pcg64.PCG64DXSM",
        "numpy.random._philox.Philox",
        "numpy.random._sfc64.SFC64",
        "numpy.random.bit_generator.SeedSequence",
        "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
        "numpy.random.mtrand.RandomState",
        "numpy.random._generator.Generator",
        "collections.OrderedDict",
        "collections.defaultdict",
        "copyreg._reconstructor",
        "builtins.object",
        "builtins.slice",
        "builtins.set",
        "builtins.frozenset",
        "builtins.complex",
        "builtins.bytearray",
        "builtins.bytes",
        "builtins.int",
        "builtins.float",
        "builtins.str",
        "builtins.list",
        "builtins.dict",
        "builtins.tuple",
        "builtins.range",
        "joblib.numpy_pickle.NumpyArrayWrapper",
        # Protocol-2 pickles (joblib's object arrays) write bytes as _codecs.encode(text, "latin1"). A codec
        # name can only resolve to a module of the `encodings` package, and encoding text has no side effect.
        "_codecs.encode",
    }
)
# numpy's dtype classes (numpy.dtypes.Float64DType...) are data descriptions too.
_NUMPY_DTYPE_CLASS = re.compile(r"numpy\.dtypes\.[A-Z][A-Za-z0-9]*DType")
_SCIPY_SPARSE = re.compile(r"scipy\.sparse(\.[a-z_][a-z0-9_]*)?\.(csr|csc|coo|bsr|dia|dok|lil)_(matrix|array)")
_SKLEARN_CLASS = re.compile(r"sklearn(\.[A-Za-z_][A-Za-z0-9_]*)+\._?[A-Z][A-Za-z0-9_]*")

# Known-dangerous prefixes, to name the risk in the summary; anything off the allow-list is flagged anyway.
_DANGEROUS = {
    "os.": "runs commands or touches files",
    "posix.": "runs commands or touches files",
    "nt.": "runs commands or touches files",
    "subprocess.": "runs commands",
    "pty.": "runs commands",
    "shutil.": "touches files",
    "socket.": "opens network connections",
    "urllib.": "opens network connections",
    "http.": "opens network connections",
    "webbrowser.": "opens URLs",
    "importlib.": "imports arbitrary code",
    "runpy.": "runs arbitrary code",
    "pip.": "installs packages",
    "sys.": "reaches the interpreter's internals",
    "ctypes.": "calls native code",
    "pickle.": "unpickles more data",
    "_pickle.": "unpickles more data",
    "marshal.": "loads code objects",
    "types.": "builds code objects",
    "code.": "runs arbitrary code",
    "builtins.eval": "runs arbitrary code",
    "builtins.exec": "runs arbitrary code",
    "builtins.compile": "builds code objects",
    "builtins.getattr": "reaches any attribute (a way around the allow-list)",
    "builtins.setattr": "changes any attribute",
    "builtins.__import__": "imports arbitrary code",
    "builtins.open": "touches files",
    "builtins.breakpoint": "runs a debugger",
    "builtins.globals": "reaches the interpreter's internals",
    "builtins.vars": "reaches the interpreter's internals",
    # Gadgets: with these, harmless-looking classes chain into a call of anything (attrgetter("f.__globals__")).
    "builtins.": "a built-in function that can reach other code",
    "operator.": "reaches any attribute or calls anything",
    "_operator.": "reaches any attribute or calls anything",
    "functools.": "calls anything",
    "_functools.": "calls anything",
    "itertools.": "calls anything",
    "copyreg.": "reaches the unpickler's internals",
    "copy.": "calls anything",
    "inspect.": "reaches the interpreter's internals",
    "gc.": "reaches the interpreter's internals",
    "codecs.": "touches files",
    "io.": "touches files",
    "_io.": "touches files",
    "pathlib.": "touches files",
    "tempfile.": "touches files",
    "glob.": "touches files",
    "zipfile.": "touches files",
    "tarfile.": "touches files",
    "timeit.": "runs arbitrary code",
    "cProfile.": "runs arbitrary code",
    "profile.": "runs arbitrary code",
    "pdb.": "runs arbitrary code",
    "bdb.": "runs arbitrary code",
    "trace.": "runs arbitrary code",
    "doctest.": "runs arbitrary code",
    "pydoc.": "runs arbitrary code",
    "zipimport.": "imports arbitrary code",
    "pkgutil.": "imports arbitrary code",
    "site.": "imports arbitrary code",
    "ensurepip.": "installs packages",
    "setuptools.": "installs packages",
    "distutils.": "installs packages",
    "multiprocessing.": "runs processes",
    "_posixsubprocess.": "runs commands",
    "threading.": "runs code in the background",
    "_thread.": "runs code in the background",
    "signal.": "reaches the interpreter's internals",
    "asyncio.": "runs code and opens connections",
    "logging.config.": "runs code from configuration",
    "ssl.": "opens network connections",
    "ftplib.": "opens network connections",
    "smtplib.": "opens network connections",
    "xmlrpc.": "opens network connections",
    "sqlite3.": "touches files",
    "numpy.testing.": "runs code from a string",
    "numpy.f2py.": "compiles and runs code",
    "numpy.load": "unpickles more data",
    "numpy.lib.npyio.": "unpickles more data",
    "pandas.read_pickle": "unpickles more data",
    "pandas.io.": "touches files",
    "joblib.load": "unpickles more data",
    "joblib.numpy_pickle.load": "unpickles more data",
    "dill.": "unpickles more data",
    "cloudpickle.": "unpickles more data",
    "torch.": "unpickles more data",
}


@dataclass
class ScanResult:
    """What the opcodes say: the globals imported, which are not allowed, and whether the whole file was read."""

    globals: list[str] = field(default_factory=list)
    flagged: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    complete: bool = True
    problem: str = ""
    bomb: bool = False

    @property
    def dangerous(self) -> list[dict]:
        """Flagged globals known to reach commands, files, imports or code, or that the scan could not name."""
        return [f for f in self.flagged if f["risk"] == "dangerous"]

    @property
    def verdict(self) -> str:
        if self.bomb:
            return "bomb"
        if self.flagged:
            return "flagged"
        return "clean" if self.complete else "incomplete"

    def as_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "globals": self.globals[:200],
            "flagged": self.flagged[:50],
            "counts": self.counts,
            "complete": self.complete,
            "problem": self.problem,
            "bomb": self.bomb,
        }


def scan_file(path: Path, fmt: str) -> ScanResult:
    """Scan a pickle, or a joblib file (decompressing zlib/gzip/bz2/xz as a stream first).

    The file is read as a stream with a byte budget: a decompression bomb is recognised when it passes
    MAX_DECOMPRESSED_BYTES, without ever holding more than a chunk of it in the worker's memory.
    """
    try:
        handle = _open_decompressed(path) if fmt == "joblib" else path.open("rb")
    except (OSError, ValueError, EOFError, zlib.error, lzma.LZMAError) as exc:
        return ScanResult(complete=False, problem=f"the file could not be decompressed ({exc})")
    with handle:
        return scan_stream(_Budget(handle, MAX_DECOMPRESSED_BYTES), joblib=fmt == "joblib")


def _open_decompressed(path: Path):
    with path.open("rb") as handle:
        head = handle.read(6)
    if head.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    if head.startswith(b"BZh"):
        return bz2.open(path, "rb")
    if head.startswith(b"\xfd7zXZ") or head.startswith(b"]\x00\x00"):
        return lzma.open(path, "rb")  # xz, or the legacy .lzma format joblib writes for compress="lzma"
    if head.startswith(b"\x04\x22\x4d\x18"):
        raise ValueError("lz4-compressed joblib files are not supported")
    if head[:1] == b"\x78":
        return _ZlibStream(path)
    return path.open("rb")


class _ZlibStream:
    """A raw zlib stream (joblib's default compression) read incrementally, never whole."""

    def __init__(self, path: Path):
        self._handle = path.open("rb")
        self._decompressor = zlib.decompressobj()
        self._buffer = b""

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            tail = self._decompressor.unconsumed_tail
            chunk = tail or self._handle.read(1 << 16)
            if not chunk:
                self._buffer += self._decompressor.flush()
                break
            self._buffer += self._decompressor.decompress(chunk, max(size - len(self._buffer), 1 << 16))
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readline(self, size: int = -1) -> bytes:
        line = b""
        while not line.endswith(b"\n") and (size < 0 or len(line) < size):
            char = self.read(1)
            if not char:
                break
            line += char
        return line

    def close(self) -> None:
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DecompressionBomb(ValueError):
    """The stream holds more than the scan's byte budget."""


class _Budget:
    """Reads from a stream, refusing (before reading) anything that would pass `limit` bytes in all."""

    def __init__(self, stream, limit: int):
        self._stream, self._limit, self.read_bytes = stream, limit, 0

    def _spend(self, size: int) -> None:
        if self.read_bytes + size > self._limit:
            raise DecompressionBomb(f"more than {self._limit:,} bytes")

    def read(self, size: int) -> bytes:
        self._spend(size)
        data = self._stream.read(size)
        self.read_bytes += len(data)
        return data

    def readline(self) -> bytes:
        line = self._stream.readline(MAX_TEXT_ARGUMENT + 1)
        self.read_bytes += len(line)
        self._spend(0)
        return line

    def skip(self, size: int) -> None:
        """Read and forget `size` bytes (a large binary value the scan has no use for), a chunk at a time."""
        while size > 0:
            size -= len(chunk := self.read(min(size, 1 << 20)) or b"")
            if not chunk:
                raise ValueError("the file ends inside a value")


_MARK = object()
_ARRAY_WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"
_STRING_OPS = {
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
}


class _Unknown:
    """A stack value the scan does not model (anything but a string)."""


_UNKNOWN = _Unknown()


def scan_bytes(data: bytes, *, joblib: bool = False) -> ScanResult:
    return scan_stream(_Budget(io.BytesIO(data), MAX_DECOMPRESSED_BYTES), joblib=joblib)


_CODES = {op.code: op for op in pickletools.opcodes}
# Length-prefixed values (width of the length): array data can be gigabytes, so long ones are skipped unread.
_LONG_VALUES = {pickletools.bytes4: 4, pickletools.bytes8: 8, pickletools.bytearray8: 8,
                pickletools.unicodestring4: 4, pickletools.unicodestring8: 8, pickletools.string4: 4}


class _Skipped:
    """A long value the scan read past without keeping it."""


def _genops(stream: _Budget):
    """pickletools.genops for a stream, without materialising long values (pickletools reads them whole)."""
    while True:
        code = stream.read(1)
        if not code:
            raise ValueError("the file ends before its STOP opcode")
        opcode = _CODES.get(code.decode("latin-1"))
        if opcode is None:
            raise ValueError(f"unknown opcode {code!r}")
        arg = None
        if opcode.arg in _LONG_VALUES:
            width = _LONG_VALUES[opcode.arg]
            size = int.from_bytes(stream.read(width), "little", signed=opcode.arg is pickletools.string4)
            if size < 0:
                raise ValueError("a negative length")
            if size > MAX_TEXT_ARGUMENT:
                stream.skip(size)
                arg = _Skipped()
            else:
                arg = stream.read(size)
                if len(arg) < size:
                    raise ValueError("the file ends inside a value")
                if opcode.arg in (pickletools.unicodestring4, pickletools.unicodestring8):
                    arg = arg.decode("utf-8", "surrogatepass")
        elif opcode.arg is not None:
            arg = opcode.arg.reader(stream)
        yield opcode, arg
        if opcode.name == "STOP":
            return


def scan_stream(stream: _Budget, *, joblib: bool = False) -> ScanResult:
    """Walk the opcodes with a model of the stack and memo, so a global cannot hide behind memo lookups."""
    result = ScanResult()
    stack: list = []
    memo: dict = {}
    seen: dict[str, None] = {}
    opcodes = 0
    try:
        for opcode, arg in _genops(stream):
            name = opcode.name
            result.counts[name] = result.counts.get(name, 0) + 1
            opcodes += 1
            if opcodes > MAX_OPCODES:
                result.complete = False
                result.problem = f"the file holds more than {MAX_OPCODES:,} opcodes; only those were read"
                break
            pair = tuple(stack[-2:]) if name == "STACK_GLOBAL" and len(stack) >= 2 else (_UNKNOWN, _UNKNOWN)
            current = stack[-1] if stack else _UNKNOWN
            _pop(stack, opcode)
            top = current if name == "MEMOIZE" else _UNKNOWN
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                seen[f"{module}.{attr}"] = None
            elif name == "STACK_GLOBAL":
                module, attr = pair
                if isinstance(module, str) and isinstance(attr, str):
                    seen[f"{module}.{attr}"] = None
                else:
                    seen["<a STACK_GLOBAL whose name the scan cannot resolve>"] = None
            elif name in ("EXT1", "EXT2", "EXT4"):
                seen[f"<copyreg extension code {arg}>"] = None
            elif name in ("PERSID", "BINPERSID"):
                seen["<persistent id: an object loaded by the unpickler's own code>"] = None
            elif name in _STRING_OPS:
                top = arg.decode("latin-1") if isinstance(arg, bytes) else arg if isinstance(arg, str) else _UNKNOWN
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                top = memo.get(arg, _UNKNOWN)
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1] if stack else _UNKNOWN
            elif name == "MEMOIZE":
                memo[len(memo)] = current
            _push(stack, opcode, top)
            if name == "STOP":
                break
            if joblib and name == "BUILD" and _ARRAY_WRAPPER in seen:
                # Raw array bytes follow; read as opcodes they would invent globals that are not there.
                result.complete = False
                result.problem = (
                    "joblib writes raw NumPy array bytes after the first array, so only the part before it was "
                    "read"
                )
                break
    except DecompressionBomb:
        result.complete, result.bomb = False, True
        result.problem = (f"it decompresses to more than {MAX_DECOMPRESSED_BYTES / 1024**3:g} GiB: a decompression "
                          "bomb, or far larger than any model")
    except (lzma.LZMAError, zlib.error, EOFError, OSError) as exc:
        result.complete = False
        result.problem = f"the file could not be decompressed ({type(exc).__name__}: {str(exc)[:200]})"
    except Exception as exc:  # noqa: BLE001 - the readers raise ValueError, IndexError...: any means "stopped"
        result.complete = False
        result.problem = f"the opcodes stop making sense part-way ({type(exc).__name__}: {str(exc)[:200]})"
    result.globals = list(seen)
    result.flagged = [
        {"global": g, "why": why, "risk": "unknown" if why == _NOT_LISTED else "dangerous"}
        for g in result.globals if (why := flag_reason(g))
    ]
    return result


def _pop(stack: list, opcode) -> None:
    """Pop what the opcode consumes (to and including the MARK for mark-taking opcodes), as pickletools.dis does."""
    before = opcode.stack_before
    count = len(before)
    if pickletools.markobject in before or (opcode.name == "POP" and stack and stack[-1] is _MARK):
        while stack and stack[-1] is not _MARK:
            stack.pop()
        if stack:
            stack.pop()
        count = before.index(pickletools.markobject) if pickletools.markobject in before else 0
    if count:
        del stack[-count:]


def _push(stack: list, opcode, top) -> None:
    after = opcode.stack_after
    if pickletools.markobject in after:
        stack.append(_MARK)
        return
    if after:
        stack.extend([_UNKNOWN] * (len(after) - 1))
        stack.append(top)


_NOT_LISTED = "not on the allow-list (only scikit-learn, NumPy, SciPy sparse and plain data types are)"


def flag_reason(name: str) -> str:
    """Why a global is not allowed ("" when it is)."""
    if is_allowed(name):
        return ""
    for prefix, why in _DANGEROUS.items():
        if name == prefix or name.startswith(prefix):
            return why
    if name.startswith("<"):
        return "hides what it imports"
    return _NOT_LISTED


def dangerous_reason(name: str) -> str:
    """Why a global (or a skops type) is known to reach commands, files, imports or code ("" when not known to)."""
    why = flag_reason(name)
    return "" if why == _NOT_LISTED else why


def is_allowed(name: str) -> bool:
    if name in ALLOWED_GLOBALS or _NUMPY_DTYPE_CLASS.fullmatch(name) or _SCIPY_SPARSE.fullmatch(name):
        return True
    return bool(_SKLEARN_CLASS.fullmatch(name)) and _is_sklearn_class(name)


def _is_sklearn_class(name: str) -> bool:
    """A class defined by scikit-learn (its constructors only store parameters), not a function or re-export.

    Pickle resolves a dotted name attribute by attribute, so `sklearn.x.os` would be the os module: only a
    real class whose own module is scikit-learn's passes. Test helpers are excluded.
    """
    module, _, attr = name.rpartition(".")
    if any(part in ("tests", "_testing", "conftest") for part in module.split(".")):
        return False
    try:
        found = getattr(importlib.import_module(module), attr)
    except Exception:  # noqa: BLE001 - a module that does not import is simply not allowed
        return False
    return isinstance(found, type) and found.__module__ == module and module.startswith("sklearn.")
