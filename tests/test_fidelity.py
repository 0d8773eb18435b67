"""--fidelity auto (apps/fidelity.py): the curve, the severity, the composition at
the input's size, the fit on calibration faces, the curve file; and alignment.paste_change (the
model's change pasted into a photo, its detail above R kept)."""
import json

import cv2
import numpy as np
import pytest

from dnnlib.util import UserError
from faces import alignment
from apps import fidelity as fid


def test_curve_keeps_sharp_inputs_and_falls_to_its_floor():
    c = fid.FidelityCurve(sharp_below=0.02, floor=0.3, scale=0.01, detail_low=0.0, detail_high=1.0)
    assert c(0.0) == 1.0 and c(0.02) == 1.0 and c(0.01, 0.5) == 1.0
    assert c(0.01, -0.2) == 0.3 and c(0.01, 1.3) == 0.3               # detail unlike a clean face's: the floor
    assert c(0.03) == pytest.approx(0.3 + 0.7 * np.exp(-1))
    assert 0.3 < c(0.2) < 0.3 + 1e-6
    values = [c(s) for s in np.linspace(0, 0.2, 50)]
    assert all(a >= b for a, b in zip(values, values[1:]))          # monotone


def test_severity_is_zero_at_q0_and_linear_in_the_residual():
    rng = np.random.RandomState(0)
    sharp = rng.randint(50, 200, (16, 16, 3)).astype(np.uint8)
    assert fid.severity(sharp, sharp) == 0.0
    a = fid.severity(np.clip(sharp.astype(int) + 10, 0, 255).astype(np.uint8), sharp)
    b = fid.severity(np.clip(sharp.astype(int) + 20, 0, 255).astype(np.uint8), sharp)
    assert a == pytest.approx(10 / 255) and b == pytest.approx(2 * a)


def test_choose_fixed_and_auto():
    sharp = np.zeros((8, 8, 3), np.uint8)
    assert fid.choose(0.25, fid.GENERIC_CURVE, None, sharp, 1.0).record() == {
        "fidelity": 0.25, "severity": None, "detail": None, "q_norm": 1.0, "severity_used": None}
    clean = fid.choose("auto", fid.GENERIC_CURVE, sharp, sharp, 0.0)
    assert clean.fidelity == 1.0 and clean.severity == 0.0
    with pytest.raises(ValueError):
        fid.choose("auto", fid.GENERIC_CURVE, None, sharp, 0.0)
    assert fid.check_fidelity("AUTO") == "auto" and fid.check_fidelity("0.5") == 0.5
    for bad in ("-0.1", "1.5", "sharp"):
        with pytest.raises(UserError, match="--fidelity"):
            fid.check_fidelity(bad)


def test_compose_at_the_model_size_and_above_it():
    rng = np.random.RandomState(1)
    x = rng.randint(0, 256, (16, 16, 3)).astype(np.uint8)
    out = rng.randint(0, 256, (16, 16, 3)).astype(np.uint8)
    assert np.array_equal(fid.compose(x, x, out, 0.0), out)                        # 0: G(w, 0) itself
    assert np.array_equal(fid.compose(x, x, out, 1.0), x)                          # 1: the input
    mixed = fid.compose(x, x, out, 0.25).astype(float)
    assert np.abs(mixed - (0.75 * out + 0.25 * x)).max() <= 0.5 + 1e-6
    # A 64 px input restored by a 16 px model: the input's fine texture survives at f > 0.
    big = rng.randint(60, 190, (64, 64, 3)).astype(np.uint8)
    from inversion.api import prepare_image
    small = prepare_image(big, 16, 3)
    brighter = np.clip(small.astype(int) + 12, 0, 255).astype(np.uint8)
    res = fid.compose(big, small, brighter, 0.5).astype(float)
    assert np.abs((res - big) - 6).max() <= 1.5                                    # half the change, the texture kept
    assert fid.compose(big, small, brighter, 0.0).shape == big.shape


def test_fit_curve_finds_the_threshold_and_helps_degraded_faces(tmp_path):
    rng = np.random.RandomState(2)
    clean = rng.randint(40, 215, (40, 8, 8, 3)).astype(np.float64)
    is_clean = np.arange(40) < 20
    noise = np.where(is_clean[:, None, None, None], 0, rng.normal(0, 20, clean.shape))
    inputs = np.clip(clean + noise, 0, 255)
    restored = np.clip(clean + rng.normal(0, 8, clean.shape), 0, 255)              # a fair restorer
    sev = np.where(is_clean, rng.uniform(0.0, 0.01, 40), rng.uniform(0.05, 0.1, 40))
    curve, rep = fid.fit_curve(sev, restored, inputs, clean, is_clean, details=np.zeros(40))
    assert 0.01 <= curve.sharp_below < 0.05 and rep["clean"] == 20 and rep["degraded_flagged"] == 20
    assert rep["mean_fidelity"]["clean"] == 1.0 and rep["mean_fidelity"]["degraded"] < 0.6
    assert rep["psnr_gain_db"]["degraded"] > 1.0 and rep["psnr_gain_db"]["clean"] == 0.0
    assert rep["severity_auc"] == 1.0 and rep["severity_used"]
    path = tmp_path / "net.pt"
    curve.save(fid.curve_path(str(path)), rep)
    loaded, where = fid.load_curve(str(path))
    assert loaded == curve and where.endswith("net-fidelity.json")
    notes = []
    assert fid.load_curve(str(tmp_path / "other.pt"), log=notes.append)[0] == fid.GENERIC_CURVE and notes
    (tmp_path / "bad-fidelity.json").write_text(json.dumps({"format": "x"}))
    with pytest.raises(UserError, match="not a fidelity curve"):
        fid.load_curve(str(tmp_path / "bad.pt"))


def test_fit_curve_ignores_a_severity_that_does_not_read_the_degradation(tmp_path):
    """Clean and degraded faces with the same severities (a q that does not read the degradation):
    the severity never lowers f, so a clean face with an unusually high severity is kept; the detail
    band still flags what it sees."""
    rng = np.random.RandomState(4)
    clean = rng.randint(40, 215, (40, 8, 8, 3)).astype(np.float64)
    is_clean = np.arange(40) < 20
    inputs = np.clip(clean + np.where(is_clean[:, None, None, None], 0, rng.normal(0, 20, clean.shape)), 0, 255)
    restored = np.clip(clean + rng.normal(0, 8, clean.shape), 0, 255)
    sev = rng.uniform(0.01, 0.03, 40)                                              # same law for both
    details = rng.uniform(0.4, 0.6, 40)
    details[30:] = 2.0                                                             # 10 degraded flagged by detail
    curve, rep = fid.fit_curve(sev, restored, inputs, clean, is_clean, details=details)
    assert 0.3 < rep["severity_auc"] < 0.8 and not rep["severity_used"] and curve.sharp_below == np.inf
    assert curve(1.0, 0.5) == 1.0                                                  # any severity: kept
    assert curve(0.0, 2.0) == curve.floor < 1.0 and rep["degraded_flagged"] == 10
    path = tmp_path / "n.pt"
    curve.save(fid.curve_path(str(path)), rep)
    assert fid.load_curve(str(path))[0] == curve                                   # infinity survives the JSON


def test_fit_curve_opens_the_side_where_restoring_hurts():
    """Degraded faces above the clean detail band are restored well, those below it badly (a
    model that cannot undo blur): the fit keeps the high side and opens the low one."""
    rng = np.random.RandomState(5)
    clean = rng.randint(40, 215, (40, 8, 8, 3)).astype(np.float64)
    kind = np.repeat(["clean", "noisy", "blurred"], [20, 10, 10])
    inputs = clean + np.where((kind == "noisy")[:, None, None, None], rng.normal(0, 20, clean.shape), 0)
    inputs = np.clip(inputs + np.where((kind == "blurred")[:, None, None, None], 3.0, 0), 0, 255)
    bad = (kind == "blurred")[:, None, None, None]
    restored = np.clip(clean + rng.normal(0, 4, clean.shape) + np.where(bad, rng.normal(0, 30, clean.shape), 0), 0, 255)
    details = np.select([kind == "noisy", kind == "blurred"], [2.0, -1.0], rng.uniform(0.4, 0.6, 40))
    curve, rep = fid.fit_curve(np.zeros(40), restored, inputs, clean, kind == "clean", details=details)
    assert curve.detail_low == -np.inf and np.isfinite(curve.detail_high)
    assert curve(0.0, -1.0) == 1.0 and curve(0.0, 2.0) < 1.0 and rep["degraded_flagged"] == 10
    assert rep["mean_fidelity"]["clean"] == 1.0 and rep["psnr_gain_db"]["degraded"] > 0


def test_roc_auc():
    assert fid.roc_auc([2, 3], [0, 1]) == 1.0 and fid.roc_auc([0, 1], [2, 3]) == 0.0
    assert fid.roc_auc([1, 1], [1, 1]) == 0.5 and fid.roc_auc([1, 3], [2]) == 0.5


def test_paste_change_keeps_the_photo_and_its_detail():
    rng = np.random.RandomState(3)
    photo = rng.randint(30, 220, (200, 220, 3)).astype(np.uint8)                   # fine texture everywhere
    m = np.array([[0.5, 0.0, -20.0], [0.0, 0.5, -10.0]])                            # a 128 px face, R = 64
    crop = rng.randint(20, 230, (64, 64, 3)).astype(np.uint8)                     # + 10 below clipping
    assert np.array_equal(alignment.paste_change(photo, crop, crop, m, 64), photo)   # no change: bit for bit
    brighter = np.clip(crop.astype(int) + 10, 0, 255).astype(np.uint8)
    inner = alignment.face_region(photo.shape, m, 64, inner=0.25)
    outer = ~alignment.face_region(photo.shape, m, 64)
    out = alignment.paste_change(photo, crop, brighter, m, 64, opacity=0.5).astype(int) - photo
    assert np.array_equal(out[outer], np.zeros_like(out[outer]))
    assert np.abs(out[inner] - 5).max() <= 3 and abs(np.median(out[inner]) - 5) <= 0.5   # the texture stays


def test_calibration_keeps_its_measurements_and_refits_from_them(tmp_path, monkeypatch):
    """calibrate(measurements=F) writes what the restorations gave; a second call reads F and
    fits the same curve without restoring anything."""
    from test_inversion_utils import sample_images, tiny_generator
    import evaluation.calibrate_fidelity as cal
    from inversion.models import Models
    G = tiny_generator()
    faces, _, _ = sample_images(G, 3, seed=3)
    npz = str(tmp_path / "m.npz")
    kw = dict(w_steps=1, pti_steps=1, perceptual="fallback", progress=False)
    curve, rep = cal.calibrate(Models.of(G), list(faces), measurements=npz, **kw)
    assert rep["faces"] == 12 and rep["clean"] == 3 and rep["keep"] == 3
    assert curve.min_pti_steps == 1 and rep["pti_steps"] == 1        # its severities hold for inversions this long
    monkeypatch.setattr(cal, "invert_images", lambda *a, **k: pytest.fail("restored again"))
    assert cal.calibrate(Models.of(G), list(faces), measurements=npz, **kw) == (curve, rep)
    with pytest.raises(UserError, match="holds 12 restorations, this calibration makes 8"):
        cal.calibrate(Models.of(G), list(faces[:2]), measurements=npz, **kw)   # other faces: not refit from it


def test_severity_is_read_only_from_inversions_as_long_as_the_calibrations():
    """A curve calibrated with 350 PTI steps: an inversion of 350 (or more) is judged by its
    severity; a shorter one (which reads inputs as more degraded) by the detail band alone; the
    record says which."""
    curve = fid.FidelityCurve(sharp_below=0.01, floor=0.2, scale=0.01, detail_low=-1.0, detail_high=1.0,
                              min_pti_steps=350)
    assert curve(0.05, 0.0, 350) < 0.3 and curve(0.05, 0.0, 500) == curve(0.05, 0.0) < 0.3
    assert curve(0.05, 0.0, 50) == 1.0 and curve(0.05, 2.0, 50) == 0.2       # out of the band: still restored
    assert not curve.reads_severity(50) and curve.reads_severity(350) and curve.reads_severity()
    assert not fid.FidelityCurve(float("inf"), 0.2, 0.01).reads_severity(1000)
    rng = np.random.RandomState(0)
    sharp = rng.randint(60, 200, (16, 16, 3)).astype(np.uint8)
    redrawn = np.clip(sharp.astype(int) + 30, 0, 255).astype(np.uint8)       # severity 30 / 255
    short = fid.choose("auto", curve, redrawn, sharp, 1.0, model_in=sharp, pti_steps=50)
    full = fid.choose("auto", curve, redrawn, sharp, 1.0, model_in=sharp, pti_steps=350)
    assert short.fidelity == 1.0 and short.record()["severity_used"] is False
    assert full.fidelity < 0.3 and full.record()["severity_used"] is True and short.severity == full.severity


def test_fit_curve_keeps_mild_faces_from_losing():
    """Mildly degraded faces (``keep``) whose severity lies above the clean faces' and which the
    restorer does not clean (it redraws them with their noise and errors of its own): without
    ``keep`` they are redrawn and lose; with it the threshold rises past their severities and the
    strongly degraded faces are still restored as much."""
    rng = np.random.RandomState(6)
    clean = rng.randint(40, 215, (60, 8, 8, 3)).astype(np.float64)
    kind = np.repeat(["clean", "strong", "mild"], 20)
    sigma = np.select([kind == "strong", kind == "mild"], [25.0, 3.0], 0.0)[:, None, None, None]
    inputs = np.clip(np.rint(clean + rng.normal(0, 1, clean.shape) * sigma), 0, 255)       # uint8 values, as calibrated
    restored = np.where((kind == "mild")[:, None, None, None], inputs, clean) + rng.normal(0, 8, clean.shape)
    restored = np.clip(restored, 0, 255)                                           # strong: cleaned; mild: not
    sev = np.select([kind == "strong", kind == "mild"], [rng.uniform(0.08, 0.12, 60), rng.uniform(0.02, 0.04, 60)],
                    rng.uniform(0.0, 0.01, 60))
    details = np.zeros(60)
    plain, _ = fid.fit_curve(sev[kind != "mild"], restored[kind != "mild"], inputs[kind != "mild"],
                             clean[kind != "mild"], (kind == "clean")[kind != "mild"], details=details[:40])
    mild = kind == "mild"
    f_plain = np.array([plain(v) for v in sev[mild]])[:, None, None, None]
    out = np.clip(np.rint((1 - f_plain) * restored[mild] + f_plain * inputs[mild]), 0, 255)
    assert (f_plain < 1).all() and (fid._psnr(out, clean[mild]) - fid._psnr(inputs[mild], clean[mild])).mean() < -0.3
    curve, rep = fid.fit_curve(sev, restored, inputs, clean, kind == "clean", details=details, keep=kind == "mild")
    assert rep["keep"] == 20 and rep["sharp_below_from_clean"] == pytest.approx(plain.sharp_below)
    assert rep["psnr_gain_db"]["keep"] >= 0 and rep["mean_fidelity"]["keep"] > 0.95
    assert np.median(sev[mild]) < curve.sharp_below < 0.08 and rep["severity_used"]
    assert rep["psnr_gain_db"]["degraded"] > 2.0 and rep["mean_fidelity"]["degraded"] < 0.6
    assert rep["mean_fidelity"]["clean"] == 1.0


def test_photo_mild_faces_are_mildly_degraded_at_the_models_size():
    """The calibration's photo-like draws: same size and type as the faces, seeded, each changed
    (blur, noise and JPEG at the face's photo size), and mildly: far closer to the clean face
    than the paper pipeline's draws."""
    import evaluation.calibrate_fidelity as cal
    from evaluation.heldout import degrade_faces
    rng = np.random.RandomState(0)
    faces = [cv2.GaussianBlur(rng.randint(0, 256, (64, 64, 3)).astype(np.uint8), (0, 0), 2.0) for _ in range(6)]
    mild = cal.photo_mild_faces(faces)
    assert all(m.shape == f.shape and m.dtype == np.uint8 for m, f in zip(mild, faces))
    assert all(np.array_equal(a, b) for a, b in zip(mild, cal.photo_mild_faces(faces)))
    err = lambda imgs: np.array([np.abs(a.astype(float) - f).mean() for a, f in zip(imgs, faces)])   # noqa: E731
    assert (err(mild) > 0.2).all() and err(mild).mean() < 0.5 * err(degrade_faces(faces, 123)).mean()
