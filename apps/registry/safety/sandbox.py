"""Run the pickle-opening child under bubblewrap: read-only system, no network, empty environment, limits."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CHILD = Path(__file__).with_name("child.py")
# Limits for one conversion; module constants so tests (and operators, via a settings patch) can tighten them.
MEMORY_BYTES = 3 * 1024**3
CPU_SECONDS = 300
WALL_SECONDS = 600
FILE_BYTES = 4 * 1024**3
OPEN_FILES = 256
OUTPUT_CHARS = 4000

# Paths readable by the worker that a malicious pickle could copy into the converted model: hidden from it.
HIDDEN_PATHS = ["/root", "/home", "/run", "/var/lib", "/var/log", "/etc/ssl/private", "/srv", "/mnt", "/media"]
# Inside the sandbox's own empty /tmp (a fresh tmpfs), so nothing else can be there.
_INPUT = "/tmp/portal-input.pickle"  # noqa: S108
_SCRIPT = "/tmp/portal-child.py"  # noqa: S108


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create its namespaces here."""


@dataclass
class ChildOutcome:
    ok: bool
    error: str = ""
    stage: str = ""
    killed: str = ""
    model_type: str = ""
    rows: int | None = None
    seconds: float = 0.0
    output: str = ""
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "error": self.error, "stage": self.stage, "killed": self.killed,
                "model_type": self.model_type, "rows": self.rows, "seconds": round(self.seconds, 2)}


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def run_child(model: Path, fmt: str, workdir: Path) -> ChildOutcome:
    """Open `model` in the sandbox; the child writes model.skops, predictions.npy and result.json in `workdir`."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed")
    command = [*_bwrap_args(bwrap, model, workdir), *_limits(), sys.executable, "-I",
               _SCRIPT, _INPUT, fmt, str(workdir)]
    started = time.monotonic()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True, env={"PATH": "/usr/bin:/bin"})
    killed = ""
    try:
        output, _ = process.communicate(timeout=WALL_SECONDS)
    except subprocess.TimeoutExpired:
        killed = f"it ran longer than {WALL_SECONDS} s"
        _kill_group(process)
        output, _ = process.communicate()
    seconds = time.monotonic() - started
    text = output.decode("utf-8", "replace")[-OUTPUT_CHARS:]
    if process.returncode and "bwrap:" in text and not (workdir / "result.json").exists():
        raise SandboxUnavailable(text.strip().splitlines()[-1][:300])
    return _outcome(workdir, process.returncode, killed, text, seconds)


def _bwrap_args(bwrap: str, model: Path, workdir: Path) -> list[str]:
    args = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]  # noqa: S108
    for hidden in _hidden_paths():
        args += ["--tmpfs", hidden]
    for needed in {sys.prefix, sys.base_prefix}:  # the interpreter and its packages, if under a hidden path
        args += ["--ro-bind", needed, needed]
    args += [
        "--ro-bind", str(model.resolve()), _INPUT,
        "--ro-bind", str(CHILD), _SCRIPT,
        "--bind", str(workdir), str(workdir),
        "--chdir", str(workdir),
        "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL",
        "--die-with-parent", "--new-session", "--clearenv",
        "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", str(workdir),
        # One thread each: thread pools reserve address space the memory limit would count.
        "--setenv", "OPENBLAS_NUM_THREADS", "1", "--setenv", "OMP_NUM_THREADS", "1",
        "--setenv", "MKL_NUM_THREADS", "1",
        "--",
    ]
    return args


def _hidden_paths() -> list[str]:
    from django.conf import settings

    paths = [*HIDDEN_PATHS, str(settings.BASE_DIR), str(getattr(settings, "VAR_DIR", "")),
             str(getattr(settings, "MEDIA_ROOT", ""))]
    keep = {sys.prefix, sys.base_prefix}
    hidden = []
    for path in dict.fromkeys(p for p in paths if p and p != "/"):
        # A path that holds the interpreter is hidden too; its interpreter part is bound back afterwards.
        if os.path.isdir(path) and not any(k == path or path.startswith(k + "/") for k in keep):
            hidden.append(path)
    return sorted(hidden, key=len)


def _limits() -> list[str]:
    prlimit = shutil.which("prlimit") or "/usr/bin/prlimit"
    return [prlimit, f"--as={MEMORY_BYTES}", f"--cpu={CPU_SECONDS}", f"--fsize={FILE_BYTES}",
            f"--nofile={OPEN_FILES}", "--core=0"]


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _outcome(workdir: Path, returncode: int, killed: str, output: str, seconds: float) -> ChildOutcome:
    result_path = workdir / "result.json"
    if killed or not result_path.exists():
        if not killed:
            killed = _signal_reason(returncode, output)
        return ChildOutcome(ok=False, error=f"The sandbox stopped it: {killed}.", killed=killed, seconds=seconds,
                            output=output)
    try:
        # Written by code from the upload: read as bounded, typed data only.
        raw = json.loads(result_path.read_text()[:20_000])
        if not isinstance(raw, dict):
            raise ValueError("not an object")
    except ValueError:
        return ChildOutcome(ok=False, error="The sandboxed process wrote an unreadable result.", seconds=seconds,
                            output=output)
    rows = raw.get("rows")
    return ChildOutcome(
        ok=raw.get("ok") is True,
        error=str(raw.get("error") or "")[:1000],
        stage=str(raw.get("stage") or "")[:20],
        model_type=str(raw.get("type") or "")[:200],
        rows=rows if isinstance(rows, int) else None,
        seconds=seconds,
        output=output,
    )


def _signal_reason(returncode: int, output: str) -> str:
    if returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGKILL) \
            and "MemoryError" not in output:
        return f"it used more than {CPU_SECONDS} s of CPU or was killed (exit {returncode})"
    if "MemoryError" in output or "Cannot allocate memory" in output:
        return f"it needed more than {MEMORY_BYTES // 1024**2} MiB of memory"
    last = output.strip().splitlines()[-1][:300] if output.strip() else "no output"
    return f"it exited with status {returncode} without a result ({last})"
