"""Shared test fixtures: paths into ../shared (skipped with a reason when absent)."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Test tensors are small: one thread avoids oversubscription (and subprocesses inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


def shared_path(*parts: str) -> str:
    """Path under ../shared; skips the test when it does not exist (outside this workplace)."""
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        pytest.skip(f"{path} not found (../shared fixtures exist only in this workplace)")
    return path


@pytest.fixture
def fixtures_dir():
    return shared_path("fixtures")
