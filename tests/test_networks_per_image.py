"""Per-image parameters (batched pivotal tuning): a batch whose layers hold one copy of each
parameter per image renders each image as a network holding only that image's copy would."""
import copy

import pytest
import torch
from torch.func import functional_call

from conftest import assert_close_scaled
from test_inversion_utils import tiny_generator
from torch_utils.misc import per_image_rows
from torch_utils.ops.conv2d_resample import conv2d_resample, conv2d_resample_per_image
from torch_utils.ops.modulated_conv2d import modulated_conv2d
from torch_utils.ops.upfirdn2d import setup_filter

P = 3          # images
# The per-image and the shared paths sum in different orders (grouped vs plain convolutions, fused
# vs non-fused modulation): assert_close_scaled's float32-across-kernels bound (conftest), here 1e-4
# of the scale because a render chains about 15 such convolutions.
RENDER_REL = 1e-4


@pytest.mark.parametrize("k", [1, 2])            # k rows per image: 2 = the [sharp; degraded] halves
@pytest.mark.parametrize("case", ["1x1", "3x3", "3x3-up"])
def test_per_image_conv_is_each_rows_own_conv(k, case):
    gen = torch.Generator().manual_seed(0)
    kernel, up = {"1x1": (1, 1), "3x3": (3, 1), "3x3-up": (3, 2)}[case]
    x = torch.randn([k * P, 5, 6, 6], generator=gen)
    w = torch.randn([P, 7, 5, kernel, kernel], generator=gen)
    kw = dict(padding=kernel // 2, up=up, f=setup_filter([1, 3, 3, 1]) if up > 1 else None,
              flip_weight=up == 1)
    got = conv2d_resample_per_image(x, w, **kw)
    want = torch.cat([conv2d_resample(x[r:r + 1], w[r % P], **kw) for r in range(k * P)])
    assert_close_scaled(got, want)


@pytest.mark.parametrize("demodulate", [True, False])
def test_per_image_modulated_conv_matches_fused_shared(demodulate):
    gen = torch.Generator().manual_seed(1)
    k = 2
    x = torch.randn([k * P, 4, 8, 8], generator=gen)
    w = torch.randn([P, 6, 4, 3, 3], generator=gen)
    styles = torch.randn([k * P, 4], generator=gen)
    noise = torch.randn([k * P, 1, 8, 8], generator=gen)
    got = modulated_conv2d(x, w, styles, noise=noise, padding=1, demodulate=demodulate, gain=0.7)
    want = torch.cat([modulated_conv2d(x[r:r + 1], w[r % P], styles[r:r + 1], noise=noise[r:r + 1], padding=1,
                                       demodulate=demodulate, gain=0.7, fused_modconv=True) for r in range(k * P)])
    assert_close_scaled(got, want)


def test_per_image_rows_layout_and_errors():
    t = torch.arange(3.0)[:, None].expand(3, 2)        # [P=3, 2]: image i holds i
    assert torch.equal(per_image_rows(t, 6, 1)[:, 0], torch.tensor([0.0, 1, 2, 0, 1, 2]))   # row r: image r % P
    shared = torch.ones(2)
    assert per_image_rows(shared, 6, 1) is shared
    with pytest.raises(ValueError, match="does not fit"):
        per_image_rows(t, 4, 1)


@pytest.mark.parametrize("pair", [False, True])
def test_synthesis_with_per_image_parameters(pair):
    """Every parameter of the tuned blocks stacked per image (what ``functional_call`` swaps in
    during batched PTI), each image's copy perturbed differently: image i's render equals the render
    of a network holding image i's copy, for plain and for sharp + degraded pair renders."""
    G = tiny_generator()
    syn = G.synthesis
    gen = torch.Generator().manual_seed(2)
    copies = []
    for _ in range(P):
        s = copy.deepcopy(syn)
        with torch.no_grad():
            for p in s.parameters():
                p.add_(0.05 * p.abs().mean() * torch.randn(p.shape, generator=gen))
        copies.append(s)
    stacked = {name: torch.stack([dict(s.named_parameters())[name] for s in copies])
               for name, _ in syn.named_parameters()}
    ws = G.mapping(torch.randn([P, G.z_dim], generator=gen), None)
    q = torch.randn([P, G.q_dim], generator=gen)
    with torch.no_grad():
        got = functional_call(syn, stacked, (ws, q), dict(pair=pair, noise_mode="const"))
        want = [s(ws[i:i + 1], q[i:i + 1], pair=pair, noise_mode="const") for i, s in enumerate(copies)]
    if pair:
        for half in range(2):
            assert_close_scaled(got[half], torch.cat([w[half] for w in want]), rel=RENDER_REL)
    else:
        assert_close_scaled(got, torch.cat(want), rel=RENDER_REL)
