"""evaluation/model_report.py: the model card's measurements."""
import io
import json
import zipfile

import numpy as np
import PIL.Image
import pytest

from dnnlib.util import UserError
from evaluation import model_report as mr
from inversion.encoders import InversionEncoder
from test_inversion_utils import tiny_generator


def test_linear_r2_reads_linear_codes_and_rejects_noise():
    rng = np.random.RandomState(0)
    true = rng.randn(400, 4)
    mixed = true @ rng.randn(4, 4) + 0.5                     # an invertible linear code of q
    assert mr.linear_r2(mixed, true) > 0.999
    assert abs(mr.linear_r2(rng.randn(400, 4), true)) < 0.1   # unrelated predictions: ~0
    noisy = true + rng.randn(400, 4)                         # half the variance is noise: R^2 ~ 0.5
    assert 0.4 < mr.linear_r2(noisy, true) < 0.6
    with pytest.raises(UserError):
        mr.linear_r2(mixed[:5], true[:5])


def _heldout_zip(path, faces):
    with zipfile.ZipFile(path, "w") as z:
        for i, f in enumerate(faces):
            buf = io.BytesIO()
            PIL.Image.fromarray(f).save(buf, "PNG")
            z.writestr(f"00000/img{i:08d}.png", buf.getvalue())
    return str(path)


def test_report_sections_on_a_tiny_model(tmp_path):
    G = tiny_generator(resolution=16, q_dim=2)
    T = tiny_generator(seed=1, resolution=16, q_dim=0)
    E = InversionEncoder.for_generator(G, width=8)
    rng = np.random.RandomState(0)
    heldout = _heldout_zip(tmp_path / "faces.zip", [rng.randint(0, 256, (16, 16, 3)).astype(np.uint8) for _ in range(24)])
    rep = mr.model_report(G, E, heldout, G_teacher=T, probe_images=20, restore_images=2, q_samples=40,
                          teacher_seeds=3, w_steps=1, pti_steps=1,
                          sections=("teacher", "q_recovery", "probe", "restoration"))
    assert set(rep) >= {"teacher", "q_recovery", "probe", "restoration"}
    assert np.isfinite(rep["teacher"]["psnr_db_mean"]) and rep["teacher"]["seeds"] == [0, 1, 2]
    # An untrained q head answers ~0 for everything: no linear read-out of q.
    assert rep["q_recovery"]["r2"] < 0.3 and rep["q_recovery"]["norm_pred_mean"] < rep["q_recovery"]["norm_true_mean"]
    assert set(rep["probe"]["tasks"]) >= {"blurry_vs_sharp", "blur_5_levels"}
    assert rep["probe"]["setup"]["test_fraction"] == pytest.approx(0.3)     # the 70/30 split
    assert set(rep["probe"]["image_spectrum"]["tasks"]) == set(rep["probe"]["tasks"])   # the q-free reading beside it
    scores = rep["restoration"]["scores"]
    assert set(scores) == {"degraded", "nlm", "restored"} | {f"restored_fidelity_{f}" for f in mr.FIDELITIES}
    assert set(rep["restoration"]["fidelity_beats_input"]) == {str(f) for f in mr.FIDELITIES}
    assert all(-1 <= s["ssim"] <= 1 and np.isfinite(s["psnr_db"]) for s in scores.values())   # noise faces: SSIM may be < 0
    json.dumps(rep)                                          # JSON-ready
    with pytest.raises(UserError, match="need --encoder"):
        mr.model_report(G, None, heldout, sections=("probe",))


def test_swd_section_scores_each_generator_against_its_reals(tmp_path):
    # The teacher given here is G itself (its sharp mode), so the sharp scores must agree exactly;
    # the baseline (G's sharp images against degraded reals) differs from G's degraded mode.
    G = tiny_generator(resolution=16, q_dim=2)
    rng = np.random.RandomState(0)
    reals = _heldout_zip(tmp_path / "reals.zip", [rng.randint(0, 256, (16, 16, 3)).astype(np.uint8) for _ in range(64)])
    rep = mr.model_report(G, None, reals, G_teacher=G, sections=("swd",), reals=reals, baseline=G, swd_images=64)
    s = rep["swd"]
    assert s["qc_sharp"]["avg"] == s["teacher"]["avg"] and s["sharp_within_10pct_of_teacher"]
    assert s["baseline_degraded"]["avg"] != s["qc_degraded"]["avg"]
    assert all(np.isfinite(s[k]["avg"]) and s[k]["avg"] >= 0 for k in ("qc_sharp", "qc_degraded", "baseline_degraded"))
    assert mr.model_report(G, None, reals, sections=("swd",))["swd"]["skipped"].startswith("no --reals")
    json.dumps(rep)


def test_restore_crops_section_scores_restore_py_outputs(tmp_path):
    """model_report's restore_crops: restore_folder at its defaults and at fidelity 0 on degraded
    crops, clean crops through the defaults, every row scored against the clean faces; a rerun
    after a recalibration renders the new curve's defaults from the kept inversions."""
    from _applications import save_tiny_checkpoint
    from apps.fidelity import FidelityCurve, curve_path
    from evaluation import restore_report
    from evaluation.heldout import degrade_faces, nlm_denoise
    from inversion.models import load_models
    net = tmp_path / "G.pt"
    G = save_tiny_checkpoint(net)
    models = load_models(str(net), None, "cpu", announce=False)
    rng = np.random.RandomState(0)
    faces = [rng.randint(0, 256, (G.img_resolution, G.img_resolution, 3)).astype(np.uint8) for _ in range(3)]
    work = tmp_path / "work" / "restore_crops"

    def section():
        return restore_report.run_section("restore_crops", models, "", faces, degrade_faces(faces, 0), nlm_denoise, 0,
                                          inversion={"pti_steps": 1, "w_steps": 2, "perceptual": "fallback"},
                                          workdir=str(tmp_path / "work"))
    out = section()
    kept = restore_report.restore_records(str(work / ("clean-" + out["defaults_folder"])))
    assert len(kept) == 3 and all(0 <= r["fidelity"] <= 1 for r in kept)     # the records stay for a look
    assert out["images"] == 3 and set(out["scores"]) == {"degraded", "nlm", "restore_defaults", "restore_fidelity_0"}
    for row in out["scores"].values():
        assert np.isfinite(row["psnr_db"]) and -1 <= row["ssim"] <= 1
    assert 0 <= out["mean_fidelity_degraded"] <= 1 and 0 <= out["clean_unchanged"] <= 3
    assert isinstance(out["defaults_beat_input"], bool) and isinstance(out["fidelity_0_beats_input"], bool)
    assert np.isfinite(out["clean_fidelity_0_psnr_db"])

    FidelityCurve(sharp_below=-1.0, floor=0.5, scale=1e-9).save(curve_path(str(net)))    # every image: f = 0.5
    again = section()
    assert again["defaults_folder"] != out["defaults_folder"]
    assert again["scores"]["restore_fidelity_0"] == out["scores"]["restore_fidelity_0"]    # the same inversions
    for sub in (again["defaults_folder"], "clean-" + again["defaults_folder"]):
        recs = restore_report.restore_records(str(work / sub))
        assert len(recs) == 3 and all(r["reused_inversion"] and r["fidelity"] == 0.5 for r in recs)
    assert again["mean_fidelity_degraded"] == again["mean_fidelity_clean"] == 0.5 and again["clean_unchanged"] == 0


def test_photo_face_rows_score_each_placed_face_and_match_its_record():
    """restore_photos' per-face rows: each placed face scored over its own square against the clean
    photo, the fidelity taken from the record whose box overlaps it, None where no face was found."""
    from evaluation.composites import Composite
    from evaluation.restore_report import face_rows
    photo = np.full((40, 80, 3), 100, np.uint8)
    boxes = [[5.0, 5.0, 25.0, 25.0], [45.0, 10.0, 75.0, 40.0]]
    masks = []
    for x0, y0, x1, y1 in boxes:
        m = np.zeros(photo.shape[:2], bool)
        m[int(y0):int(y1), int(x0):int(x1)] = True
        masks.append(m)
    comp = Composite(name="p", photo=photo, boxes=boxes, masks=masks, scales=[0.5, 1.0], angles=[0.0, 0.0], seed=0)
    worse = photo.copy()
    worse[masks[1]] = 110                         # only the second face differs from the clean photo
    rows = face_rows(comp, {"degraded": worse, "restore_defaults": photo},
                     [{"box": [6.0, 5.0, 26.0, 25.0], "fidelity": 0.4}, {"box": [0.0, 30.0, 4.0, 34.0], "fidelity": 0.1}])
    assert [r["side_px"] for r in rows] == [20, 30] and [r["scale"] for r in rows] == [0.5, 1.0]
    assert rows[0]["fidelity"] == 0.4 and rows[1]["fidelity"] is None      # second face: no record overlaps it
    assert rows[0]["degraded"]["psnr_db"] > 90 and abs(rows[1]["degraded"]["psnr_db"] - 20 * np.log10(255 / 10)) < 1e-6
    assert rows[1]["restore_defaults"]["ssim"] == 1.0 and rows[1]["degraded"]["ssim"] < 1.0
