"""Reference ops (torch_utils/ops) against naive formulations, and their gradients.

The naive versions are written independently in NumPy/SciPy (float64): explicit zero insertion,
padding and direct correlation (``scipy.signal.correlate2d``), explicit per-pixel sums, explicit
per-sample loops. Gradients: ``torch.autograd.gradcheck`` / ``gradgradcheck`` in float64 (full
Jacobians for bias_act; ``fast_mode``, i.e. random projections of the Jacobian, for the
convolutions, which keeps the file fast on 2 cores).
"""
import math

import numpy as np
import pytest
import torch
from scipy import signal

from torch_utils.ops.bias_act import ACTIVATIONS, bias_act
from torch_utils.ops.conv2d_resample import conv2d_resample
from torch_utils.ops.fma import fma
from torch_utils.ops.modulated_conv2d import DEMOD_EPS, modulated_conv2d
from torch_utils.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


# ---------------------------------------------------------------------------------------------
# Naive formulations (NumPy, float64)

def naive_act(z, act, alpha):
    sig = 1 / (1 + np.exp(-z))
    return {
        "linear": lambda: z,
        "relu": lambda: np.maximum(z, 0),
        "lrelu": lambda: np.where(z > 0, z, alpha * z),
        "tanh": lambda: np.tanh(z),
        "sigmoid": lambda: sig,
        "elu": lambda: np.where(z > 0, z, alpha * (np.exp(np.minimum(z, 0)) - 1)),
        "selu": lambda: SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * (np.exp(np.minimum(z, 0)) - 1)),
        "softplus": lambda: np.log1p(np.exp(z)),
        "swish": lambda: z * sig,
    }[act]()


def naive_bias_act(x, b, dim, act, alpha, gain, clamp):
    shape = [1] * x.ndim
    shape[dim] = -1
    z = x if b is None else x + b.reshape(shape)
    y = naive_act(z, act, alpha) * gain
    return y if clamp is None else np.clip(y, -clamp, clamp)


def pad_crop(x, px0, px1, py0, py1):
    """Zero-pad the last two axes (negative amounts crop)."""
    x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))])
    h, w = x.shape[-2:]
    return x[..., max(-py0, 0): h - max(-py1, 0), max(-px0, 0): w - max(-px1, 0)]


def naive_upfirdn2d(x, f, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), flip_filter=False, gain=1.0):
    """Zero insertion, pad, correlate with (flipped unless flip_filter) f * gain, subsample."""
    n, c, h, w = x.shape
    upx, upy = up
    downx, downy = down
    xu = np.zeros([n, c, h * upy, w * upx])
    xu[:, :, ::upy, ::upx] = x
    xp = pad_crop(xu, *pad)
    fk = (f if flip_filter else f[::-1, ::-1]) * gain
    y = np.stack([np.stack([signal.correlate2d(xp[i, j], fk, mode="valid") for j in range(c)])
                  for i in range(n)])
    return y[:, :, ::downy, ::downx]


def loop_upfirdn2d(x, f, up, down, pad, gain=1.0):
    """Explicit per-output-pixel sum y[o] = sum_k f~[k] x[(o*down + k - p0) / up] (no zero insertion)."""
    n, c, h, w = x.shape
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = pad
    fh, fw = f.shape
    fk = f[::-1, ::-1] * gain
    oh = (h * upy + py0 + py1 - fh) // downy + 1
    ow = (w * upx + px0 + px1 - fw) // downx + 1
    y = np.zeros([n, c, oh, ow])
    for oy in range(oh):
        for ox in range(ow):
            for ky in range(fh):
                my = oy * downy + ky - py0
                if my % upy or not 0 <= my // upy < h:
                    continue
                for kx in range(fw):
                    mx = ox * downx + kx - px0
                    if mx % upx or not 0 <= mx // upx < w:
                        continue
                    y[:, :, oy, ox] += fk[ky, kx] * x[:, :, my // upy, mx // upx]
    return y


def naive_conv(x, w, groups=1, flip_weight=True):
    """Valid-mode grouped convolution; flip_weight=True: correlation (as F.conv2d)."""
    n, cin = x.shape[:2]
    cout, cin_g = w.shape[:2]
    cout_g = cout // groups
    op = signal.correlate2d if flip_weight else signal.convolve2d
    out = []
    for i in range(n):
        chans = []
        for o in range(cout):
            g = o // cout_g
            chans.append(sum(op(x[i, g * cin_g + k], w[o, k], mode="valid") for k in range(cin_g)))
        out.append(np.stack(chans))
    return np.stack(out)


def naive_conv2d_resample(x, w, f, up=1, down=1, padding=0, groups=1, flip_weight=True):
    """The docstring's meaning: up: zero insert + filter (gain up^2) + conv; down: conv + filter +
    subsample; the (conv/filter-aligned) padding applied to the input first."""
    fh, fw = f.shape
    px0, px1, py0, py1 = [padding] * 4 if isinstance(padding, int) else padding
    if up > 1:
        xu = naive_upfirdn2d(x, f, up=(up, up), gain=up * up,
                             pad=(px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2,
                                  py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2))
        return naive_conv(xu, w, groups, flip_weight)
    if down > 1:
        xp = pad_crop(x, px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2,
                      py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2)
        y = naive_conv(xp, w, groups, flip_weight)
        return naive_upfirdn2d(y, f, down=(down, down))
    return naive_conv(pad_crop(x, px0, px1, py0, py1), w, groups, flip_weight)


def naive_modulated_conv2d(x, weight, styles, noise, f, up, padding, demodulate, flip_weight):
    """Eq. 1 and Eq. 3 of StyleGAN2, one sample at a time."""
    out = []
    for i in range(x.shape[0]):
        wi = weight * styles[i][None, :, None, None]                       # Eq. 1
        if demodulate:
            wi = wi / np.sqrt((wi ** 2).sum(axis=(1, 2, 3), keepdims=True) + DEMOD_EPS)  # Eq. 3
        if up > 1:
            yi = naive_conv2d_resample(x[i:i + 1], wi, f, up=up, padding=padding, flip_weight=flip_weight)
        else:
            yi = naive_conv(pad_crop(x[i:i + 1], *[padding] * 4), wi, flip_weight=flip_weight)
        out.append(yi[0])
    y = np.stack(out)
    return y if noise is None else y + noise


# ---------------------------------------------------------------------------------------------
# bias_act

@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_bias_act_matches_formula(act):
    rng = np.random.default_rng(len(act))
    for trial in range(3):
        ndim = int(rng.integers(2, 5))
        shape = [int(s) for s in rng.integers(1, 5, size=ndim)]
        dim = int(rng.integers(0, ndim))
        x = rng.normal(size=shape) * 3
        b = rng.normal(size=shape[dim]) if trial != 1 else None
        alpha = float(rng.uniform(0.05, 1.5)) if trial != 0 else None
        gain = float(rng.uniform(0.5, 2.0)) if trial != 0 else None
        clamp = float(rng.uniform(0.3, 2.0)) if trial == 2 else None
        y = bias_act(_t(x), None if b is None else _t(b), dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
        spec = ACTIVATIONS[act]
        want = naive_bias_act(x, b, dim, act, spec.def_alpha if alpha is None else alpha,
                              spec.def_gain if gain is None else gain, clamp)
        assert y.shape == tuple(shape) and y.dtype == torch.float64
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-10, atol=1e-12)
        if clamp is not None:
            assert y.abs().max() <= clamp


def test_bias_act_defaults_and_errors():
    x = torch.tensor([[-1.0, 2.0]])
    # lrelu: slope 0.2, gain sqrt(2); linear: gain 1.
    np.testing.assert_allclose(bias_act(x, act="lrelu").numpy(), [[-0.2 * math.sqrt(2), 2 * math.sqrt(2)]], rtol=1e-6)
    np.testing.assert_allclose(bias_act(x, torch.tensor([1.0, 1.0])).numpy(), [[0.0, 3.0]])
    with pytest.raises(ValueError, match="unknown activation"):
        bias_act(x, act="gelu_typo")
    with pytest.raises(ValueError, match="bias shape"):
        bias_act(x, torch.zeros(3))
    with pytest.raises(ValueError, match="impl"):
        bias_act(x, impl="triton")


@pytest.mark.parametrize("act,clamp", [("lrelu", 0.8), ("tanh", None), ("sigmoid", 0.4), ("elu", None),
                                       ("selu", None), ("softplus", 1.0), ("swish", None), ("relu", 0.7)])
def test_bias_act_gradcheck(act, clamp):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, generator=gen, requires_grad=True)

    def fn(x, b):
        return bias_act(x, b, dim=1, act=act, clamp=clamp)

    if clamp is not None:  # some outputs clamped, some not: both branches are checked
        y = fn(x, b)
        assert (y.abs() == clamp).any() and (y.abs() < clamp).any()
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


# ---------------------------------------------------------------------------------------------
# upfirdn2d

def _rand_filter(rng, fh, fw):
    return rng.normal(size=[fh, fw]) + 0.5


def test_upfirdn2d_matches_naive_random():
    rng = np.random.default_rng(0)
    for trial in range(12):
        n, c = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        h, w = int(rng.integers(3, 8)), int(rng.integers(3, 8))
        fh, fw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        up = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        down = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        pad = tuple(int(p) for p in rng.integers(-2, 4, size=4))    # asymmetric, negative crops
        flip = bool(rng.integers(0, 2))
        gain = float(rng.uniform(0.5, 3))
        if h * up[1] + pad[2] + pad[3] < fh or w * up[0] + pad[0] + pad[1] < fw:
            continue
        x = rng.normal(size=[n, c, h, w])
        f = _rand_filter(rng, fh, fw)
        y = upfirdn2d(_t(x), _t(f), up=list(up), down=list(down), padding=list(pad), flip_filter=flip, gain=gain)
        want = naive_upfirdn2d(x, f, up, down, pad, flip, gain)
        assert y.shape == want.shape, (trial, up, down, pad, f.shape)
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-10, atol=1e-12)
        if not flip:  # the explicit per-pixel sum, no zero insertion at all
            np.testing.assert_allclose(y.numpy(), loop_upfirdn2d(x, f, up, down, pad, gain), rtol=1e-10, atol=1e-12)


def test_upfirdn2d_output_size_formula_and_scalar_args():
    x = torch.randn(1, 2, 7, 5, dtype=torch.float64)
    f = torch.rand(3, 4, dtype=torch.float64)
    y = upfirdn2d(x, f, up=2, down=3, padding=[1, 2])
    # [N, C, (H*up + py0 + py1 - fh + down) // down, (W*up + px0 + px1 - fw + down) // down]
    assert y.shape == (1, 2, (14 + 4 - 3 + 3) // 3, (10 + 2 - 4 + 3) // 3)
    np.testing.assert_allclose(y.numpy(), naive_upfirdn2d(x.numpy(), f.numpy(), (2, 2), (3, 3), (1, 1, 2, 2)),
                               rtol=1e-10, atol=1e-12)
    assert torch.equal(upfirdn2d(x, None), x)   # None = identity


def test_upfirdn2d_separable_equals_outer_product():
    rng = np.random.default_rng(3)
    x = _t(rng.normal(size=[2, 3, 6, 5]))
    f1 = rng.uniform(0.1, 1, size=8)
    fs = setup_filter(f1, separable=True).double()
    assert fs.ndim == 1 and setup_filter(f1, separable=False).ndim == 2
    f2 = torch.outer(fs, fs)
    torch.testing.assert_close(setup_filter(f1, separable=False).double(), f2, rtol=1e-6, atol=1e-7)
    for kw in [dict(up=2, padding=[4, 3, 4, 3]), dict(down=2, padding=[3, 3, 3, 3], gain=2.5),
               dict(up=[1, 2], down=[2, 1], padding=[3, 4, 4, 3], flip_filter=True)]:
        torch.testing.assert_close(upfirdn2d(x, fs, **kw), upfirdn2d(x, f2, **kw), rtol=1e-12, atol=1e-12)


def test_setup_filter():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    assert abs(float(f.sum()) - 1) < 1e-6
    np.testing.assert_allclose(f.numpy(), np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64, rtol=1e-6)
    assert abs(float(setup_filter([1, 2, 1], gain=4).sum()) - 4) < 1e-5
    fs = setup_filter([1, 2, 3, 4, 4, 3, 2, 1], gain=4)             # 8 taps: separable by default
    assert fs.ndim == 1 and abs(float(fs.sum()) ** 2 - 4) < 1e-5      # 2-D response gains 4
    np.testing.assert_allclose(setup_filter([1, 2, 4], flip_filter=True).numpy(),
                               setup_filter([4, 2, 1]).numpy())


@pytest.mark.parametrize("taps", [[1, 3, 3, 1], [1, 2, 1], [1, 1], [1, 4, 6, 4, 1]])
def test_resample_helpers_sizes_and_constant(taps):
    f = setup_filter(taps)
    x = torch.ones(1, 2, 12, 10)
    m = len(taps)  # border pixels touched by the zero padding
    up = upsample2d(x, f)
    assert up.shape == (1, 2, 24, 20)
    interior = up[:, :, m:-m, m:-m]
    torch.testing.assert_close(interior, torch.ones_like(interior))  # constant stays constant
    assert upsample2d(x, f, up=[2, 3]).shape == (1, 2, 36, 20)
    assert upsample2d(x, f, padding=[1, 2, 0, 3]).shape == (1, 2, 27, 23)
    down = downsample2d(x, f)
    assert down.shape == (1, 2, 6, 5)
    torch.testing.assert_close(down[:, :, 2:-2, 2:-2], torch.ones(1, 2, 2, 1))
    assert downsample2d(torch.ones(1, 1, 9, 7), f).shape == (1, 1, 4, 3)
    filt = filter2d(x, f)
    assert filt.shape == x.shape
    assert filter2d(x, f, padding=1).shape == (1, 2, 14, 12)
    torch.testing.assert_close(filt[:, :, m:-m, m:-m], torch.ones(1, 2, 12 - 2 * m, 10 - 2 * m))


def test_upsample_then_downsample_aligned():
    """upsample2d then downsample2d with the same symmetric filter keeps a smooth image in place."""
    f = setup_filter([1, 3, 3, 1])
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    img = (0.3 * yy + 0.2 * xx)[None, None]             # linear ramp: no filter changes it
    out = downsample2d(upsample2d(img, f), f)
    torch.testing.assert_close(out[..., 4:-4, 4:-4], img[..., 4:-4, 4:-4], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kw", [dict(up=2, padding=[2, 1, 1, 2]), dict(down=2, padding=[1, 1, 2, 0]),
                                dict(up=[2, 1], down=[1, 2], padding=[-1, 2, 1, 0], flip_filter=True, gain=3.0)])
def test_upfirdn2d_gradcheck(kw):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    f = torch.rand(3, 4, dtype=torch.float64, generator=gen)

    def fn(x):
        return upfirdn2d(x, f, **kw)

    assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


# ---------------------------------------------------------------------------------------------
# conv2d_resample

CONV_CASES = [
    dict(up=1, down=1, k=3, padding=1, groups=1),
    dict(up=1, down=1, k=1, padding=0, groups=2),
    dict(up=2, down=1, k=3, padding=1, groups=1),
    dict(up=2, down=1, k=1, padding=0, groups=1),
    dict(up=2, down=1, k=3, padding=1, groups=2),
    dict(up=1, down=2, k=3, padding=1, groups=1),
    dict(up=1, down=2, k=1, padding=0, groups=2),
    dict(up=1, down=2, k=3, padding=0, groups=2),
    dict(up=2, down=1, k=3, padding=0, groups=1),
    dict(up=2, down=1, k=3, padding=[2, 0, 1, -1], groups=1),   # asymmetric, negative crops
    dict(up=1, down=2, k=3, padding=[0, 2, 1, 0], groups=2),
    dict(up=1, down=1, k=3, padding=[2, 0, 0, 1], groups=1),
]


@pytest.mark.parametrize("flip_weight", [True, False])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "up{up}-down{down}-k{k}-p{padding}-g{groups}".format(**c).replace(" ", ""))
def test_conv2d_resample_matches_naive(case, flip_weight):
    rng = np.random.default_rng(5)
    k, groups = case["k"], case["groups"]
    x = rng.normal(size=[2, 4, 6, 7])
    w = rng.normal(size=[6, 4 // groups, k, k])
    for taps in ([1, 3, 3, 1], [1, 2, 1]):
        f = setup_filter(taps).double()
        y = conv2d_resample(_t(x), _t(w), f=f, up=case["up"], down=case["down"], padding=case["padding"],
                            groups=groups, flip_weight=flip_weight)
        want = naive_conv2d_resample(x, w, f.numpy(), up=case["up"], down=case["down"],
                                     padding=case["padding"], groups=groups, flip_weight=flip_weight)
        assert y.shape == want.shape, (case, taps)
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-9, atol=1e-10)
    if k == 3 and case["padding"] == 1:   # 'same' size scaled by up/down
        assert y.shape[2:] == (6 * case["up"] // case["down"], 7 * case["up"] // case["down"])


def test_conv2d_resample_errors():
    x, w = torch.zeros(1, 4, 5, 5), torch.zeros(3, 4, 3, 3)
    with pytest.raises(ValueError, match="filter"):
        conv2d_resample(x, w, up=2)
    with pytest.raises(ValueError, match="not both"):
        conv2d_resample(x, w, f=setup_filter([1, 1]), up=2, down=2)
    with pytest.raises(ValueError, match="channels"):
        conv2d_resample(x, torch.zeros(3, 3, 3, 3))


@pytest.mark.parametrize("up,down,flip_weight", [(2, 1, True), (2, 1, False), (1, 2, True)])
def test_conv2d_resample_gradcheck(up, down, flip_weight):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    f = setup_filter([1, 3, 3, 1]).double()

    def fn(x, w):
        return conv2d_resample(x, w, f=f, up=up, down=down, padding=1, flip_weight=flip_weight)

    assert torch.autograd.gradcheck(fn, (x, w), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, w), fast_mode=True)


# ---------------------------------------------------------------------------------------------
# modulated_conv2d, fma

MOD_CASES = [
    dict(up=1, k=3, padding=1, demodulate=True, noise=False, flip_weight=True),
    dict(up=1, k=3, padding=1, demodulate=False, noise=True, flip_weight=True),
    dict(up=1, k=1, padding=0, demodulate=False, noise=False, flip_weight=True),
    dict(up=1, k=3, padding=1, demodulate=True, noise=True, flip_weight=False),
    dict(up=2, k=3, padding=1, demodulate=True, noise=True, flip_weight=False),
    dict(up=2, k=3, padding=1, demodulate=True, noise=False, flip_weight=True),
    dict(up=2, k=3, padding=1, demodulate=False, noise=True, flip_weight=True),
]


@pytest.mark.parametrize("case", MOD_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_modulated_conv2d_fused_nonfused_naive(case):
    rng = np.random.default_rng(7)
    n, cin, cout, k, up = 3, 4, 5, case["k"], case["up"]
    x = rng.normal(size=[n, cin, 5, 6])
    weight = rng.normal(size=[cout, cin, k, k])
    styles = rng.normal(size=[n, cin]) + 1
    ho, wo = 5 * up, 6 * up
    noise = rng.normal(size=[n, 1, ho, wo]) if case["noise"] else None
    f = setup_filter([1, 3, 3, 1]).double()
    want = naive_modulated_conv2d(x, weight, styles, noise, f.numpy(), up, case["padding"],
                                  case["demodulate"], case["flip_weight"])
    outs = []
    for fused in (True, False):
        y = modulated_conv2d(_t(x), _t(weight), _t(styles), noise=None if noise is None else _t(noise), up=up,
                             padding=case["padding"], resample_filter=f, demodulate=case["demodulate"],
                             flip_weight=case["flip_weight"], fused_modconv=fused)
        assert y.shape == (n, cout, ho, wo)
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-9, atol=1e-10)
        outs.append(y)
    if case["demodulate"] and not case["noise"]:
        # Eq. 3 makes the output independent of the style's and weight's scale.
        y2 = modulated_conv2d(_t(x), _t(weight * 7), _t(styles * 3), up=up, padding=case["padding"],
                              resample_filter=f, flip_weight=case["flip_weight"])
        torch.testing.assert_close(y2, outs[0], rtol=1e-7, atol=1e-9)


def test_modulated_conv2d_float16_path_normalises():
    """Half precision normalises weight/styles first; the demodulated result is unchanged."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 6, 6, generator=gen)
    weight = torch.randn(3, 4, 3, 3, generator=gen) * 100
    styles = torch.randn(2, 4, generator=gen) * 100
    ref = modulated_conv2d(x, weight, styles, padding=1, fused_modconv=False)
    half = modulated_conv2d(x.half(), weight, styles, padding=1, fused_modconv=False)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("fused,up,demodulate", [(True, 1, True), (False, 2, True), (True, 2, False)])
def test_modulated_conv2d_gradcheck(fused, up, demodulate):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(2, 2, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    styles = (torch.randn(2, 2, dtype=torch.float64, generator=gen) + 1).requires_grad_(True)
    noise = torch.randn(2, 1, 3 * up, 3 * up, dtype=torch.float64, generator=gen)
    f = setup_filter([1, 3, 3, 1]).double()

    def fn(x, weight, styles):
        return modulated_conv2d(x, weight, styles, noise=noise, up=up, padding=1, resample_filter=f,
                                demodulate=demodulate, fused_modconv=fused)

    assert torch.autograd.gradcheck(fn, (x, weight, styles), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, weight, styles), fast_mode=True)


def test_fma():
    a, b, c = torch.randn(2, 3, 1), torch.randn(1, 3, 4), torch.randn(4)
    torch.testing.assert_close(fma(a, b, c), a * b + c)


def test_channels_last_survives_fma_and_resampling():
    """CPU inference keeps channels_last end to end (a lost layout costs a reorder per conv),
    with the same values as the NCHW computation."""
    from torch_utils.ops.conv2d_resample import conv2d_resample
    from torch_utils.ops.fma import fma
    from torch_utils.ops.upfirdn2d import setup_filter, upfirdn2d
    cl = torch.channels_last
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6)
    xc = x.contiguous(memory_format=cl)
    d, noise, w = torch.rand(2, 8, 1, 1), torch.randn(6, 6), torch.randn(8, 8, 3, 3)
    f = setup_filter([1, 3, 3, 1])
    with torch.no_grad():
        y = fma(xc, d, noise)
        assert y.is_contiguous(memory_format=cl)
        torch.testing.assert_close(y, x * d + noise)
        for kw in (dict(up=2), dict(down=2), dict()):
            z = conv2d_resample(xc, w, f=f, padding=1, **kw)
            assert z.is_contiguous(memory_format=cl), kw
            torch.testing.assert_close(z, conv2d_resample(x, w, f=f, padding=1, **kw), rtol=1e-5, atol=1e-5)
        z = upfirdn2d(xc, f, down=2, padding=1)
        assert z.is_contiguous(memory_format=cl)
        torch.testing.assert_close(z, upfirdn2d(x, f, down=2, padding=1))
