import os
import random

import pytest
import torch

# One thread per xdist worker: two workers x two threads on two cores thrash on tiny ops.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tiny ops thrash on two threads of two shared cores (kept outside xdist): one thread here."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


collect_ignore = ["mutants.py"]  # a script (python tests/mutants.py): minutes, not part of CI
