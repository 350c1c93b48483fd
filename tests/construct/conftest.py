"""One intra-op thread for this package's tests (restored after each test).

The constructions here run on tiny tensors; on the shared 2-core machine two OpenMP
threads made such ops up to 100x slower (measured on an Adam step: 190 ms vs 1.8 ms).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
