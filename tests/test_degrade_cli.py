"""degrade.py: folder layout, records, resume, alpha, unreadable files, errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("cv2")
from click.testing import CliRunner  # noqa: E402

import degrade  # noqa: E402
from degradations import build_pipeline  # noqa: E402
from dnnlib import image_io  # noqa: E402
from dnnlib.util import read_jsonl  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def folder(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(src / "a.png")
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(src / "sub" / "g.jpg")
    rgba = rng.integers(0, 256, (24, 24, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(src / "sub" / "t.png")
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(src / "sub" / "t.jpg")
    (src / "broken.png").write_bytes(b"not an image")
    return src, rgba


def _run(args):
    return CliRunner().invoke(degrade.main, [str(a) for a in args], catch_exceptions=False)


def test_degrades_folder_keeps_layout_and_records(folder, tmp_path):
    src, rgba = folder
    out = tmp_path / "out"
    res = _run(["--input", src, "--outdir", out, "--pipeline", "paper", "--seed", 3, "--quiet"])
    assert res.exit_code == 0, res.output
    assert "skipped broken.png" in res.output and "4 written" in res.output
    files = sorted(image_io.list_images(str(out)))
    # t.jpg and t.png would share t.png, so both keep their extension.
    assert files == ["a.png", "sub/g.png", "sub/t.jpg.png", "sub/t.png.png"]
    recs = read_jsonl(str(out / "degradations.jsonl"))
    assert sorted(r["file"] for r in recs) == files
    for r in recs:
        assert set(r) == {"file", "source", "copy", "seed", "record"}
        assert r["record"]["pipeline"] == "paper" and r["record"]["mode"] == "relative"
        img = image_io.read_image(str(src / r["source"]))
        # The record replays the output exactly.
        pipe = build_pipeline("paper", min(img.shape[:2]))
        got = image_io.read_image(str(out / r["file"]))
        np.testing.assert_array_equal(pipe.replay_numpy(img, r["record"]), got)
        # ... and the seed redraws the record.
        assert pipe.sample(1, torch.Generator().manual_seed(r["seed"]))[0] == r["record"]
    rgb, alpha = image_io.read_image_alpha(str(out / "sub" / "t.png.png"))
    np.testing.assert_array_equal(alpha, rgba[..., 3])               # alpha kept
    assert image_io.read_image_alpha(str(out / "a.png"))[1] is None
    assert (src / "a.png").exists() and len(os.listdir(src)) == 3    # inputs untouched
    opts = json.loads((out / "degrade_options.json").read_text())
    assert opts["seed"] == 3 and opts["pipeline"]["name"] == "paper"


def test_resume_skips_existing_and_is_deterministic(folder, tmp_path):
    src, _ = folder
    out = tmp_path / "out"
    assert _run(["--input", src, "--outdir", out, "--seed", 1, "--quiet"]).exit_code == 0
    before = {f: (out / f).read_bytes() for f in image_io.list_images(str(out))}
    mtimes = {f: os.stat(out / f).st_mtime_ns for f in before}
    # Simulate an interruption: one output lost, one written without its record line.
    os.remove(out / "a.png")
    lines = (out / "degradations.jsonl").read_text().splitlines()
    keep = [ln for ln in lines if json.loads(ln)["file"] not in ("a.png", "sub/g.png")]
    (out / "degradations.jsonl").write_text("\n".join(keep) + "\n")
    res = _run(["--input", src, "--outdir", out, "--seed", 1, "--quiet"])
    assert res.exit_code == 0 and "1 written, 3 already there" in res.output
    after = {f: (out / f).read_bytes() for f in image_io.list_images(str(out))}
    assert after == before
    assert os.stat(out / "sub" / "g.png").st_mtime_ns == mtimes["sub/g.png"]
    recs = read_jsonl(str(out / "degradations.jsonl"))
    assert sorted(r["file"] for r in recs) == sorted(before)          # one line each, no duplicates
    # Another folder, same seed: same bytes; another seed: different.
    out2 = tmp_path / "out2"
    _run(["--input", src, "--outdir", out2, "--seed", 1, "--quiet"])
    assert {f: (out2 / f).read_bytes() for f in before} == before
    out3 = tmp_path / "out3"
    _run(["--input", src, "--outdir", out3, "--seed", 2, "--quiet"])
    assert (out3 / "a.png").read_bytes() != before["a.png"]


def test_copies_single_file_and_presets(folder, tmp_path):
    src, _ = folder
    out = tmp_path / "c"
    res = _run(["--input", src / "a.png", "--outdir", out, "--copies", 3, "--pipeline", "noise", "--quiet"])
    assert res.exit_code == 0, res.output
    assert image_io.list_images(str(out)) == ["a_0.png", "a_1.png", "a_2.png"]
    imgs = [image_io.read_image(str(out / f"a_{k}.png")) for k in range(3)]
    assert not np.array_equal(imgs[0], imgs[1])
    recs = read_jsonl(str(out / "degradations.jsonl"))
    assert [r["copy"] for r in recs] == [0, 1, 2] and len({r["seed"] for r in recs}) == 3
    assert all(r["record"]["ops"][0]["op"] == "gaussian_noise" for r in recs)


def test_json_spec_and_resolution_option(folder, tmp_path):
    src, _ = folder
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({"name": "j", "steps": [{"op": "jpeg", "quality": [10, 20]}]}))
    out = tmp_path / "j"
    res = _run(["--input", src, "--outdir", out, "--pipeline", spec, "--resolution", 512, "--quiet"])
    assert res.exit_code == 0, res.output
    recs = read_jsonl(str(out / "degradations.jsonl"))
    assert all(r["record"]["resolution"] == 512 and r["record"]["mode"] == "absolute" for r in recs)
    assert all(10 <= r["record"]["ops"][0]["quality"] <= 20 for r in recs)


def test_outdir_inside_input_excludes_outputs(folder):
    src, _ = folder
    out = src / "degraded"
    assert _run(["--input", src, "--outdir", out, "--quiet"]).exit_code == 0
    res = _run(["--input", src, "--outdir", out, "--quiet"])
    assert "0 written, 4 already there" in res.output
    assert not (out / "degraded").exists()


@pytest.mark.parametrize("args,match", [
    (["--input", "{tmp}/missing", "--outdir", "{tmp}/o"], "not found"),
    (["--input", "{src}", "--outdir", "{src}"], "must differ"),
    (["--input", "{src}", "--outdir", "{tmp}/o", "--pipeline", "blurry"], "unknown pipeline"),
    (["--input", "{src}", "--outdir", "{tmp}/o", "--pipeline", "{tmp}/bad.json"], "unknown op"),
    (["--input", "{tmp}/empty", "--outdir", "{tmp}/o"], "no images"),
])
def test_errors_exit_1_with_message(folder, tmp_path, args, match):
    src, _ = folder
    (tmp_path / "bad.json").write_text(json.dumps({"steps": [{"op": "sharpen"}]}))
    (tmp_path / "empty").mkdir()
    args = [a.format(tmp=tmp_path, src=src) for a in args]
    res = CliRunner().invoke(degrade.main, args + ["--quiet"])
    assert res.exit_code == 1
    assert res.output.startswith("error: ") and match in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_dry_run_writes_nothing(folder, tmp_path):
    src, _ = folder
    res = _run(["--input", src, "--outdir", tmp_path / "d", "--dry-run", "--quiet"])
    assert res.exit_code == 0 and "dry run: 5 images -> 5 outputs" in res.output
    assert not (tmp_path / "d").exists()


def test_script_runs_as_a_process(folder, tmp_path):
    src, _ = folder
    r = subprocess.run([sys.executable, os.path.join(ROOT, "degrade.py"), "--input", str(tmp_path / "nope"),
                        "--outdir", str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
