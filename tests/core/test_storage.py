"""Stored files: streaming save/read, encryption at rest (integrity, seeking, key rotation), upload limits."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import stat
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from apps.core import storage
from apps.core.storage import CHUNK_SIZE, MAGIC, KeyState

CS = CHUNK_SIZE
HEADER = 37
SEALED = CS + 16


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def chunked(data: bytes, size: int = 10_000):
    for start in range(0, len(data), size):
        yield data[start:start + size]


def read_all(name: str) -> bytes:
    with storage.open_stream(name) as handle:
        return handle.read()


@pytest.fixture
def media(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.PORTAL_ENCRYPTION_KEY = ""
    settings.PORTAL_ENCRYPTION_OLD_KEYS = []
    return tmp_path / "media"


@pytest.fixture
def key(settings, media) -> str:
    settings.PORTAL_ENCRYPTION_KEY = new_key()
    return settings.PORTAL_ENCRYPTION_KEY


@pytest.fixture(params=[False, True], ids=["plaintext", "encrypted"])
def encrypted(request, settings, media) -> bool:
    if request.param:
        settings.PORTAL_ENCRYPTION_KEY = new_key()
    return request.param


def test_default_storage_follows_media_root_setting(media):
    stored = storage.save_stream("t", [b"x"], filename="a.txt")
    assert Path(default_storage.path(stored.name)).is_relative_to(media)
    assert (media / stored.name).is_file()


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 3 * CS, 3 * CS + 17])
def test_round_trip_keeps_bytes_size_and_sha256(encrypted, size):
    data = os.urandom(size)
    stored = storage.save_stream("datasets/abc", chunked(data, 7_001), filename="rows.csv")

    assert stored.size == size
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.encrypted is encrypted
    assert storage.is_encrypted(stored.name) is encrypted
    assert read_all(stored.name) == data


@pytest.mark.parametrize("size", [0, CS, 2 * CS + 5])
def test_encrypted_file_holds_no_plaintext_and_has_the_documented_layout(key, media, size):
    data = (b"secret,income,ssn\n" * (size // 18 + 1))[:size]
    stored = storage.save_stream("d", chunked(data), filename="x.csv")
    raw = (media / stored.name).read_bytes()

    assert raw.startswith(MAGIC)
    if size:
        assert b"secret" not in raw
    chunks = max(1, -(-size // CS))
    assert len(raw) == HEADER + size + 16 * chunks


def test_two_saves_of_the_same_plaintext_differ_on_disk(key, media):
    first = storage.save_stream("d", [b"same"], filename="a")
    second = storage.save_stream("d", [b"same"], filename="a")
    assert first.name != second.name
    assert (media / first.name).read_bytes() != (media / second.name).read_bytes()


def test_seek_and_read_at_random_offsets_match_the_plaintext(encrypted):
    data = os.urandom(5 * CS + 123)
    stored = storage.save_stream("d", chunked(data, 50_000), filename="x.bin")
    rng = random.Random(7)
    with storage.open_stream(stored.name) as handle:
        assert handle.seekable()
        for _ in range(200):
            offset = rng.choice([rng.randrange(len(data) + 10), rng.randrange(6) * CS - 1, rng.randrange(6) * CS])
            offset = max(offset, 0)
            length = rng.choice([1, 17, CS, 3 * CS + 1, rng.randrange(2 * CS)])
            assert handle.seek(offset) == offset
            piece = handle.read(length)
            assert piece == data[offset:offset + length]
            assert handle.tell() == offset + len(piece)
        assert handle.seek(-10, io.SEEK_END) == len(data) - 10
        assert handle.read() == data[-10:]


def test_libraries_that_seek_can_read_an_encrypted_parquet_file(key):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"n": list(range(100_000)), "s": [f"v{i % 97}" for i in range(100_000)]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    stored = storage.save_stream("d", chunked(buffer.getvalue()), filename="rows.parquet")

    with storage.open_stream(stored.name) as handle:
        assert pq.read_table(handle).equals(table)


def _saved_encrypted(media, size: int) -> tuple[bytes, Path]:
    data = os.urandom(size)
    stored = storage.save_stream("d", chunked(data), filename="x.bin")
    return data, media / stored.name


def test_altered_byte_is_reported_as_tampering(key, media):
    data, path = _saved_encrypted(media, 3 * CS + 10)
    raw = bytearray(path.read_bytes())
    raw[HEADER + SEALED + 100] ^= 0x01  # inside chunk 1
    path.write_bytes(bytes(raw))

    with storage.open_stream(path.relative_to(media).as_posix()) as handle:
        assert handle.read(CS) == data[:CS]  # chunk 0 is intact
        with pytest.raises(storage.DecryptionError, match=r"chunk 1\).*altered or truncated"):
            handle.read(CS)


def test_altered_header_is_reported(key, media):
    _, path = _saved_encrypted(media, 100)
    raw = bytearray(path.read_bytes())
    raw[HEADER - 1] ^= 0x01  # the salt, so a different file key
    path.write_bytes(bytes(raw))
    with pytest.raises(storage.DecryptionError, match="integrity check"):
        storage.open_stream(path.relative_to(media).as_posix())


@pytest.mark.parametrize("cut", [SEALED, 1, SEALED + 1], ids=["whole-last-chunk", "one-byte", "chunk-and-a-byte"])
def test_truncated_file_fails_when_opened(key, media, cut):
    _, path = _saved_encrypted(media, 3 * CS)  # three full chunks: cutting the last leaves a valid-looking file
    raw = path.read_bytes()
    path.write_bytes(raw[:-cut])
    with pytest.raises(storage.DecryptionError, match="altered or truncated"):
        storage.open_stream(path.relative_to(media).as_posix())


def test_swapped_chunks_are_detected(key, media):
    _, path = _saved_encrypted(media, 3 * CS + 10)
    raw = path.read_bytes()
    first, second = raw[HEADER:HEADER + SEALED], raw[HEADER + SEALED:HEADER + 2 * SEALED]
    path.write_bytes(raw[:HEADER] + second + first + raw[HEADER + 2 * SEALED:])
    with storage.open_stream(path.relative_to(media).as_posix()) as handle, \
            pytest.raises(storage.DecryptionError, match="chunk 0"):
        handle.read(10)


def test_chunk_from_another_file_is_detected(key, media):
    _, path_a = _saved_encrypted(media, 2 * CS + 1)
    _, path_b = _saved_encrypted(media, 2 * CS + 1)
    a, b = path_a.read_bytes(), path_b.read_bytes()
    path_a.write_bytes(a[:HEADER] + b[HEADER:HEADER + SEALED] + a[HEADER + SEALED:])
    with storage.open_stream(path_a.relative_to(media).as_posix()) as handle, \
            pytest.raises(storage.DecryptionError):
        handle.read(10)


def test_unknown_key_says_which_setting_to_fix(settings, key):
    stored = storage.save_stream("d", [b"data"], filename="x")
    settings.PORTAL_ENCRYPTION_KEY = new_key()
    with pytest.raises(storage.UnknownKeyError, match="PORTAL_ENCRYPTION_OLD_KEYS"):
        storage.open_stream(stored.name)


def test_over_max_bytes_raises_and_leaves_no_partial_file(encrypted, media):
    with pytest.raises(storage.FileTooLarge, match="limit"):
        storage.save_stream("d", chunked(b"x" * (3 * CS)), filename="big.csv", max_bytes=2 * CS)
    assert [p for p in media.rglob("*") if p.is_file()] == []


def test_exactly_max_bytes_is_accepted(encrypted):
    stored = storage.save_stream("d", chunked(b"x" * 1000), filename="ok.csv", max_bytes=1000)
    assert stored.size == 1000


def test_file_too_large_names_the_limit_in_human_units():
    assert "2 GB limit" in str(storage.FileTooLarge(2 * 1024**3))
    assert "1.5 MB limit" in str(storage.FileTooLarge(1536 * 1024))


@pytest.mark.parametrize("filename", [
    "../../etc/passwd", "..\\..\\windows\\evil.csv", "/abs/path.csv", "..", "", ".hidden", "a b;rm -rf.csv",
    "x" * 300 + ".csv", "données.xlsx", "nul\x00byte.csv",
])
def test_filename_cannot_escape_the_prefix(media, filename):
    stored = storage.save_stream("datasets/abc", [b"1"], filename=filename)
    folder, base = stored.name.rsplit("/", 1)
    assert folder == "datasets/abc"
    assert ".." not in stored.name and "\\" not in stored.name and not base.startswith(".")
    assert len(base) <= 33 + 100
    assert Path(default_storage.path(stored.name)).resolve().is_relative_to(media.resolve())
    if filename.endswith((".csv", ".xlsx")):
        assert base.endswith(filename.rsplit(".", 1)[1])


@pytest.mark.parametrize("prefix", ["", "/abs", "../up", "a/../b", "a//b", "a\\b"])
def test_bad_prefix_is_refused(media, prefix):
    with pytest.raises(ValueError, match="prefix"):
        storage.save_stream(prefix, [b"1"], filename="x")


def test_local_path_of_plaintext_is_the_stored_file(media):
    stored = storage.save_stream("d", [b"a,b\n1,2\n"], filename="x.csv")
    with storage.local_path(stored.name) as path:
        assert path == media / stored.name
    assert (media / stored.name).exists()


def test_local_path_of_encrypted_file_is_a_private_temporary_plaintext(key, media):
    data = os.urandom(2 * CS + 3)
    stored = storage.save_stream("d", chunked(data), filename="book.xlsx")
    with storage.local_path(stored.name) as path:
        assert path.read_bytes() == data
        assert path.suffix == ".xlsx"
        assert not path.is_relative_to(media)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not path.exists() and not path.parent.exists()


def test_local_path_cleans_up_when_the_body_fails(key):
    stored = storage.save_stream("d", [b"1"], filename="x.csv")
    with pytest.raises(RuntimeError), storage.local_path(stored.name) as path:
        raise RuntimeError
    assert not path.parent.exists()


def test_delete_removes_the_file(encrypted, media):
    stored = storage.save_stream("d", [b"1"], filename="x.csv")
    storage.delete(stored.name)
    assert not (media / stored.name).exists()
    storage.delete(stored.name)  # already gone: no error


# --- Key rotation --------------------------------------------------------------------------------

@pytest.fixture
def rotated(settings, media):
    """Three files under an old key, one plaintext; then the key is rotated (the old one kept for reading)."""
    old = new_key()
    settings.PORTAL_ENCRYPTION_KEY = old
    files = {}
    for size in (0, 10, 2 * CS + 1):
        data = os.urandom(size)
        files[storage.save_stream(f"datasets/{size}", chunked(data), filename="f.csv").name] = data
    settings.PORTAL_ENCRYPTION_KEY = ""
    plain = storage.save_stream("datasets/plain", [b"plain"], filename="p.csv").name
    settings.PORTAL_ENCRYPTION_KEY = new_key()
    settings.PORTAL_ENCRYPTION_OLD_KEYS = [old]
    return files, plain


def test_files_under_an_old_key_stay_readable(rotated):
    files, _ = rotated
    for name, data in files.items():
        assert storage.key_state(name) == KeyState.OLD
        assert read_all(name) == data


def test_rotation_reencrypts_old_files_under_the_new_key(settings, media, rotated):
    files, plain = rotated
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    out = io.StringIO()
    call_command("rotate_encryption_key", stdout=out)

    assert "4 file(s) scanned: 3 re-encrypted from an old key" in out.getvalue()
    assert "1 left unencrypted" in out.getvalue()
    settings.PORTAL_ENCRYPTION_OLD_KEYS = []
    for name, data in files.items():
        assert storage.key_state(name) == KeyState.CURRENT
        assert hashlib.sha256(read_all(name)).hexdigest() == hashes[name]
        assert read_all(name) == data
    assert storage.key_state(plain) == KeyState.PLAINTEXT
    assert not [p for p in media.rglob(f"*{storage.TEMP_MARKER}*")]

    again = io.StringIO()
    call_command("rotate_encryption_key", stdout=again)
    assert "0 re-encrypted" in again.getvalue() and "3 already under the current key" in again.getvalue()


def test_dry_run_changes_nothing(media, rotated):
    before = {p: p.read_bytes() for p in media.rglob("*") if p.is_file()}
    out = io.StringIO()
    call_command("rotate_encryption_key", "--dry-run", "--encrypt-plaintext", stdout=out)
    assert "3 would be re-encrypted" in out.getvalue() and "1 would be encrypted" in out.getvalue()
    assert {p: p.read_bytes() for p in media.rglob("*") if p.is_file()} == before


def test_encrypt_plaintext_option_encrypts_unencrypted_files(rotated):
    _, plain = rotated
    call_command("rotate_encryption_key", "--encrypt-plaintext", stdout=io.StringIO())
    assert storage.key_state(plain) == KeyState.CURRENT
    assert read_all(plain) == b"plain"


def test_prefix_limits_the_walk(rotated):
    files, _ = rotated
    out = io.StringIO()
    call_command("rotate_encryption_key", "--prefix", "datasets/10", stdout=out)
    assert "1 file(s) scanned: 1 re-encrypted" in out.getvalue()


def test_rotation_without_a_key_is_refused(settings, media):
    settings.PORTAL_ENCRYPTION_KEY = ""
    with pytest.raises(CommandError, match="PORTAL_ENCRYPTION_KEY is not set"):
        call_command("rotate_encryption_key")


def test_rotation_reports_files_under_an_unknown_key(settings, rotated):
    files, _ = rotated
    settings.PORTAL_ENCRYPTION_OLD_KEYS = []
    err = io.StringIO()
    with pytest.raises(CommandError, match="3 file"):
        call_command("rotate_encryption_key", stdout=io.StringIO(), stderr=err)
    assert "neither the current nor an old key" in err.getvalue()


def test_reencrypt_leaves_current_and_plaintext_files_alone(rotated):
    files, plain = rotated
    name = next(iter(files))
    assert storage.reencrypt(name) is True
    assert storage.reencrypt(name) is False
    assert storage.reencrypt(plain) is False


def test_bad_old_key_stops_start_up():
    env = {**os.environ, "DEBUG": "1", "PORTAL_ENCRYPTION_OLD_KEYS": f"{new_key()},not-a-key"}
    result = subprocess.run([sys.executable, "-c", "import portal.settings"], env=env, capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode != 0
    assert "PORTAL_ENCRYPTION_OLD_KEYS: key number 2" in result.stderr


# --- Memory --------------------------------------------------------------------------------------

def test_saving_and_reading_50_mb_keeps_memory_bounded(key):
    block = os.urandom(1024 * 1024)
    tracemalloc.start()
    try:
        stored = storage.save_stream("d", (block for _ in range(50)), filename="big.bin")
        digest = hashlib.sha256()
        with storage.open_stream(stored.name) as handle:
            for piece in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stored.size == 50 * 1024 * 1024
    assert digest.hexdigest() == stored.sha256
    assert peak < 20 * 1024 * 1024
