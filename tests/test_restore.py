"""restore.py end to end on a tiny QC generator: bad files, original sizes, resume, ground truth."""
import json
import os
import sys
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _applications import save_tiny_checkpoint  # noqa: E402

import restore  # noqa: E402
from dnnlib.image_io import read_image, write_image  # noqa: E402
from dnnlib.image_io import to_uint8_hwc  # noqa: E402

FAST = ["--pti-steps", "2", "--w-steps", "3", "--perceptual", "fallback", "--device", "cpu", "--quiet", "--fidelity", "0",
        "--align", "none"]          # random pixels of any size, taken as aligned crops


@pytest.fixture
def setup(tmp_path):
    net = tmp_path / "G.pt"
    G = save_tiny_checkpoint(net)
    rng = np.random.RandomState(0)
    inp, gt = tmp_path / "in", tmp_path / "gt"
    sizes = {"a.png": (40, 48), "sub/b.jpg": (16, 16), "sub/c.png": (64, 56)}
    for rel, (h, w) in sizes.items():
        clean = rng.randint(0, 256, [h, w, 3]).astype(np.uint8)
        write_image(str(gt / rel), clean)
        write_image(str(inp / rel), np.clip(clean.astype(int) + rng.randint(-20, 21, clean.shape), 0, 255).astype(np.uint8))
    (inp / "broken.png").write_bytes(b"not an image")
    return G, net, inp, gt, sizes


def test_restore_folder_end_to_end(tmp_path, setup):
    G, net, inp, gt, sizes = setup
    out = tmp_path / "out"
    args = ["--network", str(net), "--input", str(inp), "--outdir", str(out), "--gt", str(gt), "--compare",
            "--metrics", "psnr,ssim,lpips,niqe", "--lpips-backbone", "random"] + FAST
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = CliRunner().invoke(restore.main, args)
    assert r.exit_code == 0, (r.output, r.stderr)
    assert "skipped broken.png" in r.stderr and "1 unreadable" in r.output and "3 restored" in r.output
    for rel, (h, w) in sizes.items():
        png = os.path.splitext(rel)[0] + ".png"
        assert read_image(str(out / png)).shape == (h, w, 3)                 # original size
        assert read_image(str(out / "compare" / png)).shape == (h, 3 * w, 3)  # input | restored | gt
    assert not os.path.exists(inp / "a.restored.png") and sorted(os.listdir(inp)) == ["a.png", "broken.png", "sub"]
    recs = [json.loads(line) for line in open(out / "restore.jsonl")]
    bad = [x for x in recs if "error" in x]
    good = [x for x in recs if "error" not in x]
    assert len(bad) == 1 and bad[0]["source"] == "broken.png" and len(good) == 3
    for x in good:
        assert x["pti_steps"] == 2 and x["w_steps"] == 3 and x["psnr"] > 0 and x["perceptual_loss"]
        for kind in ("input", "restored"):
            assert set(x[kind]) == {"psnr", "ssim", "lpips", "niqe"} and x[kind]["psnr"] > 0
    summary = json.load(open(out / "restore-summary.json"))
    assert summary["input"]["psnr"]["n"] == 3 and summary["restored"]["ssim"]["n"] == 3
    assert summary["restored"]["lpips"]["n"] == 2          # 16x16 is too small for LPIPS: recorded as null
    assert abs(summary["input"]["psnr"]["mean"] - np.mean([x["input"]["psnr"] for x in good])) < 1e-9
    # rerun: finished images are skipped, the bad one is reported again
    mtime = os.path.getmtime(out / "a.png")
    r2 = CliRunner().invoke(restore.main, args)
    assert r2.exit_code == 0 and "0 restored" in r2.output and "3 already there" in r2.output, r2.output
    assert os.path.getmtime(out / "a.png") == mtime


def test_restore_reuses_inversions_and_renders_sharp(tmp_path, setup):
    G, net, inp, gt, sizes = setup
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    common = ["--network", str(net), "--input", str(inp / "sub" / "b.jpg")] + FAST
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = CliRunner().invoke(restore.main, common + ["--outdir", str(out1), "--keep-inversions"])
        assert r.exit_code == 0, (r.output, r.stderr)
        r = CliRunner().invoke(restore.main, common + ["--outdir", str(out2), "--inversions", str(out1 / "inversions")])
    assert r.exit_code == 0 and "1 restored (1 from --inversions)" in r.output, r.output
    assert np.array_equal(read_image(str(out1 / "b.png")), read_image(str(out2 / "b.png")))
    # the output is G_theta(w, 0): render it from the saved inversion (16x16 model, 16x16 input)
    from inversion.api import load_inversion
    from apps.latents import Latent, generator_for, render
    res = load_inversion(str(out1 / "inversions" / "b"))
    lat = Latent("b", res.w, res.q, res.delta)
    sharp = to_uint8_hwc(render(generator_for(G, lat), res.w[None], None)[0])[0]
    assert np.abs(sharp.astype(int) - read_image(str(out2 / "b.png")).astype(int)).max() <= 1


def test_restore_fidelity_mixes_the_input_back(tmp_path, setup):
    """--fidelity f: the input plus (1 - f) of what the model changed, upsampled to the input's size
    (fidelity.compose); 1 gives the input back; 0 is G(w, 0) resized; outside [0, 1] is refused."""
    from dnnlib.image_io import read_image as read
    from inversion.api import prepare_image
    from apps.fidelity import compose
    G, net, inp, gt, sizes = setup
    src = inp / "a.png"
    common = ["--network", str(net), "--input", str(src)] + FAST
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = CliRunner().invoke(restore.main, common + ["--outdir", str(tmp_path / "f0"), "--keep-inversions"])
        assert r.exit_code == 0, (r.output, r.stderr)
        inv = ["--inversions", str(tmp_path / "f0" / "inversions")]
        for f in ("0.25", "1"):
            r = CliRunner().invoke(restore.main, common + inv + ["--outdir", str(tmp_path / f"f{f}"), "--fidelity", f])
            assert r.exit_code == 0, (r.output, r.stderr)
        bad = CliRunner().invoke(restore.main, common + ["--outdir", str(tmp_path / "bad"), "--fidelity", "1.5"])
    x = read(str(src))
    sharp = read(str(tmp_path / "f0" / "inversions" / "a" / "sharp.png"))
    r0 = read(str(tmp_path / "f0" / "a.png"))
    assert not np.array_equal(r0, x) and r0.shape == x.shape
    assert np.array_equal(read(str(tmp_path / "f1" / "a.png")), x)
    mixed = read(str(tmp_path / "f0.25" / "a.png")).astype(float)
    expected = compose(x, prepare_image(x, sharp.shape[0], 3), sharp, 0.25).astype(float)
    assert np.array_equal(mixed, expected)
    up = x.astype(float) + 0.75 * (r0.astype(float) - read(str(tmp_path / "f1" / "a.png")))   # not this: detail kept
    assert np.abs(mixed - up).max() > 1
    rec = json.loads(open(tmp_path / "f0.25" / "restore.jsonl").readline())
    assert rec["fidelity"] == 0.25 and rec["severity"] is None and rec["q_norm"] > 0
    assert json.load(open(tmp_path / "f0.25" / "restore_options.json"))["fidelity"] == 0.25
    assert bad.exit_code == 2 and "--fidelity" in bad.output and not os.path.exists(tmp_path / "bad")


@pytest.mark.precision_auto
def test_restore_runs_float32_whatever_auto_picks(tmp_path, setup, monkeypatch):
    """Inversion and restoration have no precision option: they run float32 on every CPU (PTI's
    small gradients), so what ``auto`` picks elsewhere (QC_AUTO_PRECISION) changes no pixel."""
    G, net, inp, gt, sizes = setup
    outs = []
    for choice in ("bf16", "fp32"):
        monkeypatch.setenv("QC_AUTO_PRECISION", choice)
        out = tmp_path / choice
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = CliRunner().invoke(restore.main, ["--network", str(net), "--input", str(inp / "a.png"),
                                                  "--outdir", str(out)] + FAST)
        assert r.exit_code == 0, (r.output, r.stderr)
        outs.append(read_image(str(out / "a.png")))
    assert np.array_equal(outs[0], outs[1])


@pytest.mark.parametrize("args,needle", [
    (["--input", "nowhere"], "--input not found"),
    (["--metrics", "psnr"], "--metrics needs --gt"),
])
def test_restore_bad_input_is_one_clean_line(tmp_path, setup, args, needle):
    G, net, inp, gt, sizes = setup
    base = ["--network", str(net), "--outdir", str(tmp_path / "o")]
    if "--input" not in args:
        base += ["--input", str(inp)]
    r = CliRunner().invoke(restore.main, base + args + FAST)
    assert r.exit_code == 1 and needle in r.stderr and "Traceback" not in r.stderr, (r.output, r.stderr)
    r = CliRunner().invoke(restore.main, ["--network", str(net), "--input", str(inp), "--outdir", str(inp)] + FAST)
    assert r.exit_code == 1 and "must differ from --input" in r.stderr
