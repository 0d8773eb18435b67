"""CUDA kernels (torch_utils/ops/cuda_kernels.py): fallback, compilation, agreement with the reference.

(a) a failing build falls back to the reference path with one warning (always runs);
(b) the sources compile with nvcc + ninja (needs ``nvcc`` on PATH; part of the normal run with
    ``QC_TEST_CUDA_BUILD=1``, else marked slow: a cold build takes about 1.5 minutes on 2 cores).
    The compiled extensions also carry a CPU loop running the same per-element code, which is
    checked against the reference here, gradients to second order included;
(c) on a CUDA device, the kernels match the reference (relative error <= 1e-5 in float32) in the
    forward pass, the backward pass and the double backward pass.
"""
import os
import re
import shutil
import subprocess
import sys
import time
import warnings

import pytest
import torch

from torch_utils.ops import cuda_kernels
from torch_utils.ops.bias_act import ACTIVATIONS, _resolve, bias_act, bias_act_ref
from torch_utils.ops.upfirdn2d import setup_filter, upfirdn2d, upfirdn2d_ref

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_REL_TOL = 1e-5
DEFAULT_ARCH = "9.0"   # what to compile for when no GPU is visible (H100)


@pytest.fixture
def fresh_kernels():
    cuda_kernels.reset_cache()
    yield
    cuda_kernels.reset_cache()


# ---------------------------------------------------------------------------------------------
# (a) fallback

def test_build_failure_warns_once_and_returns_none(monkeypatch, fresh_kernels):
    calls = []

    def failing_build(name, verbose=False):
        calls.append(name)
        raise RuntimeError("Error building extension: nvcc fatal: simulated failure")

    monkeypatch.setattr(cuda_kernels, "build_extension", failing_build)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert cuda_kernels.get_bias_act() is None
            assert cuda_kernels.get_upfirdn2d() is None
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages                    # one per extension, not per call
    assert all("simulated failure" in m and "reference" in m for m in messages)
    assert any("qc_bias_act" in m for m in messages) and any("qc_upfirdn2d" in m for m in messages)
    assert calls == ["qc_bias_act", "qc_upfirdn2d"]        # no rebuild attempt per call


def test_kernel_activation_ids_match_the_registry_and_the_kernel():
    # The ids are the kernel's switch (bias_act_kernel.cu enum ActId); every activation has one.
    assert set(cuda_kernels.KERNEL_ACT_IDS) == set(ACTIVATIONS)
    with open(os.path.join(REPO, "torch_utils", "ops", "bias_act_kernel.cu"), encoding="utf-8") as f:
        enum = re.search(r"enum ActId \{([^}]*)\}", f.read()).group(1)
    in_kernel = {name.lower(): int(v) for name, v in re.findall(r"k(\w+) = (\d+)", enum)}
    assert in_kernel == cuda_kernels.KERNEL_ACT_IDS


def test_failure_reason_names_the_compiler_error():
    exc = RuntimeError("Error building extension 'qc_upfirdn2d_0123456789': [1/3] c++ -c a.cpp\n"
                       "FAILED: qc_upfirdn2d.so\n/usr/bin/ld: cannot find -lcudart: No such file or directory\n"
                       "collect2: error: ld returned 1 exit status\n")
    reason = cuda_kernels._failure_reason(exc)
    assert "\n" not in reason
    assert reason.startswith("RuntimeError: Error building extension 'qc_upfirdn2d_0123456789'")
    assert "cannot find -lcudart" in reason


def test_cpu_never_builds(monkeypatch, fresh_kernels):
    def no_build(name, verbose=False):
        raise AssertionError(f"build of {name} attempted for a CPU tensor")

    monkeypatch.setattr(cuda_kernels, "build_extension", no_build)
    x = torch.randn(2, 3, 8, 8)
    f = setup_filter([1, 3, 3, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for impl in ("auto", "cuda"):
            torch.testing.assert_close(bias_act(x, torch.ones(3), act="lrelu", impl=impl),
                                       bias_act_ref(x, torch.ones(3), act="lrelu"))
            torch.testing.assert_close(upfirdn2d(x, f, up=2, padding=2, impl=impl),
                                       upfirdn2d_ref(x, f, up=2, padding=2))


def test_import_compiles_nothing():
    code = ("import sys; import torch_utils.ops.bias_act, torch_utils.ops.upfirdn2d, "
            "torch_utils.ops.conv2d_resample, torch_utils.ops.modulated_conv2d, torch_utils.ops.cuda_kernels; "
            "print('torch.utils.cpp_extension' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# (b) compilation (no GPU needed) and the host path of the compiled code

_build_marks = [pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")]
if os.environ.get("QC_TEST_CUDA_BUILD") != "1":
    _build_marks.append(pytest.mark.slow)


def _check_host_path(ba, uf):
    """The compiled per-element code (CPU loop) against the reference, to second order."""
    gen = torch.Generator().manual_seed(0)
    for act in ACTIVATIONS:
        for clamp in (None, 0.7):
            _, alpha, gain = _resolve(act, None, None)
            x = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64) * 3
            b = torch.randn(3, generator=gen, dtype=torch.float64)
            kw = dict(dim=1, act=act, alpha=alpha, gain=gain, clamp=-1.0 if clamp is None else clamp)
            torch.testing.assert_close(ba(x, b, **kw), bias_act_ref(x, b, dim=1, act=act, clamp=clamp))
            xs, bs = x[:1, :, :2, :2].clone().requires_grad_(), b.clone().requires_grad_()
            assert torch.autograd.gradcheck(lambda x_, b_: ba(x_, b_, **kw), (xs, bs))
            assert torch.autograd.gradgradcheck(lambda x_, b_: ba(x_, b_, **kw), (xs, bs))
    x = torch.randn(2, 6, 5, 4, generator=gen).to(memory_format=torch.channels_last)
    torch.testing.assert_close(ba(x, torch.ones(6), dim=1, act="lrelu", alpha=0.2, gain=2 ** 0.5, clamp=1.0),
                               bias_act_ref(x, torch.ones(6), act="lrelu", clamp=1.0))
    f2 = torch.rand(3, 4, dtype=torch.float64, generator=gen)
    f1 = torch.rand(4, dtype=torch.float64, generator=gen)
    for f, up, down, pad, flip in [(f2, (2, 2), (1, 1), (2, 1, 1, 2), False), (f1, (1, 1), (2, 2), (1, 1, 2, 0), True),
                                   (f2, (3, 1), (1, 2), (-1, 3, 2, -1), False), (f1, (2, 3), (3, 2), (4, 0, 1, 1), True),
                                   (None, (2, 2), (1, 1), (0, 0, 0, 0), False)]:
        x = torch.randn(2, 3, 6, 5, dtype=torch.float64, generator=gen)
        kw = dict(up=up, down=down, padding=pad, flip_filter=flip, gain=2.0)
        torch.testing.assert_close(uf(x, f, **kw), upfirdn2d_ref(x, f, **kw))
        xs = x[:1, :1].clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda x_: uf(x_, f, **kw), (xs,))
        assert torch.autograd.gradgradcheck(lambda x_: uf(x_, f, **kw), (xs,))


@pytest.mark.timeout(1800)
def test_sources_compile_and_host_path_matches_reference(tmp_path, monkeypatch):
    for mark in _build_marks:
        if mark.name == "skipif" and mark.args[0]:
            pytest.skip(mark.kwargs["reason"])
    build_root = os.environ.get("QC_TEST_CUDA_BUILD_DIR") or str(tmp_path / "torch_extensions")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", build_root)
    if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH)
    modules = {}
    for name in cuda_kernels.EXTENSIONS:
        start = time.perf_counter()
        modules[name] = cuda_kernels.build_extension(name)
        print(f"{name}: built/loaded in {time.perf_counter() - start:.1f} s")
        # TORCH_EXTENSIONS_DIR respected: <root>/<name>_<hash>/<name>_<hash>.so
        assert os.path.realpath(os.path.dirname(os.path.dirname(modules[name].__file__))) == os.path.realpath(build_root)
    _check_host_path(cuda_kernels._bias_act_callable(modules["qc_bias_act"]),
                     cuda_kernels._upfirdn2d_callable(modules["qc_upfirdn2d"]))


for _mark in _build_marks:
    if _mark.name == "slow":
        test_sources_compile_and_host_path_matches_reference = _mark(test_sources_compile_and_host_path_matches_reference)


# ---------------------------------------------------------------------------------------------
# (c) on a CUDA device

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _rel_err(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def _three_orders(fn, x, b=None):
    """Output, first derivative (vs a random dy) and second derivative (vs a random v) wrt x (and b)."""
    gen = torch.Generator(device=x.device).manual_seed(1)
    inputs = [x] if b is None else [x, b]
    y = fn(*inputs)
    dy = torch.randn(y.shape, device=x.device, generator=gen)
    grads = torch.autograd.grad(y, inputs, dy, create_graph=True)
    v = torch.randn(x.shape, device=x.device, generator=gen)
    if grads[0].requires_grad:
        second = torch.autograd.grad((grads[0] * v).sum(), inputs, allow_unused=True)
    else:  # dx does not depend on the inputs (linear op): the second derivative is 0
        second = [None] * len(inputs)
    second = [torch.zeros_like(t) if s is None else s for s, t in zip(second, inputs)]
    return [y.detach(), *[g.detach() for g in grads], *second]


@cuda_only
@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("clamp", [None, 1.5])
def test_cuda_bias_act_matches_reference(act, clamp, fresh_kernels):
    assert cuda_kernels.get_bias_act() is not None, "the bias_act extension did not build (see warning)"
    gen = torch.Generator(device="cuda").manual_seed(0)
    for shape, dim in [([4, 32, 16, 16], 1), ([8, 64], 1), ([3, 5, 7], 2)]:
        x = (torch.randn(shape, device="cuda", generator=gen) * 2).requires_grad_()
        b = torch.randn(shape[dim], device="cuda", generator=gen).requires_grad_()
        got = _three_orders(lambda x_, b_: bias_act(x_, b_, dim=dim, act=act, clamp=clamp, impl="cuda"), x, b)
        want = _three_orders(lambda x_, b_: bias_act(x_, b_, dim=dim, act=act, clamp=clamp, impl="ref"), x, b)
        for i, (g, w) in enumerate(zip(got, want)):
            if w.abs().max() == 0:
                assert g.abs().max() == 0, (act, shape, i)
            else:
                assert _rel_err(g, w) <= CUDA_REL_TOL, (act, shape, i, _rel_err(g, w))


@cuda_only
@pytest.mark.parametrize("kw", [dict(up=2, padding=[2, 1, 2, 1], gain=4), dict(down=2, padding=[1, 1, 1, 1]),
                                dict(up=[1, 2], down=[2, 1], padding=[-1, 3, 2, 0], flip_filter=True),
                                dict(up=4, down=2, padding=[3, 2, 3, 2]), dict(padding=[1, 2, 1, 2])])
@pytest.mark.parametrize("taps,separable", [([1, 3, 3, 1], False), ([1, 2, 3, 4, 4, 3, 2, 1], True)])
def test_cuda_upfirdn2d_matches_reference(kw, taps, separable, fresh_kernels):
    assert cuda_kernels.get_upfirdn2d() is not None, "the upfirdn2d extension did not build (see warning)"
    f = setup_filter(taps, device=torch.device("cuda"), separable=separable)
    gen = torch.Generator(device="cuda").manual_seed(0)
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(3, 8, 17, 12, device="cuda", generator=gen).to(memory_format=layout).requires_grad_()
        got = _three_orders(lambda x_: upfirdn2d(x_, f, impl="cuda", **kw), x)
        want = _three_orders(lambda x_: upfirdn2d(x_, f, impl="ref", **kw), x)
        assert got[0].shape == want[0].shape
        for i, (g, w) in enumerate(zip(got[:2], want[:2])):   # the op is linear: no 2nd derivative
            assert _rel_err(g, w) <= CUDA_REL_TOL, (kw, layout, i, _rel_err(g, w))
        # Double backward: the gradient of the gradient wrt dy is the op itself.
        dy = torch.randn(want[0].shape, device="cuda", generator=gen, requires_grad=True)
        gx = {impl: torch.autograd.grad(upfirdn2d(x, f, impl=impl, **kw), x, dy, create_graph=True)[0]
              for impl in ("cuda", "ref")}
        v = torch.randn(x.shape, device="cuda", generator=gen)
        gg = {impl: torch.autograd.grad((gx[impl] * v).sum(), dy)[0] for impl in gx}
        assert _rel_err(gg["cuda"], gg["ref"]) <= CUDA_REL_TOL


@cuda_only
def test_cuda_half_precision_close(fresh_kernels):
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(2, 16, 32, 32, device="cuda", generator=gen)
    b = torch.randn(16, device="cuda", generator=gen)
    f = setup_filter([1, 3, 3, 1], device=torch.device("cuda"))
    for dtype in (torch.float16, torch.bfloat16):
        y = bias_act(x.to(dtype), b.to(dtype), act="lrelu", clamp=256, impl="cuda")
        assert y.dtype == dtype
        torch.testing.assert_close(y.float(), bias_act_ref(x, b, act="lrelu", clamp=256), rtol=2e-2, atol=2e-2)
        u = upfirdn2d(x.to(dtype), f, up=2, padding=[2, 1, 2, 1], gain=4, impl="cuda")
        assert u.dtype == dtype
        torch.testing.assert_close(u.float(), upfirdn2d_ref(x, f, up=2, padding=[2, 1, 2, 1], gain=4),
                                   rtol=2e-2, atol=2e-2)
