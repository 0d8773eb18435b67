"""`make test-isa`: the numerics-heavy tests rerun with ATen and oneDNN capped to a lower ISA.

oneDNN and ATen choose their kernels by CPU capability; capping them (ATEN_CPU_CAPABILITY,
ONEDNN_MAX_CPU_ISA) makes one machine run the kernels of another (an AVX-512/AMX Xeon runs its
AVX2 or plain paths), so a tolerance set from one machine's rounding shows up on any machine.
The Makefile sets QC_EXPECT_ATEN_CAPABILITY beside the caps; this test proves the cap took effect.
"""
import os

import pytest
import torch


def test_capped_aten_capability_is_in_effect():
    want = os.environ.get("QC_EXPECT_ATEN_CAPABILITY")
    if not want:
        pytest.skip("not under `make test-isa` (QC_EXPECT_ATEN_CAPABILITY unset)")
    assert torch.backends.cpu.get_cpu_capability().lower() == want.lower()
    assert os.environ.get("ONEDNN_MAX_CPU_ISA"), "make test-isa caps oneDNN as well"
