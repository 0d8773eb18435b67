"""The official release's intermediate pSp outputs (latent/NNNN.pt + org/) as a source of (w, q)
for restore.py (PTI from the pivot) and edit.py, and the release's set-distance edit."""
import json
import os
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _applications import save_tiny_checkpoint  # noqa: E402

import edit  # noqa: E402
import restore  # noqa: E402
from dnnlib.image_io import read_image, to_uint8_hwc, write_image  # noqa: E402
from dnnlib.util import UserError, read_jsonl  # noqa: E402
from apps import editing as E  # noqa: E402
from apps.latents import load_latents, render  # noqa: E402
from inversion.official_outputs import read_official_outputs  # noqa: E402


def _official_folder(root, G, n=3, seed=0):
    """What the release's pSp inference writes for n images: latent/NNNN.pt (codes [w_dim + q_dim],
    saved as a view of the batch, as the release does) and org/NNNN.png."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.cat([G.mapping.w_avg + 0.5 * torch.randn([n, G.w_dim], generator=gen),
                       torch.randn([n, G.q_dim], generator=gen)], dim=1)          # [n, w_dim + q_dim]
    os.makedirs(os.path.join(root, "latent"))
    for i in range(n):
        torch.save(codes[i], os.path.join(root, "latent", f"{i:04d}.pt"))
        img = (np.random.default_rng(i).random([G.img_resolution, G.img_resolution, 3]) * 255).astype(np.uint8)
        write_image(os.path.join(root, "org", f"{i:04d}.png"), img)
    return codes


def test_reader_pairs_by_sorted_order_and_refuses_unequal_counts(tmp_path):
    G = save_tiny_checkpoint(tmp_path / "g.pt")
    codes = _official_folder(str(tmp_path / "psp"), G)
    pivots = read_official_outputs(str(tmp_path / "psp"), G.w_dim, G.q_dim)
    assert [p.name for p in pivots] == ["0000", "0001", "0002"]
    assert torch.equal(torch.cat([pivots[1].w, pivots[1].q]), codes[1])
    lats = load_latents(G, str(tmp_path / "psp"))
    assert tuple(lats[2].w.shape) == (G.num_ws, G.w_dim) and torch.equal(lats[2].w[-1], codes[2, :G.w_dim])
    os.remove(tmp_path / "psp" / "org" / "0002.png")
    with pytest.raises(UserError, match="3 files in latent/ but 2 images"):
        read_official_outputs(str(tmp_path / "psp"), G.w_dim, G.q_dim)


def test_restore_starts_pti_from_the_official_pivots(tmp_path):
    """restore.py --input DIR/org --inversions DIR: every image restored under its own name; with
    --pti-steps 0 the output is G(w, 0) of the release's pivot, with PTI steps it is tuned from it."""
    net = tmp_path / "g.pt"
    G = save_tiny_checkpoint(net)
    psp = str(tmp_path / "psp")
    codes = _official_folder(psp, G)
    common = ["--network", str(net), "--input", os.path.join(psp, "org"), "--inversions", psp, "--device", "cpu",
              "--align", "none", "--perceptual", "fallback", "--quiet", "--fidelity", "0"]   # 0: G(w, 0) itself
    r = CliRunner().invoke(restore.main, common + ["--outdir", str(tmp_path / "r0"), "--pti-steps", "0"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    ws = codes[:, :G.w_dim].unsqueeze(1).repeat(1, G.num_ws, 1)
    sharp, _ = render(G, ws, None)
    want = to_uint8_hwc(sharp)
    for i in range(3):
        assert np.array_equal(read_image(str(tmp_path / "r0" / f"{i:04d}.png")), want[i])
    r = CliRunner().invoke(restore.main, common + ["--outdir", str(tmp_path / "r2"), "--pti-steps", "2"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    recs = read_jsonl(str(tmp_path / "r2" / "restore.jsonl"))
    assert sorted(x["file"] for x in recs) == ["0000.png", "0001.png", "0002.png"]
    assert all(x["w_steps"] == 0 and x["pti_steps"] >= 1 and not x["reused_inversion"] for x in recs)


def test_set_distance_edit_is_the_release_s_formula():
    """w_k = w + (d_k - w·n) n: afterwards w_k·n = d_k for every k, and the part of w along the
    boundary plane is kept; add mode moves by α whatever the start."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn([1, 512], generator=gen).repeat(14, 1)                 # [num_ws, w_dim], W space
    n = torch.randn([1, 512], generator=gen)
    n = (n / n.norm()).repeat(14, 1)
    d = list(E.OFFICIAL_DISTANCES)
    assert np.allclose(d, np.linspace(-3, 3, 10))
    out = E.edit_ws(w, n, d, mode="set-distance")                          # [10, 14, 512]
    w0, n0 = w[0].double().numpy(), n[0].double().numpy()
    ref = w0[None] + (np.linspace(-3, 3, 10) - w0 @ n0)[:, None] * n0[None]   # InterfaceGAN's linear_interpolate
    assert np.abs(out[:, 0].double().numpy() - ref).max() < 1e-5
    assert np.allclose((out * n).sum(-1).numpy(), np.array(d)[:, None], atol=1e-5)
    add = E.edit_ws(w, n, [1.0], mode="add")
    assert np.allclose((add[0] * n).sum(-1).numpy(), (w * n).sum(-1).numpy() + 1, atol=1e-5)


def test_edit_cli_set_distance_on_every_image_of_the_official_folder(tmp_path):
    """edit.py --inversions <release pSp folder> --direction <[1, w_dim] boundary> --mode
    set-distance: all images (the release's edit.py does only the first), 10 distances each."""
    net = tmp_path / "g.pt"
    G = save_tiny_checkpoint(net)
    psp = str(tmp_path / "psp")
    _official_folder(psp, G)
    b = np.random.default_rng(0).standard_normal([1, G.w_dim]).astype(np.float32)
    np.save(tmp_path / "smiling_boundary.npy", b / np.linalg.norm(b))
    out = tmp_path / "ed"
    r = CliRunner().invoke(edit.cli, ["--network", str(net), "--inversions", psp, "--direction",
                                      str(tmp_path / "smiling_boundary.npy"), "--mode", "set-distance",
                                      "--outdir", str(out), "--device", "cpu", "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    recs = read_jsonl(str(out / "edit.jsonl"))
    assert len(recs) == 30 and {x["mode"] for x in recs} == {"set-distance"}
    for name in ("0000", "0001", "0002"):
        files = os.listdir(out / name)
        assert sum(f.startswith("degraded_") for f in files) == 10 and sum(f.startswith("sharp_") for f in files) == 10
    assert json.dumps(recs[0]["strength"]) == "-3.0"
