"""torch_utils.misc precision rule: --precision auto / --dtype auto from the hardware, with the CPU's
capability mocked (AVX2-only -> fp32, AMX -> bf16); $QC_AUTO_PRECISION forcing either branch; the
warning when bf16 is forced on a CPU that emulates it; what training_options.json records."""
import json

import pytest
import torch

from dnnlib.util import UserError
from torch_utils import misc

AVX2 = {"capability": "AVX2", "amx": False, "avx512_bf16": False}
AMX = {"capability": "AVX512", "amx": True, "avx512_bf16": True}


@pytest.fixture
def cpu(monkeypatch):
    """Mock the CPU: cpu(features, slowdown) sets what the probes and the matmul timing report."""
    calls = []

    def set_cpu(features, slowdown):
        monkeypatch.delenv(misc.AUTO_PRECISION_ENV, raising=False)   # these tests mock the hardware rule
        monkeypatch.setattr(misc, "cpu_bf16_features", lambda: dict(features))

        def timing(*_a, **_k):
            calls.append(1)
            return slowdown
        monkeypatch.setattr(misc, "measure_bf16_slowdown", timing)
        monkeypatch.setattr(misc, "_WARNED", set())
        return calls
    return set_cpu


def test_auto_is_fp32_on_avx2_without_timing(cpu):
    calls = cpu(AVX2, 26.0)
    info = misc.resolve_precision("auto", "cpu")
    assert info["precision"] == "fp32" and info["cpu_capability"] == "AVX2" and info["cpu_bf16_native"] is False
    assert calls == []                   # no bf16 instructions reported: nothing to time
    assert misc.resolve_inference_dtype("auto", "cpu") == "float32"


def test_auto_is_bf16_on_amx_once_the_timing_confirms(cpu):
    cpu(AMX, 0.4)
    info = misc.resolve_precision("auto", "cpu")
    assert info["precision"] == "bf16" and info["cpu_bf16_native"] is True and info["bf16_slowdown"] == 0.4
    assert misc.resolve_inference_dtype("auto", "cpu") == "bfloat16"
    cpu(AMX, 3.0)                        # flags say AMX but bf16 runs slower (e.g. a VM hiding AMX)
    assert misc.resolve_precision("auto", "cpu")["precision"] == "fp32"


def test_the_override_forces_either_branch_of_auto_only(cpu, monkeypatch, capsys):
    cpu(AVX2, 26.0)
    monkeypatch.setenv(misc.AUTO_PRECISION_ENV, "bf16")
    info = misc.resolve_precision("auto", "cpu")
    assert info["precision"] == "bf16" and info["auto_override"] == "bf16" and info["cpu_bf16_native"] is False
    assert info["bf16_slowdown"] == 26.0                      # recorded, but no warning: it was asked for
    assert capsys.readouterr().err == ""
    assert misc.resolve_inference_dtype("auto", "cpu") == "bfloat16"
    assert misc.resolve_precision("fp32", "cpu")["precision"] == "fp32"          # explicit choices stand
    assert misc.resolve_precision("auto", torch.device("cuda"))["precision"] == "fp16"   # CPU only
    cpu(AMX, 0.4)
    monkeypatch.setenv(misc.AUTO_PRECISION_ENV, "float32")
    assert misc.resolve_precision("auto", "cpu")["precision"] == "fp32"
    assert misc.resolve_inference_dtype("auto", "cpu") == "float32"
    monkeypatch.setenv(misc.AUTO_PRECISION_ENV, "")
    assert misc.resolve_precision("auto", "cpu")["auto_override"] is None        # empty: the hardware decides
    monkeypatch.setenv(misc.AUTO_PRECISION_ENV, "fp8")
    with pytest.raises(UserError, match="QC_AUTO_PRECISION must be one of bf16, fp32"):
        misc.resolve_precision("auto", "cpu")


def test_forcing_bf16_on_an_emulating_cpu_warns_once_with_the_slowdown(cpu, capsys):
    cpu(AVX2, 26.4)
    assert misc.resolve_precision("bf16", "cpu")["precision"] == "bf16"     # the user's choice stands
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: bf16 is emulated") and "26.4x slower" in err[0]
    misc.resolve_precision("bf16", "cpu")
    assert capsys.readouterr().err == ""
    cpu(AMX, 0.4)
    misc.resolve_precision("bf16", "cpu")
    assert capsys.readouterr().err == ""                                   # native: no warning


def test_cuda_and_errors(cpu):
    cpu(AVX2, 26.0)
    assert misc.resolve_precision("auto", torch.device("cuda"))["precision"] == "fp16"
    assert misc.resolve_precision("fp32", torch.device("cuda"))["precision"] == "fp32"
    assert misc.resolve_inference_dtype("auto", torch.device("cuda")) == "float32"   # per-block fp16
    with pytest.raises(UserError, match="fp16 needs CUDA"):
        misc.resolve_precision("fp16", "cpu")
    with pytest.raises(UserError, match="--precision must be one of"):
        misc.resolve_precision("fp8", "cpu")


def test_real_timing_is_a_positive_ratio():
    ratio = misc.measure_bf16_slowdown(size=64, repeats=1)
    assert ratio > 0 and misc.measure_bf16_slowdown(size=64) == ratio    # cached


def test_training_options_record_the_choice(cpu, tmp_path):
    from _training_data import make_blobs
    from training.launch import launch, resolve_options
    cpu(AMX, 0.5)
    blobs = make_blobs(tmp_path / "data")
    opts = resolve_options(dict(data=blobs.data, cfg="smoke", q_dim=0, device="cpu"))
    assert opts.compute.precision == "bf16"
    assert opts.compute.precision_info == {"requested": "auto", "device": "cpu", "cpu_capability": "AVX512",
                                   "cpu_bf16_native": True, "bf16_slowdown": 0.5, "precision": "bf16",
                                   "auto_override": None}
    cpu(AVX2, 26.0)
    opts = resolve_options(dict(data=blobs.data, cfg="smoke", q_dim=0, device="cpu", kimg=0.008, tick_kimg=0.008))
    assert opts.compute.precision == "fp32"
    run_dir = launch(opts, str(tmp_path / "runs"))
    with open(f"{run_dir}/training_options.json") as f:
        saved = json.load(f)
    assert saved["precision"] == "fp32" and saved["precision_info"]["cpu_capability"] == "AVX2"
    assert run_dir.endswith("-plain-ada0.6")          # 'auto' does not rename the run


def test_encoder_training_precision_follows_the_same_rule(cpu, monkeypatch):
    """invert.py train-encoder --precision: autocast only (fp32 or bf16); the CPU rule is
    resolve_precision's; on CUDA 'auto' is bf16 where the GPU supports it."""
    cpu(AVX2, 26.0)
    assert misc.resolve_autocast_precision("auto", "cpu") == "fp32"
    assert misc.resolve_autocast_precision("bf16", "cpu") == "bf16"
    cpu(AMX, 0.4)
    assert misc.resolve_autocast_precision("auto", "cpu") == "bf16"
    assert misc.resolve_autocast_precision("fp32", "cpu") == "fp32"
    monkeypatch.setenv(misc.AUTO_PRECISION_ENV, "fp32")
    assert misc.resolve_autocast_precision("auto", "cpu") == "fp32"
    for supported, want in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
        assert misc.resolve_autocast_precision("auto", "cuda") == want
    with pytest.raises(UserError, match="--precision must be one of auto, fp32, bf16"):
        misc.resolve_autocast_precision("fp16", "cpu")
