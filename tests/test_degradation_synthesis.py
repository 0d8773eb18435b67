"""Degradation synthesis: novel q, transfer, interpolation, scaling (library and edit.py degradation)."""
import json
import os
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _applications import save_tiny_checkpoint, tiny_qc_generator  # noqa: E402

import edit  # noqa: E402
from apps import degradation_synthesis as S  # noqa: E402
from apps.latents import seed_latents  # noqa: E402
from dnnlib.util import UserError  # noqa: E402


def test_q_operations_exact():
    q0, q1 = torch.randn(4), torch.randn(4)
    qi = S.interpolate_q(q0, q1, [0, 0.25, 1])
    assert torch.equal(qi[0], q0) and torch.equal(qi[2], q1)
    assert torch.allclose(qi[1], 0.75 * q0 + 0.25 * q1)
    assert torch.equal(S.transfer_q(q1)[0], q1)
    assert torch.equal(S.scale_q(q0, [0, 2])[1], 2 * q0) and S.scale_q(q0, [0])[0].abs().sum() == 0
    assert torch.equal(S.novel_q(4, [7])[0], torch.from_numpy(np.random.RandomState(7).randn(4)).float())
    with pytest.raises(UserError):
        S.interpolate_q(q0, q1, [1.5])


def test_transfer_and_interpolation_endpoints_render_exactly():
    G = tiny_qc_generator()
    src, ref = seed_latents(G, [1, 2])
    qs, tags = S.q_variants(src, "interpolate", [0.0, 0.5, 1.0], reference=ref)
    sharp, deg = S.synthesize(G, src, qs)
    own_s, own_d = G.synthesis(src.w[None], q=src.q[None], pair=True, noise_mode="const")
    _, trans_d = G.synthesis(src.w[None], q=ref.q[None], pair=True, noise_mode="const")
    assert torch.allclose(deg[0], own_d[0], atol=1e-5)          # alpha = 0: the source's own degradation
    assert torch.allclose(deg[2], trans_d[0], atol=1e-5)        # alpha = 1: the reference's
    assert torch.allclose(sharp[0], own_s[0], atol=1e-5)
    assert not torch.allclose(deg[1], deg[0], atol=1e-3)
    qt, _ = S.q_variants(src, "transfer", reference=ref)
    assert torch.equal(qt[0], ref.q)
    _, d_scale0 = S.synthesize(G, src, S.scale_q(src.q, [0.0]))
    assert torch.allclose(d_scale0[0], own_s[0], atol=1e-5)     # q scaled to 0 is the sharp image


def test_degradation_cli_transfer_interpolate_novel(tmp_path):
    net = tmp_path / "G.pt"
    G = save_tiny_checkpoint(net)
    base = ["degradation", "--network", str(net), "--device", "cpu", "--quiet"]
    out = tmp_path / "interp"
    r = CliRunner().invoke(edit.cli, base + ["--source", "seeds:1-2", "--reference", "seeds:9",
                                             "--alphas", "0,0.25,0.5,0.75,1", "--outdir", str(out)])
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in open(out / "degradation.jsonl")]
    ref_q = seed_latents(G, [9])[0].q
    for name in ("seed0001", "seed0002"):
        mine = [x for x in recs if x["name"] == name]
        assert [x["value"] for x in mine] == [0, 0.25, 0.5, 0.75, 1]
        src_q = seed_latents(G, [int(name[4:])])[0].q
        assert np.array_equal(np.float32(mine[0]["q"]), src_q.numpy())
        assert np.array_equal(np.float32(mine[-1]["q"]), ref_q.numpy())
    grid = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / "grid.png"))
    assert grid.shape == (2 * 16, 6 * 16, 3)                     # sharp + 5 alphas per source row
    r = CliRunner().invoke(edit.cli, base + ["--source", "seeds:3", "--reference", "seeds:9", "--outdir", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    rec = json.loads(open(tmp_path / "t" / "degradation.jsonl").readline())
    assert rec["mode"] == "transfer" and np.array_equal(np.float32(rec["q"]), ref_q.numpy())
    r = CliRunner().invoke(edit.cli, base + ["--source", "seeds:3", "--q-seeds", "4-6", "--outdir", str(tmp_path / "n")])
    assert r.exit_code == 0 and len(os.listdir(tmp_path / "n" / "seed0003")) == 5   # sharp, 3 novel, grid
    r = CliRunner().invoke(edit.cli, base + ["--source", "seeds:3", "--outdir", str(tmp_path / "x")])
    assert r.exit_code == 1 and "error: say what to do" in r.output
