"""The quality-code probe (paper Sec. 4.6) on a tiny setup: accuracies above chance."""
import json
import os
import sys
import warnings

import numpy as np
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _applications import save_tiny_checkpoint, tiny_qc_generator  # noqa: E402

from evaluation import probe  # noqa: E402


def test_degrade_pool_is_balanced_and_blurs():
    G = tiny_qc_generator()
    imgs = probe.sample_clean_images(G, 12)
    levels = probe.family_levels("blur", 16, [32, 64])
    out, ids = probe.degrade_pool(imgs, levels, seed=0)
    assert sorted(np.bincount(ids).tolist()) == [4, 4, 4]
    hf = lambda im: np.abs(np.diff(im.astype(float), axis=1)).mean()
    for im, o, i in zip(imgs, out, ids):
        assert (i == 0 and np.array_equal(im, o)) or (i > 0 and hf(o) < hf(im))


# ~2 s with one thread (48 stage-1 inversions of a 16x16 generator)
def test_probe_cli_accuracies_above_chance(tmp_path):
    net = tmp_path / "G.pt"
    save_tiny_checkpoint(net, noise_strength=1.0)
    out = tmp_path / "probe.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = CliRunner().invoke(probe.main, ["--network", str(net), "--samples", "48", "--w-steps", "15",
                                            "--batch", "48", "--device", "cpu", "--out", str(out),
                                            "--blur-sigmas", "16,32,48,64,80"])
    assert r.exit_code == 0, r.output
    rep = json.load(open(out))
    assert set(rep["tasks"]) == {"blurry_vs_sharp", "blur_5_levels"}
    for name, st in rep["tasks"].items():
        assert st["test_accuracy"] > st["chance"], (name, st)
        acc = st["split_accuracies"]          # five seeded splits of the same codes, the reported one first
        assert len(acc) == probe.SPLITS and acc[0] == st["test_accuracy"]
        assert min(acc) <= st["split_mean"] <= max(acc) and st["split_mean"] == np.mean(acc)
    assert rep["paper"]["blurry_vs_sharp"] == 0.979
    assert [lv["level"] for lv in rep["clean_vs_each_level"]["blur"]] == [1, 2, 3, 4, 5]


def test_task_splits_vary_the_split_only():
    """evaluate_task_splits: split k is evaluate_task at seed + k on the same codes; a q that
    reads the levels perfectly scores 1.0 on every split, a noise q varies around chance."""
    rng = np.random.RandomState(1)
    ids = np.arange(300) % 6
    perfect = np.eye(6)[ids] * 5.0 + 0.01 * rng.normal(size=(300, 6))
    st = probe.evaluate_task_splits(perfect, ids, [1, 2, 3, 4, 5], seed=3, test_fraction=0.3)
    assert st["split_accuracies"] == [1.0] * probe.SPLITS and st["split_mean"] == 1.0
    noise = rng.normal(size=(300, 4))
    st = probe.evaluate_task_splits(noise, ids, None, seed=3, test_fraction=0.3)
    assert st["split_accuracies"][2] == probe.evaluate_task(noise, ids, None, 5, 0.3)["test_accuracy"]
    assert len(set(st["split_accuracies"])) > 1 and 0.3 < st["split_mean"] < 0.7


def test_clean_vs_each_level_finds_the_levels_q_reads():
    """A q that reads only levels 3 and up: those score 1.0 against sharp, levels 1-2 stay near chance."""
    rng = np.random.RandomState(0)
    ids = np.arange(600) % 6
    q = rng.normal(size=(600, 4))
    q[:, 0] += 10.0 * (ids >= 3)
    per = probe.clean_vs_each_level(q, ids, seed=0, test_fraction=0.3)
    acc = {lv["level"]: lv["test_accuracy"] for lv in per}
    assert [lv["level"] for lv in per] == [1, 2, 3, 4, 5]
    assert acc[3] == acc[4] == acc[5] == 1.0
    assert acc[1] < 0.7 and acc[2] < 0.7, acc


def test_spectrum_features_read_blur_not_brightness():
    """The q-free baseline: a blur lowers the high bands relative to the lowest one; a brightness
    and contrast change moves only the last feature (the lowest band's own level); small images
    get R // 2 bands, none of them empty."""
    rng = np.random.RandomState(0)
    img = rng.randint(40, 216, size=(64, 64, 3)).astype(np.uint8)
    blurred = probe.degrade_pool([img], [probe.blur_op(2.0)], seed=0)[0][0]
    f, fb = probe.spectrum_features([img, blurred])
    assert f.shape == (probe.SPECTRUM_BANDS,)
    assert fb[probe.SPECTRUM_BANDS // 2:-1].mean() < f[probe.SPECTRUM_BANDS // 2:-1].mean() - 1.0
    brighter = np.clip(img.astype(float) * 0.5 + 60, 0, 255).astype(np.uint8)
    g = probe.spectrum_features([brighter])[0]
    assert np.allclose(g[:-1], f[:-1], atol=0.05) and g[-1] < f[-1] - 1.0
    small = probe.spectrum_features([img[:16, :16]])
    assert small.shape == (1, 8) and np.isfinite(small).all()


def test_probe_baseline_runs_the_same_tasks_on_the_spectrum():
    """run_probe(baseline=True): the spectrum reading has the tasks and per-level rows of q's, on
    the same pool; clearly blurred textures are told from sharp ones by the spectrum alone."""
    G = tiny_qc_generator()
    rng = np.random.RandomState(2)
    imgs = [rng.randint(0, 256, size=(16, 16, 3)).astype(np.uint8) for _ in range(36)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = probe.run_probe(G, imgs, w_steps=1, blur_sigmas=[32.0, 64.0], seed=0, test_fraction=0.3,
                              progress=False, baseline=True)
    spec = rep["image_spectrum"]
    assert set(spec["tasks"]) == set(rep["tasks"]) == {"blurry_vs_sharp", "blur_2_levels"}
    assert spec["tasks"]["blurry_vs_sharp"]["split_mean"] == 1.0
    assert [lv["level"] for lv in spec["clean_vs_each_level"]["blur"]] == [1, 2]
    assert "image_spectrum" not in probe.run_probe(G, imgs[:12], w_steps=0, blur_sigmas=[32.0, 64.0], progress=False)


def test_level_readability_learns_a_readable_level_only():
    """The learned reader: on noise textures a 1-px blur is told from sharp on held-out textures;
    with identical classes (sigma so small the kernel is the identity) it stays at chance."""
    from evaluation import level_readability as lr
    rng = np.random.RandomState(0)
    tex = [rng.randint(0, 256, size=(16, 16, 3)).astype(np.uint8) for _ in range(160)]
    res = lr.train_reader(tex[:128], tex[128:], sigma=1.0, epochs=4, batch=32, lr=3e-3, progress=False)
    assert res.best_heldout_accuracy > 0.9 and res.epochs[-1].train_loss < 0.5
    assert [e.epoch for e in res.epochs] == [1, 2, 3, 4]
    same = lr.train_reader(tex[:128], tex[128:], sigma=0.05, epochs=2, batch=32, progress=False)
    assert abs(same.epochs[-1].heldout_balanced_accuracy - 0.5) < 0.05     # identical images: (near) one answer for both
