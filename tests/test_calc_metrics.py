"""calc_metrics.py end to end: a fixture network with generator metrics, and two image folders."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from dnnlib.image_io import read_image, write_image
from metrics import image_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "..", "shared", "fixtures", "qc_stylegan", "network.pkl")
MINI = os.path.join(ROOT, "..", "shared", "datasets", "utkface64-mini.zip")


def run_cli(*args, env=None):
    """The script in a fresh process (true end to end)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, os.path.join(ROOT, "calc_metrics.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, env=full_env, timeout=300)


def run_inproc(*args, env=None):
    """The same command through click's runner (no interpreter start-up)."""
    from click.testing import CliRunner
    import calc_metrics
    res = CliRunner().invoke(calc_metrics.main, list(args), env=env)
    res.returncode = res.exit_code
    return res


@pytest.fixture(scope="module")
def faces32(tmp_path_factory):
    """96 utkface faces downscaled to the fixture generator's 32x32, as a folder."""
    if not os.path.isfile(MINI):
        pytest.skip("../shared/datasets/utkface64-mini.zip not present")
    import PIL.Image
    from training.dataset import ImageDataset
    ds = ImageDataset(MINI, max_size=96)
    out = tmp_path_factory.mktemp("faces32")
    for i in range(len(ds)):
        img = PIL.Image.fromarray(ds[i][0].transpose(1, 2, 0)).resize((32, 32), PIL.Image.LANCZOS)
        write_image(str(out / f"{i:03d}.png"), np.asarray(img))
    return str(out)


@pytest.mark.skipif(not os.path.isfile(FIXTURE), reason="../shared/fixtures/qc_stylegan/network.pkl not present")
def test_cli_generator_metrics_on_fixture_network(faces32, tmp_path):
    out = tmp_path / "run"
    res = run_cli("--network", FIXTURE, "--metrics", "fid64_full,swd64_degraded", "--data", faces32,
                  "--inception", "random", "--outdir", str(out), "--cache-dir", str(tmp_path / "cache"),
                  "--device", "cpu", "--quiet")
    assert res.returncode == 0, res.stderr
    for name in ("fid64_full", "swd64_degraded"):
        lines = [json.loads(l) for l in open(out / f"metric-{name}.jsonl")]
        assert len(lines) == 1
        rec = lines[0]
        assert rec["metric"] == name and rec["snapshot_pkl"] == "network.pkl"
        assert math.isfinite(rec["results"][name]) and rec["results"][name] > 0
        assert rec["total_time"] > 0
    assert {"swd64_degraded_res32", "swd64_degraded_res16"} <= set(lines[0]["results"])
    assert len(os.listdir(tmp_path / "cache")) == 1                     # FID real statistics cached
    assert "fid64_full" in res.stdout


def test_cli_errors_are_one_line(tmp_path):
    res = run_cli("--metrics", "fid2k_full")      # no --network: the shipped model, announced; no --data
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert lines[0].startswith("--network not given: using the shipped") and lines[-1].startswith("error: pass --data")
    res = run_cli("--network", str(tmp_path / "missing.pkl"))
    assert res.returncode == 1 and res.stderr.startswith("error:") and "missing.pkl" in res.stderr


@pytest.mark.skipif(not os.path.isfile(FIXTURE), reason="../shared/fixtures/qc_stylegan/network.pkl not present")
def test_cli_fid_without_inception_names_the_file(faces32, tmp_path):
    env = {"QC_CACHE_DIR": str(tmp_path / "qc"), "TORCH_HOME": str(tmp_path / "torch")}
    res = run_cli("--network", FIXTURE, "--metrics", "fid64_full", "--data", faces32, "--outdir", str(tmp_path),
                  "--device", "cpu", "--quiet", env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "inception-2015-12-05.pt" in res.stderr and str(tmp_path / "qc") in res.stderr


@pytest.fixture()
def folders(tmp_path):
    rng = np.random.RandomState(0)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for i, noise in enumerate((5, 15, 30)):
        a = rng.randint(0, 256, (100, 200, 3)).astype(np.uint8)
        b = np.clip(a + rng.randn(*a.shape) * noise, 0, 255).astype(np.uint8)
        write_image(str(gt / "sub" / f"{i}.png"), a)
        write_image(str(pred / "sub" / f"{i}.png"), b)
    write_image(str(pred / "extra.png"), a)                            # no ground truth
    return str(pred), str(gt)


def test_cli_compare_two_folders(folders, tmp_path):
    pred, gt = folders
    out = tmp_path / "res" / "summary.json"
    res = run_inproc("compare", "--pred", pred, "--gt", gt, "--metrics", "psnr,ssim,lpips", "--lpips-random",
                  "--channel", "y", "--crop-border", "2", "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    summary = json.load(open(out))
    records = [json.loads(l) for l in open(tmp_path / "res" / "summary.jsonl")]
    assert [r["file"] for r in records] == ["sub/0.png", "sub/1.png", "sub/2.png"]
    for r in records:
        p, g = read_image(os.path.join(pred, r["file"])), read_image(os.path.join(gt, r["file"]))
        assert r["psnr"] == pytest.approx(image_metrics.psnr(p, g, "y", 2), abs=1e-9)
        assert r["ssim"] == pytest.approx(image_metrics.ssim(p, g, "y", 2), abs=1e-9)
    assert records[0]["psnr"] > records[1]["psnr"] > records[2]["psnr"]
    assert records[0]["lpips"] < records[2]["lpips"]
    for name in ("psnr", "ssim", "lpips"):
        vals = [r[name] for r in records]
        assert summary[name] == {"mean": pytest.approx(np.mean(vals)), "std": pytest.approx(np.std(vals)), "n": 3}
    assert "psnr" in res.stdout and "mean" in res.stdout
    assert "1 file(s) without ground truth" in res.stderr


def test_cli_compare_niqe_without_gt_and_errors(folders, tmp_path):
    pred, _gt = folders
    out = tmp_path / "n.json"
    res = run_inproc("compare", "--pred", pred, "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    summary = json.load(open(out))
    assert list(summary) == ["niqe"] and summary["niqe"]["n"] == 4 and summary["niqe"]["mean"] > 0
    res = run_inproc("compare", "--pred", pred, "--metrics", "psnr")
    assert res.returncode == 1 and "need ground truth" in res.stderr
    res = run_inproc("compare", "--pred", pred, "--gt", _gt, "--metrics", "lpips",
                  env={"TORCH_HOME": str(tmp_path / "empty")})
    assert res.returncode == 1 and "alexnet-owt-7be5be79.pth" in res.stderr and "Traceback" not in res.stderr


def test_ground_truth_matching_is_one_rule(tmp_path):
    """calc_metrics.py compare and restore.py --gt pair files the same way (metrics.compare.GroundTruth)."""
    from metrics.compare import GroundTruth
    img = np.zeros((8, 8, 3), np.uint8)
    for rel in ("a/0001.jpg", "b/x.png", "c/y.png", "c/y.jpg"):
        write_image(str(tmp_path / rel), img)
    truth = GroundTruth(str(tmp_path))
    assert truth.match("b/x.png") == "b/x.png"                 # same relative path
    assert truth.match("a/0001.png") == "a/0001.jpg"           # the one file with that path but the extension
    assert truth.match("c/y.webp") is None                     # two candidates: no guess
    assert truth.match("0001.png") is None                     # another folder is another image


def test_image_scorer_notes_what_an_image_is_too_small_for():
    from metrics.compare import ImageScorer
    rng = np.random.RandomState(0)
    a, b = (rng.randint(0, 256, (32, 32, 3)).astype(np.uint8) for _ in range(2))
    values, notes = ImageScorer(["psnr", "ssim", "niqe"]).measure(a, b)
    assert values["psnr"] == pytest.approx(image_metrics.psnr(a, b)) and values["ssim"] == pytest.approx(image_metrics.ssim(a, b))
    assert values["niqe"] is None and len(notes) == 1 and notes[0].startswith("niqe: ")
