"""One intra-op thread per test: the tiny tensors here gain nothing from threads, and on a
shared 2-core machine OpenMP threads spin against each other (40x slower)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
