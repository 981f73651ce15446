"""Facts about the machine a benchmark ran on, printed with its results (shared by the bench scripts)."""

from __future__ import annotations

import os
import platform
from datetime import datetime
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_facts(**library_versions: str) -> dict:
    """Date, CPU, cores, Python and OS, plus the versions of the libraries the benchmark measures."""
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        **library_versions,
        "os": platform.platform(),
    }
