"""Re-encrypt stored files into PORTAL_ENCRYPTION_KEY after a key rotation (and optionally encrypt plaintext)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand, CommandError

from apps.core import storage
from apps.core.storage import KeyState


def walk(prefix: str = "") -> Iterator[str]:
    """Every file name under `prefix` in default storage, depth first, skipping re-encryption leftovers."""
    try:
        dirs, files = default_storage.listdir(prefix)
    except FileNotFoundError:
        return
    for name in sorted(files):
        if storage.TEMP_MARKER not in name:
            yield f"{prefix}/{name}" if prefix else name
    for name in sorted(dirs):
        yield from walk(f"{prefix}/{name}" if prefix else name)


class Command(BaseCommand):
    help = ("Re-encrypt files stored under a previous key (listed in PORTAL_ENCRYPTION_OLD_KEYS) with "
            "PORTAL_ENCRYPTION_KEY. Files are replaced atomically; their plaintext does not change.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what would change; write nothing.")
        parser.add_argument("--encrypt-plaintext", action="store_true",
                            help="Also encrypt files stored unencrypted (after turning encryption on). Only "
                                 "for folders whose readers go through apps.core.storage, hence --prefix.")
        parser.add_argument("--prefix", default="", help="Only files under this storage folder (e.g. datasets).")

    def handle(self, *args, dry_run: bool = False, encrypt_plaintext: bool = False, prefix: str = "", **options):
        if not settings.PORTAL_ENCRYPTION_KEY:
            raise CommandError("PORTAL_ENCRYPTION_KEY is not set. Set it to the new key, list the previous "
                               "key(s) in PORTAL_ENCRYPTION_OLD_KEYS, and run this command again.")
        counts: Counter[str] = Counter()
        failed: list[str] = []
        for name in walk(prefix.strip("/")):
            counts["scanned"] += 1
            try:
                state = storage.key_state(name)
                if state == KeyState.UNKNOWN:
                    failed.append(f"{name}: encrypted with a key that is neither the current nor an old key")
                    continue
                wanted = state == KeyState.OLD or (state == KeyState.PLAINTEXT and encrypt_plaintext)
                if not wanted:
                    counts[state] += 1
                elif dry_run or storage.reencrypt(name, encrypt_plaintext=encrypt_plaintext):
                    counts["rotated" if state == KeyState.OLD else "encrypted"] += 1
            except (OSError, storage.DecryptionError) as exc:
                failed.append(f"{name}: {exc}")

        would = "would be " if dry_run else ""
        summary = (f"{counts['scanned']} file(s) scanned: {counts['rotated']} {would}re-encrypted from an old key, "
                   f"{counts['encrypted']} {would}encrypted from plaintext, {counts[KeyState.CURRENT]} already "
                   f"under the current key, {counts[KeyState.PLAINTEXT]} left unencrypted"
                   + (" (dry run: nothing written)." if dry_run else "."))
        self.stdout.write(self.style.SUCCESS(summary) if not failed else summary)
        if failed:
            for line in failed:
                self.stderr.write(line)
            raise CommandError(f"{len(failed)} file(s) could not be re-encrypted (listed above); the others are done.")
