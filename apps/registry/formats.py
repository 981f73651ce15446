"""What an uploaded model file really is (by its bytes, not its name), and safe unpacking of zip archives."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

HEAD_BYTES = 64
MAX_ARCHIVE_MEMBERS = 10_000
MAX_UNPACKED_BYTES = 8 * 1024**3
MAX_COMPRESSION_RATIO = 200  # a zip bomb expands far more than any model directory


class ModelFileError(ValueError):
    """An uploaded model file the portal refuses; the message says what is wrong and what to do."""


FORMAT_NAMES = {
    "mlflow": "an MLflow model (zip of the model directory)",
    "skops": "a scikit-learn model saved with skops",
    "onnx": "an ONNX model",
    "pickle": "a pickle file",
    "joblib": "a joblib file",
    "xgboost": "an XGBoost model (JSON or UBJSON)",
    "lightgbm": "a LightGBM model (text)",
}

# zlib, gzip, xz, bz2 and lz4 headers: joblib's compressed files (whose content is a pickle).
_COMPRESSED_JOBLIB = (
    b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda", b"\x1f\x8b", b"\xfd7zXZ", b"BZh", b"\x04\x22\x4d\x18",
    b"]\x00\x00",  # the legacy .lzma format, joblib's compress="lzma"
)


def sniff(path: Path, filename: str) -> str:
    """The format the file's content shows: mlflow, skops, onnx, pickle, joblib, xgboost or lightgbm."""
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    if not head:
        raise ModelFileError("The file is empty.")
    suffix = PurePosixPath(filename.lower()).suffix
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        names = _zip_names(path)
        if "schema.json" in names:
            return "skops"
        if any(PurePosixPath(n).name == "MLmodel" for n in names):
            return "mlflow"
        raise ModelFileError(
            "The zip file holds neither an MLflow model (no MLmodel file) nor a skops model. Zip the MLflow model "
            "directory itself (the folder that contains MLmodel) and upload it again."
        )
    if _is_tar(path):
        raise ModelFileError(
            f"“{filename}” is a tar archive. MLflow model directories are accepted as zip files only (tar archives "
            "can carry links and device files): zip the folder that contains MLmodel and upload it again."
        )
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "joblib" if suffix in (".joblib", ".jl") else "pickle"
    if head.startswith(_COMPRESSED_JOBLIB) and suffix in (".joblib", ".jl", ".z", ".gz", ".xz", ".bz2", ".lz4"):
        return "joblib"
    if head.startswith(b"tree\n") or head.startswith(b"tree\r\n"):
        return "lightgbm"
    if suffix in (".json", ".ubj") and head.lstrip()[:1] == b"{":
        return "xgboost"
    if suffix == ".onnx" or head[:1] == b"\x08":  # protobuf field 1 (ir_version), varint
        return "onnx"
    raise ModelFileError(
        f"The portal cannot tell what kind of model “{filename}” is. Upload an MLflow model (zip), a skops file, "
        "an ONNX file, an XGBoost JSON/UBJ or LightGBM text model, or a pickle/joblib file."
    )


def _is_tar(path: Path) -> bool:
    """A tar archive, plain or gzip/bz2/xz-compressed (its first header block names the ustar format)."""
    import bz2
    import gzip
    import lzma

    with path.open("rb") as handle:
        head = handle.read(6)
    opener = {b"\x1f\x8b": gzip.open, b"BZ": bz2.open, b"\xfd7": lzma.open}.get(head[:2], open)
    try:
        with opener(path, "rb") as stream:
            block = stream.read(512)
    except (OSError, EOFError, lzma.LZMAError, ValueError):
        return False
    return block[257:262] == b"ustar"


def check_claim(actual: str, claimed: str | None, filename: str) -> None:
    """A file whose content is not the format the person chose is refused, naming both."""
    if not claimed or claimed == actual or {claimed, actual} <= {"pickle", "joblib"}:
        return
    raise ModelFileError(
        f"“{filename}” was uploaded as {FORMAT_NAMES.get(claimed, claimed)}, but its content is "
        f"{FORMAT_NAMES.get(actual, actual)}. Choose the right format, or upload the right file."
    )


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelFileError(f"The zip file is damaged and cannot be opened ({exc}).") from None


def check_archive(archive: zipfile.ZipFile, root: Path | None = None) -> None:
    """Refuse a zip that could write outside `root` or exhaust memory or disk, from its directory alone."""
    members = archive.infolist()
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise ModelFileError(
            f"The zip file holds {len(members):,} files; at most {MAX_ARCHIVE_MEMBERS:,} are accepted."
        )
    declared = 0
    for member in members:
        name = member.filename
        pure = PurePosixPath(name.replace("\\", "/"))
        if pure.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            raise ModelFileError(f"The zip file contains an absolute path (“{name}”); it is refused.")
        if ".." in pure.parts:
            raise ModelFileError(f"The zip file contains a path that leaves its folder (“{name}”); it is refused.")
        if stat.S_ISLNK(member.external_attr >> 16):
            raise ModelFileError(f"The zip file contains a symbolic link (“{name}”); links are refused.")
        if root is not None and not (root / pure).resolve().is_relative_to(root):
            raise ModelFileError(f"The zip file contains a path that leaves its folder (“{name}”); it is refused.")
        declared += member.file_size
        if member.compress_size and member.file_size / max(member.compress_size, 1) > MAX_COMPRESSION_RATIO:
            raise _bomb()
    if declared > MAX_UNPACKED_BYTES:
        raise _bomb()


def check_zip_file(path: Path) -> None:
    """check_archive for a zip on disk that a library (skops) is about to read itself."""
    try:
        with zipfile.ZipFile(path) as archive:
            check_archive(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"The zip file is damaged and cannot be opened ({exc}).") from None


def safe_extract(path: Path, target: Path) -> None:
    """Unpack a zip into `target`, refusing anything that could write outside it or exhaust the disk."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelFileError(f"The zip file is damaged and cannot be opened ({exc}).") from None
    with archive:
        root = target.resolve()
        check_archive(archive, root)
        written = 0
        for member in archive.infolist():
            destination = root / PurePosixPath(member.filename.replace("\\", "/"))
            try:
                if member.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                # Count what is really written: the sizes in the directory can lie.
                with archive.open(member) as source, destination.open("wb") as out:
                    while chunk := source.read(1 << 20):
                        written += len(chunk)
                        if written > MAX_UNPACKED_BYTES:
                            raise _bomb()
                        out.write(chunk)
            except (FileExistsError, IsADirectoryError, NotADirectoryError):
                raise ModelFileError(
                    f"The zip file's entries clash: “{member.filename}” is both a file and a folder. Zip the model "
                    "directory again with a standard tool."
                ) from None


def _bomb() -> ModelFileError:
    return ModelFileError(
        "The zip file expands to far more than it holds (a zip bomb, or a huge archive). It is refused; "
        "upload the model directory zipped normally."
    )


def model_root(directory: Path) -> Path:
    """The folder holding MLmodel: the archive's root, or its single top-level folder."""
    if (directory / "MLmodel").is_file():
        return directory
    candidates = [p.parent for p in directory.rglob("MLmodel") if p.is_file()]
    if len(candidates) != 1 or len(candidates[0].relative_to(directory).parts) > 1:
        raise ModelFileError(
            "The zip file must hold one MLflow model: MLmodel at its root or in one top-level folder."
        )
    return candidates[0]
