"""edit.py and the direction library: SeFa, boundaries, monotonic edits that keep the degradation."""
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
from apps import directions as D  # noqa: E402
from apps import editing as E  # noqa: E402
from apps.latents import seed_latents  # noqa: E402
from apps.degradation_synthesis import novel_q, synthesize  # noqa: E402

STRENGTHS = [-3.0, -1.5, 0.0, 1.5, 3.0]
COARSE = [0, 1, 2, 3]        # w rows above the DegradBlock block's conv1 and toRGB (rows 4, 5)


def test_sefa_is_eigendecomposition_of_stacked_affines():
    G = tiny_qc_generator()
    vecs, vals = D.sefa(G, layers=[1, 2])
    aff = D.style_affines(G)
    a = torch.cat([fc.weight.double() / fc.weight.double().norm(dim=1, keepdim=True) for i in (1, 2) for fc in aff[i]])
    m = (a.T @ a).float()
    assert torch.allclose(vecs @ vecs.T, torch.eye(G.w_dim), atol=1e-4)
    assert torch.all(vals[:-1] >= vals[1:])
    assert torch.allclose(m @ vecs[0], vals[0] * vecs[0], atol=1e-3 * float(vals[0]))
    # row 1: b4.torgb + b8.conv0; row 2: b8.conv1; row 3: b8.torgb + b16.conv0; 4: b16.conv1; 5: b16.torgb
    assert [len(aff[i]) for i in range(G.num_ws)] == [1, 2, 1, 2, 1, 1]
    d = D.get_direction(G, "sefa", 0, layers=[1, 2])
    assert torch.allclose(d[1], vecs[0]) and d[0].abs().sum() == 0 and d[3:].abs().sum() == 0


def test_ganspace_components_explain_sampled_w():
    G = tiny_qc_generator()
    comps, std, mean = D.ganspace(G, num_samples=2000, seed=1)
    assert torch.allclose(comps @ comps.T, torch.eye(G.w_dim), atol=1e-4)
    assert torch.all(std[:-1] >= std[1:]) and std[0] > 0


def test_fit_boundary_recovers_a_hidden_attribute(tmp_path):
    rng = np.random.RandomState(0)
    hidden = rng.randn(16)
    hidden /= np.linalg.norm(hidden)
    ws = rng.randn(400, 6, 16) + 0.3 * rng.randn(400, 1, 16)
    labels = (ws.mean(axis=1) @ hidden > 0).astype(int)
    res = D.fit_boundary(ws, labels, test_fraction=0.25, seed=0)
    assert res["normal"].shape == (1, 16)
    assert abs(np.linalg.norm(res["normal"]) - 1) < 1e-5
    assert float(res["normal"][0] @ hidden) > 0.9          # points to label 1
    assert res["test_accuracy"] > 0.9 and res["n_test"] == 100
    path = D.save_boundary(str(tmp_path / "attr"), res, {"note": "t"})
    assert np.load(path).shape == (1, 16)
    info = json.load(open(str(tmp_path / "attr.json")))
    assert info["test_accuracy"] == res["test_accuracy"] and info["note"] == "t"
    # labels from a StyleGAN dataset.json with vector labels
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": [["a/x.png", [0, 1]], ["y.png", [1, 0]]]}))
    assert D.read_labels(str(tmp_path / "dataset.json"), attribute=1) == {"a/x.png": 1, "y.png": 0}


def _residual_change(std, ref):
    return float(np.mean(np.abs(np.asarray(std) / np.asarray(ref) - 1)))


@pytest.mark.parametrize("kind", ["boundary", "sefa"])
def test_edit_cli_monotonic_and_keeps_degradation(tmp_path, kind):
    net = tmp_path / "G.pt"
    G = save_tiny_checkpoint(net, noise_strength=2.0)
    args = ["--network", str(net), "--inversions", "seeds:1-2", "--layers", "0-3",
            "--strengths", ",".join(str(a) for a in STRENGTHS), "--outdir", str(tmp_path / "out"), "--device", "cpu", "--quiet"]
    if kind == "boundary":
        np.save(tmp_path / "b.npy", np.random.RandomState(3).randn(1, 16).astype(np.float32))
        args += ["--direction", str(tmp_path / "b.npy")]
    else:
        args += ["--sefa", "0"]
    r = CliRunner().invoke(edit.cli, args)          # no sub-command: 'edit' is the default
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    recs = [json.loads(line) for line in open(out / "edit.jsonl")]
    assert len(recs) == 2 * len(STRENGTHS)
    for name in ("seed0001", "seed0002"):
        grid = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / name / "grid.png"))
        assert grid.shape == (2 * 16, len(STRENGTHS) * 16, 3)
        sharp = [np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / name / f"sharp_{a:+.2f}.png"), np.float64)
                 for a in STRENGTHS]
        dist = [np.sqrt(((s - sharp[2]) ** 2).mean()) for s in sharp]
        # the image moves away from the unedited one monotonically on both sides of alpha = 0
        assert dist[0] > dist[1] > dist[2] == 0 < dist[3] < dist[4], dist
        # the degradation residual of the edited degraded image stays close to the unedited one:
        # much closer than the same content rendered with other quality codes
        mine = {r["strength"]: r["residual_std"] for r in recs if r["name"] == name}
        edit_change = np.mean([_residual_change(mine[a], mine[0.0]) for a in STRENGTHS if a != 0])
        lat = seed_latents(G, [int(name[4:])])[0]
        sh, dq = synthesize(G, lat, novel_q(G.q_dim, [10, 11, 12]))
        q_change = np.mean([_residual_change(E.residual_record(sh[0], dq[i])["std"], mine[0.0]) for i in range(3)])
        assert edit_change < 0.5 * q_change, (edit_change, q_change)
    # rerun: finished images are skipped
    r2 = CliRunner().invoke(edit.cli, args)
    assert r2.exit_code == 0 and "0 edited, 2 already there" in r2.output


def test_edit_keeps_q_exactly_in_the_render():
    G = tiny_qc_generator()
    lat = seed_latents(G, [5])[0]
    d = D.spread(G, torch.ones(16), layers=None)
    sharp, deg = E.edit_latent(G, lat, d, [0.0, 2.0])
    ref_s, ref_d = G.synthesis((lat.w + 2.0 * d)[None], q=lat.q[None], pair=True, noise_mode="const")
    assert torch.allclose(deg[1], ref_d[0], atol=1e-4) and torch.allclose(sharp[1], ref_s[0], atol=1e-4)


@pytest.mark.parametrize("args,needle", [
    (["--inversions", "seeds:0"], "exactly one of --direction"),
    (["--inversions", "seeds:0", "--sefa", "0", "--layers", "0-99"], "--layers must be indices"),
    (["--inversions", "seeds:0", "--direction", "missing.npy"], "direction file not found"),
    (["--sefa", "0"], "exactly one of --inversions"),
])
def test_edit_cli_bad_input_is_one_clean_line(tmp_path, args, needle):
    net = tmp_path / "G.pt"
    save_tiny_checkpoint(net)
    r = CliRunner().invoke(edit.cli, ["--network", str(net), "--outdir", str(tmp_path / "o"), "--device", "cpu"] + args)
    assert r.exit_code == 1 and needle in r.output and "Traceback" not in r.output, r.output


def test_fit_boundary_cli_recovers_a_hidden_direction(tmp_path):
    """Inversions labelled by the side of a hidden hyperplane in W: the CLI's boundary separates
    held-out images and points along the hidden normal."""
    from inversion.api import InversionResult, InversionStats, save_inversion
    net = tmp_path / "G.pt"
    G = save_tiny_checkpoint(net)
    with torch.no_grad():
        ws = G.mapping(torch.randn(80, G.z_dim, generator=torch.Generator().manual_seed(0)), None)
    hidden = torch.randn(G.w_dim, generator=torch.Generator().manual_seed(1))
    hidden /= hidden.norm()
    score = (ws[:, 0] - ws[:, 0].mean(0)) @ hidden
    labels = []
    for i, w in enumerate(ws):
        save_inversion(str(tmp_path / "inv" / f"img{i:03d}"),
                       InversionResult(w=w, q=torch.zeros(G.q_dim), delta=None, stats=InversionStats(), name=f"img{i:03d}"))
        labels.append([f"img{i:03d}.png", int(score[i] > 0)])
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels}))
    out = tmp_path / "hidden.npy"
    r = CliRunner().invoke(edit.cli, ["fit-boundary", "--network", str(net), "--inversions", str(tmp_path / "inv"),
                                      "--labels", str(tmp_path / "dataset.json"), "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    normal = np.load(out)
    assert normal.shape == (1, G.w_dim) and abs(np.linalg.norm(normal) - 1) < 1e-5
    info = json.load(open(tmp_path / "hidden.json"))
    assert info["test_accuracy"] >= 0.8 and info["images"] == 80
    assert float(normal[0] @ hidden.numpy()) > 0.6


def test_edit_cli_ganspace_moves_the_image_monotonically(tmp_path):
    net = tmp_path / "G.pt"
    save_tiny_checkpoint(net)
    r = CliRunner().invoke(edit.cli, ["--network", str(net), "--inversions", "seeds:3", "--ganspace", "0",
                                      "--strengths", "-2,-1,0,1,2", "--outdir", str(tmp_path / "out"),
                                      "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    from PIL import Image
    sharp = [np.asarray(Image.open(tmp_path / "out" / "seed0003" / f"sharp_{a:+.2f}.png"), np.float64)
             for a in (-2.0, -1.0, 0.0, 1.0, 2.0)]
    dist = [np.sqrt(((s - sharp[2]) ** 2).mean()) for s in sharp]
    assert dist[0] > dist[1] > dist[2] == 0 < dist[3] < dist[4], dist


def test_edit_cli_from_images_inverts_first_and_reuses(tmp_path):
    """--input: images are inverted into OUT/inversions, edited, and a rerun reuses both."""
    from PIL import Image
    net = tmp_path / "G.pt"
    G = save_tiny_checkpoint(net)
    (tmp_path / "in").mkdir()
    with torch.no_grad():
        for s in (1, 2):
            lat = seed_latents(G, [s])[0]
            img = G.synthesis(lat.w[None], q=lat.q[None], noise_mode="const")
            Image.fromarray((img[0] * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()).save(
                tmp_path / "in" / f"face{s}.png")
    args = ["--network", str(net), "--input", str(tmp_path / "in"), "--sefa", "0", "--strengths", "-1,0,1",
            "--w-steps", "5", "--pti-steps", "0", "--outdir", str(tmp_path / "out"), "--device", "cpu", "--quiet"]
    r = CliRunner().invoke(edit.cli, args)
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    for name in ("face1", "face2"):
        assert (out / "inversions" / name / "w.npy").is_file()
        for a in (-1.0, 0.0, 1.0):
            assert (out / name / f"sharp_{a:+.2f}.png").is_file() and (out / name / f"degraded_{a:+.2f}.png").is_file()
    assert len([json.loads(line) for line in open(out / "edit.jsonl")]) == 6
    r2 = CliRunner().invoke(edit.cli, args)
    assert r2.exit_code == 0 and "0 edited, 2 already there" in r2.output
