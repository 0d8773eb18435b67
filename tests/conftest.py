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


# float32 across CPU kernels: oneDNN and ATen pick their convolution/GEMM kernels by CPU
# capability (SSE4.1 ... AVX2 ... AVX-512/AMX), so a sum of K products is added in another order
# on another machine. The rounding error of such a sum scales with the magnitudes summed, not
# with each output's own value, so a per-element rtol is wrong for outputs near zero and an
# absolute atol is wrong for networks whose values reach 200 (random-weight fixtures). Measured
# on the fixtures after ~10 convolutions: at most 3.3e-6 of the tensor's largest magnitude
# (AVX2 EPYC, and oneDNN capped at SSE4.1 + ATen "default", vs the AVX-512/AMX Xeon that made the
# references). 2e-5 of the scale leaves 6x headroom and is still ~1e4 times below what a wrong
# weight sign, a missing demodulation or a wrong DegradBlock mixing changes (tests check that).
FLOAT32_KERNEL_REL = 2e-5


def assert_close_scaled(got, want, rel: float = FLOAT32_KERNEL_REL):
    """``got == want`` up to ``rel`` times ``max|want|`` per element (see FLOAT32_KERNEL_REL)."""
    scale = float(want.detach().abs().max())
    torch.testing.assert_close(got, want, rtol=0, atol=rel * max(scale, 1e-30))
