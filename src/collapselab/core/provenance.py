"""Where a run's numbers came from: recorded in every run folder's config.json when it starts.

:func:`provenance` gives the exact command line, the CPU model, the torch thread counts, the
CUDA device (when one is visible) and the git commit of the source checkout collapselab was
imported from (absent for an installed wheel). The versions of the numerical stack are
:func:`collapselab.core.store.versions`.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

__all__ = ["cpu_model", "git_commit", "provenance", "source_checkout"]


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def source_checkout() -> Path | None:
    """The root of the source checkout collapselab runs from (the folder holding ``src/collapselab``
    and ``.git``), or None for an installed package."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / ".git").exists() and (root / "src" / "collapselab").is_dir() else None


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """``<commit>`` of the source checkout (``<commit>+dirty`` with uncommitted changes), None without git."""
    root = source_checkout()
    if root is None:
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head


def provenance() -> dict[str, Any]:
    """The command line, CPU model, torch threads, CUDA device name and git commit of this process."""
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    doc: dict[str, Any] = {
        "command": shlex.join(argv),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "git_commit": git_commit(),
    }
    if torch.cuda.is_available():
        doc["cuda_device"] = torch.cuda.get_device_name(0)
        doc["cuda_version"] = torch.version.cuda
    return doc
