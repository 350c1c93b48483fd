"""Run-time settings named on the command line, checked once: the device and the seed.

:func:`resolve_device` is the one parser of ``--device`` (``collapselab run`` and ``train``);
:func:`check_seed` the one range check of a seed (``--seed``, ``--set seed=...``).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from .errors import ParameterError

__all__ = ["SEED_MAX", "check_seed", "resolve_device"]

SEED_MAX = 2**63 - 1
"""The largest seed. ``torch.manual_seed`` takes up to 64 bits and ``numpy.random.default_rng`` any
non-negative integer; the signed 64-bit range keeps every seed exact in JSON readers too."""

_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device named by ``--device``: ``cpu``, ``cuda`` or ``cuda:N`` (default CPU).

    CUDA must be available and ``N`` below ``torch.cuda.device_count()``; anything else is a
    :class:`ParameterError` naming the accepted forms.
    """
    if isinstance(device, torch.device):
        text = str(device)
    else:
        text = "cpu" if device is None else str(device).strip().lower()
    match = _DEVICE.match(text)
    if match is None:
        raise ParameterError(f"--device {device!r} is not a device this library runs on; use cpu, cuda or cuda:N")
    kind, index = match.group(1), match.group(2)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError(f"--device {text} was asked for but torch.cuda.is_available() is False on this machine; use --device cpu")
        count = torch.cuda.device_count()
        if index is not None and int(index) >= count:
            raise ParameterError(f"--device {text}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}; pick one of those")
    return torch.device(text)


def check_seed(seed: Any, where: str = "seed") -> int:
    """``seed`` as an int in ``[0, 2^63 - 1]``; a :class:`ParameterError` naming the range otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ParameterError(f"{where}: seed must be an integer in [0, 2^63 - 1], got {seed!r}")
    value = int(seed)
    if not 0 <= value <= SEED_MAX:
        raise ParameterError(f"{where}: seed must be an integer in [0, 2^63 - 1], got {value}; choose a non-negative seed such as 0")
    return value
