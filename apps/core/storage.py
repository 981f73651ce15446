"""Stored files (datasets and their derived copies), streamed through Django's default storage and
encrypted at rest with AES-256-GCM when PORTAL_ENCRYPTION_KEY is set.

Encrypted format (all integers big-endian):
    header  = b"PTLENC1\\n" | version (1 byte) | chunk size (4) | key id (8) | salt (16)
    chunk i = AES-GCM(file key, nonce=i as 12 bytes, aad=header | i (8) | final flag (1)) of `chunk size`
              plaintext bytes (the last, final chunk may be shorter, and is empty only for an empty file)
The key id is the first 8 bytes of SHA-256 of the master key; the file key is HKDF-SHA256(master key, salt),
so nonces never repeat across files. The AAD makes altered, reordered, swapped and truncated chunks fail.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import struct
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files import File
from django.core.files.storage import default_storage

MAGIC = b"PTLENC1\n"
VERSION = 1
CHUNK_SIZE = 64 * 1024  # plaintext bytes per sealed chunk; read back from each file's header
_HEADER = struct.Struct(">8sBI8s16s")
_TAG = 16
_MAX_CHUNK_SIZE = 64 * 1024 * 1024  # refuse absurd headers rather than allocate for them
_COPY_SIZE = 1024 * 1024
# Temporary names written during re-encryption; "~" never appears in a name save_stream makes.
TEMP_MARKER = "~rotating-"


@dataclass(frozen=True)
class StoredFile:
    name: str  # storage name (Django default_storage)
    size: int  # plaintext bytes
    sha256: str  # of the plaintext
    encrypted: bool


class FileTooLarge(ValueError):
    """The upload passed the size limit; the message is for the user."""

    def __init__(self, limit: int):
        self.limit = limit
        super().__init__(f"The file is larger than the {format_size(limit)} limit. "
                         "Upload a smaller file, or ask the operators to raise PORTAL_MAX_UPLOAD_BYTES.")


class DecryptionError(Exception):
    """An encrypted file cannot be read: it was altered or truncated after it was written."""


class UnknownKeyError(DecryptionError):
    """An encrypted file's key is neither PORTAL_ENCRYPTION_KEY nor one of PORTAL_ENCRYPTION_OLD_KEYS."""


class KeyState(StrEnum):
    PLAINTEXT = "plaintext"
    CURRENT = "current"  # encrypted under PORTAL_ENCRYPTION_KEY
    OLD = "old"  # encrypted under one of PORTAL_ENCRYPTION_OLD_KEYS
    UNKNOWN = "unknown"  # encrypted under a key we do not have


def format_size(n: int) -> str:
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= factor:
            return f"{n / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


# --- Keys -----------------------------------------------------------------------------------------

def key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:8]


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode())


def _current_key() -> bytes | None:
    text = getattr(settings, "PORTAL_ENCRYPTION_KEY", "")
    return _decode(text) if text else None


def _known_keys() -> dict[bytes, bytes]:
    """key id -> key, for every key we can decrypt with (old ones first so the current one wins)."""
    keys = [_decode(text) for text in getattr(settings, "PORTAL_ENCRYPTION_OLD_KEYS", [])]
    current = _current_key()
    if current is not None:
        keys.append(current)
    return {key_id(key): key for key in keys}


def _file_key(master: bytes, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"portal file key v1").derive(master)


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


# --- Writing --------------------------------------------------------------------------------------

class _Sealer:
    """Turns a plaintext stream into the encrypted format, one chunk at a time."""

    def __init__(self, master: bytes, chunk_size: int = CHUNK_SIZE):
        salt = os.urandom(16)
        self.header = _HEADER.pack(MAGIC, VERSION, chunk_size, key_id(master), salt)
        self._aead = AESGCM(_file_key(master, salt))
        self._chunk_size = chunk_size
        self._index = 0
        self._pending = bytearray()

    def update(self, data: bytes) -> bytes:
        self._pending += data
        sealed, start = [], 0
        # Hold back the last (possibly full) chunk: only finish() knows it is the final one.
        while len(self._pending) - start > self._chunk_size:
            sealed.append(self._seal(self._pending[start:start + self._chunk_size], final=False))
            start += self._chunk_size
        del self._pending[:start]
        return b"".join(sealed)

    def finish(self) -> bytes:
        return self._seal(self._pending, final=True)

    def _seal(self, plain: bytes | bytearray, *, final: bool) -> bytes:
        sealed = self._aead.encrypt(_nonce(self._index), bytes(plain), _aad(self.header, self._index, final))
        self._index += 1
        return sealed


class _IterReader(io.RawIOBase):
    """A read-only, non-seekable file over an iterator of bytes, so storages can pull from a generator."""

    def __init__(self, pieces: Iterator[bytes]):
        self._pieces = pieces
        self._pending = memoryview(b"")  # slices of a memoryview do not copy

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._pending = memoryview(piece)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _write(name: str, chunks: Iterable[bytes], *, key: bytes | None, max_bytes: int | None) -> StoredFile:
    digest = hashlib.sha256()
    size = 0

    def pieces() -> Iterator[bytes]:
        nonlocal size
        sealer = _Sealer(key) if key is not None else None
        if sealer is not None:
            yield sealer.header
        for chunk in chunks:
            if not chunk:
                continue
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise FileTooLarge(max_bytes)
            digest.update(chunk)
            yield sealer.update(chunk) if sealer is not None else bytes(chunk)
        if sealer is not None:
            yield sealer.finish()

    try:
        saved = default_storage.save(name, File(_IterReader(pieces()), name=name))
    except BaseException:
        # The storage leaves what it wrote so far; a uuid name cannot be someone else's file.
        if default_storage.exists(name):
            default_storage.delete(name)
        raise
    return StoredFile(name=saved, size=size, sha256=digest.hexdigest(), encrypted=key is not None)


def _safe_filename(filename: str) -> str:
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("._") or "file"
    stem, ext = os.path.splitext(base)
    ext = ext[:16]
    return stem[:100 - len(ext)] + ext


def _check_prefix(prefix: str) -> str:
    parts = prefix.strip("/").split("/")
    if not prefix or prefix.startswith("/") or any(
        part in ("", ".", "..") or "\\" in part or "\x00" in part for part in parts
    ):
        raise ValueError(f"Invalid storage prefix {prefix!r}: use relative folder names such as 'datasets/<uuid>'.")
    return "/".join(parts)


def save_stream(prefix: str, chunks: Iterable[bytes], *, filename: str, max_bytes: int | None = None) -> StoredFile:
    """Store `chunks` as `prefix/<uuid>-<filename>`, encrypted when a key is configured.

    `max_bytes=None` means no limit (pass settings.PORTAL_MAX_UPLOAD_BYTES for uploads). Over the limit,
    the partial file is removed and FileTooLarge raised.
    """
    name = f"{_check_prefix(prefix)}/{uuid.uuid4().hex}-{_safe_filename(filename)}"
    return _write(name, chunks, key=_current_key(), max_bytes=max_bytes)


# --- Reading --------------------------------------------------------------------------------------

class _DecryptingReader(io.RawIOBase):
    """Random access to an encrypted file's plaintext, decrypting only the chunks that are read."""

    mode = "rb"

    def __init__(self, handle: BinaryIO, name: str):
        self.name = name
        self._handle = handle
        self.header = _read_exact(handle, _HEADER.size)
        if len(self.header) < _HEADER.size:
            raise DecryptionError(f"Stored file {name} is truncated (its encryption header is incomplete).")
        magic, version, self.chunk_size, self.key_id, salt = _HEADER.unpack(self.header)
        if magic != MAGIC or version != VERSION or not 0 < self.chunk_size <= _MAX_CHUNK_SIZE:
            raise DecryptionError(f"Stored file {name} has an unsupported or damaged encryption header "
                                  f"(format version {version}).")
        master = _known_keys().get(self.key_id)
        if master is None:
            raise UnknownKeyError(
                f"Stored file {name} is encrypted with a key this portal does not have (key id "
                f"{self.key_id.hex()}). If the key was rotated, list the previous key in "
                "PORTAL_ENCRYPTION_OLD_KEYS.")
        self._aead = AESGCM(_file_key(master, salt))
        body = handle.seek(0, io.SEEK_END) - _HEADER.size
        self._sealed_size = self.chunk_size + _TAG
        self._chunks = max(1, -(-body // self._sealed_size))
        if body - (self._chunks - 1) * self._sealed_size < _TAG:
            raise self._tampered(self._chunks - 1)
        self._size = body - self._chunks * _TAG
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None
        self._chunk(self._chunks - 1)  # authenticates the final chunk now: a truncated file fails at open

    @property
    def size(self) -> int:
        return self._size

    def _tampered(self, index: int) -> DecryptionError:
        return DecryptionError(
            f"Stored file {self.name} failed its integrity check (chunk {index}): it was altered or truncated "
            "after it was written. Restore it from a backup or upload it again.")

    def _chunk(self, index: int) -> bytes:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        self._handle.seek(_HEADER.size + index * self._sealed_size)
        sealed = _read_exact(self._handle, self._sealed_size)
        final = index == self._chunks - 1
        try:
            plain = self._aead.decrypt(_nonce(index), sealed, _aad(self.header, index, final))
        except InvalidTag:
            raise self._tampered(index) from None
        self._cached = (index, plain)
        return plain

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            index, offset = divmod(self._pos, self.chunk_size)
            piece = self._chunk(index)[offset:offset + len(view) - done]
            view[done:done + len(piece)] = piece
            done += len(piece)
            self._pos += len(piece)
        return done

    def close(self) -> None:
        if not self.closed:
            self._handle.close()
        super().close()


def _read_exact(handle: BinaryIO, n: int) -> bytes:
    parts, remaining = [], n
    while remaining:
        part = handle.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _open_raw(name: str) -> BinaryIO:
    handle = default_storage.open(name, "rb")
    # FileSystemStorage wraps a real file; hand that out so libraries see an ordinary io object.
    inner = getattr(handle, "file", None)
    return inner if isinstance(inner, io.IOBase) else handle


def open_stream(name: str) -> BinaryIO:
    """A seekable binary file of the plaintext; encrypted files (known by their header) are decrypted
    chunk by chunk as they are read. Raises DecryptionError if the file was altered or its key is unknown.
    """
    handle = _open_raw(name)
    try:
        if _read_exact(handle, len(MAGIC)) != MAGIC:
            handle.seek(0)
            return handle
        handle.seek(0)
        raw = _DecryptingReader(handle, name)
        return io.BufferedReader(raw, buffer_size=raw.chunk_size)
    except BaseException:
        handle.close()
        raise


def delete(name: str) -> None:
    if name:
        default_storage.delete(name)


def _fs_path(name: str) -> Path | None:
    try:
        return Path(default_storage.path(name))
    except NotImplementedError:  # a remote storage (S3) has no local paths
        return None


@contextmanager
def local_path(name: str) -> Iterator[Path]:
    """A filesystem path to the plaintext, for libraries that want one. Unencrypted local files are used
    in place; otherwise the plaintext goes to a private temporary directory that is removed on exit.
    """
    path = _fs_path(name)
    if path is not None and not is_encrypted(name):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="portal-plain-") as tmp:  # mode 0700
        target = Path(tmp) / (PurePosixPath(name).name or "file")
        with os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out, \
                open_stream(name) as source:
            shutil.copyfileobj(source, out, _COPY_SIZE)
        yield target


def is_encrypted(name: str) -> bool:
    with _open_raw(name) as handle:
        return _read_exact(handle, len(MAGIC)) == MAGIC


def key_state(name: str) -> KeyState:
    with _open_raw(name) as handle:
        header = _read_exact(handle, _HEADER.size)
    if header[:len(MAGIC)] != MAGIC:
        return KeyState.PLAINTEXT
    file_key_id = header[13:21]  # after magic, version and chunk size
    current = _current_key()
    if current is not None and file_key_id == key_id(current):
        return KeyState.CURRENT
    return KeyState.OLD if file_key_id in _known_keys() else KeyState.UNKNOWN


def reencrypt(name: str, *, encrypt_plaintext: bool = False) -> bool:
    """Rewrite `name` under the current key if it is under an old one (or, with `encrypt_plaintext`, not
    encrypted at all). True if the file changed. The new file is written beside the old one, checked to
    hold the same plaintext, then moved over it, so readers see either the old or the new file.
    """
    key = _current_key()
    if key is None:
        raise ImproperlyConfigured("PORTAL_ENCRYPTION_KEY is not set, so there is no key to re-encrypt into.")
    state = key_state(name)
    if state == KeyState.CURRENT or (state == KeyState.PLAINTEXT and not encrypt_plaintext):
        return False
    with open_stream(name) as source:  # raises UnknownKeyError for KeyState.UNKNOWN
        stored = _write(f"{name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}", iter(lambda: source.read(_COPY_SIZE), b""),
                        key=key, max_bytes=None)
    try:
        with open_stream(stored.name) as check:
            digest = hashlib.sha256()
            for block in iter(lambda: check.read(_COPY_SIZE), b""):
                digest.update(block)
        if digest.hexdigest() != stored.sha256:
            raise DecryptionError(f"Re-encrypting {name} did not read back identically; the original is kept.")
        _replace(stored.name, name)
    except BaseException:
        delete(stored.name)
        raise
    return True


def _replace(source: str, target: str) -> None:
    source_path, target_path = _fs_path(source), _fs_path(target)
    if source_path is not None and target_path is not None:
        os.replace(source_path, target_path)
        return
    # Object stores have no rename; overwrite in place (not atomic, but the new file is complete and checked).
    with default_storage.open(source, "rb") as handle:
        default_storage.delete(target)
        default_storage.save(target, handle)
    default_storage.delete(source)
