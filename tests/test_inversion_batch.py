"""Batched inversion (``PivotalTuner.tune_batch``, ``invert_images(batch_size=B)``): each image gets
what the one-image path gives it, stops on its own, is handed over as soon as it is finished, and
interrupted folder runs resume."""
import os

import numpy as np
import pytest
import torch

from test_inversion_utils import sample_images, tiny_generator

from dnnlib.image_io import write_image
from inversion import PTIOptions, invert_images
from inversion.delta import decode_entry
from inversion.models import Models
from inversion.objectives import PerceptualLoss, ReconstructionLoss
from inversion.pti import PivotalTuner

N_IMAGES = 8
STEPS = 8
# Threshold and lr chosen so the 8 images stop at different steps (0, 1 and 8 here); every
# perceptual value along the reference runs is >= 1.4e-2 away from the threshold, far more than
# float32 rounding between batch layouts (< 1e-4), so the stopping steps must agree exactly.
THRESHOLD = 0.45
PTI_LR = 1e-3
# Tolerances. Renders: a quarter of one uint8 level (2/255); observed <= 5e-4. Perceptual: observed
# <= 3e-5. Deltas: Adam moves every element by ~lr on its first steps whatever its gradient's
# size, so the few elements whose gradient is at float-rounding level (a handful in 10^4) may move
# either way: compare the whole delta in relative L2 (observed <= 1.4e-2), not element-wise.
RENDER_ATOL = 0.25 * 2 / 255
PERCEPTUAL_ATOL = 1e-4
DELTA_REL_L2 = 5e-2


@pytest.fixture(scope="module")
def setup():
    G = tiny_generator()
    images, ws, q = sample_images(G, N_IMAGES, seed=1)
    target = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    ws = ws + 0.3 * torch.randn(ws.shape, generator=torch.Generator().manual_seed(7))   # imperfect pivots
    loss_fn = ReconstructionLoss(PerceptualLoss("fallback"), 1.0, 1.0)
    tuner = PivotalTuner(G, loss_fn, PTIOptions(lpips_threshold=THRESHOLD, pti_lr=PTI_LR))
    ref = [tuner.tune(ws[i:i + 1], q[i:i + 1], target[i:i + 1], STEPS) for i in range(N_IMAGES)]
    return tuner, ws, q, target, ref


def _flat(delta):
    return torch.cat([decode_entry(e).flatten() for _, e in sorted(delta["tensors"].items())])


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_batch_matches_one_image_path(setup, batch):
    tuner, ws, q, target, ref = setup
    steps = [r.steps for r in ref]
    assert len(set(steps)) >= 3 and 0 in steps and STEPS in steps, steps     # the setup stops at different steps
    n = N_IMAGES if batch > 1 else 3
    got, order = [], []
    for lo in range(0, n, batch):
        hi = min(lo + batch, n)
        calls = []
        out = tuner.tune_batch(ws[lo:hi], q[lo:hi], target[lo:hi], STEPS,
                               on_done=lambda i, r, calls=calls: calls.append((i, r.steps)))
        assert sorted(i for i, _ in calls) == list(range(hi - lo))          # each image handed over once
        assert [s for _, s in calls] == sorted(s for _, s in calls)         # as soon as it stops
        got += out
        order += calls
    for i in range(n):
        r, b = ref[i], got[i]
        assert b.steps == r.steps, (i, b.steps, r.steps)
        assert abs(b.perceptual - r.perceptual) < PERCEPTUAL_ATOL
        assert (b.delta is None) == (r.delta is None)
        if r.delta is not None:
            d_ref, d = _flat(r.delta), _flat(b.delta)
            assert float((d - d_ref).norm() / d_ref.norm()) < DELTA_REL_L2
        assert float((b.degraded - r.degraded).abs().max()) < RENDER_ATOL
        assert float((b.sharp - r.sharp).abs().max()) < RENDER_ATOL
        assert b.seconds > 0


def test_invert_images_result_does_not_depend_on_batch():
    """Stage 1 (from w_avg and the same q start for every image) and stage 2 together."""
    G = tiny_generator()
    images, _, _ = sample_images(G, 3, seed=4)
    kw = dict(w_steps=6, pti_steps=3, progress=False, perceptual="fallback", config=PTIOptions(lpips_threshold=0.0))
    one = invert_images(G, list(images), batch_size=1, **kw)
    three = invert_images(G, list(images), batch_size=3, **kw)
    for a, b in zip(one, three):
        assert torch.allclose(a.w, b.w, atol=1e-4) and torch.allclose(a.q, b.q, atol=1e-4)
        assert a.stats.pti_steps == b.stats.pti_steps == 3
        assert b.stats.batch == 3 and a.stats.batch == 1
        assert np.abs(a.reconstruction.astype(int) - b.reconstruction.astype(int)).max() <= 1   # uint8 rounding


def _folder_of_renders(tmp_path, seed: int, n: int = 3):
    """A tiny generator's models and a folder ``in/`` of ``n`` of its renders (``0.png`` ...);
    returns ``(models, input folder, output folder)``."""
    G = tiny_generator()
    images, _, _ = sample_images(G, n, seed=seed)
    inp, out = tmp_path / "in", tmp_path / "out"
    for i, im in enumerate(images):
        write_image(str(inp / f"{i}.png"), im)
    return Models.of(G), inp, out


def test_folder_run_interrupted_mid_batch_resumes(tmp_path, monkeypatch):
    """Images are written as they finish: a run killed after the first one keeps it, and the rerun
    inverts only the others."""
    import apps.invert_folder as folder
    models, inp, out = _folder_of_renders(tmp_path, seed=5)
    opts = folder.InvertOptions().replace(pti_steps=2, w_steps=2, batch_size=3, progress=False, perceptual="fallback")
    saved, real_save = [], folder.save_inversion

    def save_then_die(path, res):
        real_save(path, res)
        saved.append(os.path.basename(path))
        raise KeyboardInterrupt

    monkeypatch.setattr(folder, "save_inversion", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        folder.invert_folder(models, str(inp), str(out), opts)
    assert len(saved) == 1 and os.path.isfile(out / saved[0] / "result.json")
    monkeypatch.setattr(folder, "save_inversion", real_save)
    counts = folder.invert_folder(models, str(inp), str(out), opts)
    assert counts == {"done": 2, "skipped": 1, "failed": 0}
    assert all(os.path.isfile(out / str(i) / "result.json") for i in range(3))


def test_restore_interrupted_mid_batch_resumes(tmp_path, monkeypatch):
    """restore_folder writes each restored image and its record when its inversion finishes: a
    run killed after the first record keeps it; the rerun restores only the other two."""
    import apps.restore as restore
    from dnnlib.util import read_jsonl
    models, inp, out = _folder_of_renders(tmp_path, seed=6)
    opts = restore.RestoreOptions().replace(pti_steps=2, w_steps=2, batch_size=3, perceptual="fallback", progress=False)
    real_append = restore.append_jsonl

    def append_then_die(path, rec):
        real_append(path, rec)
        raise KeyboardInterrupt

    monkeypatch.setattr(restore, "append_jsonl", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        restore.restore_folder(models, str(inp), str(out), opts)
    first = [r["file"] for r in read_jsonl(str(out / "restore.jsonl"))]
    assert len(first) == 1 and os.path.isfile(out / first[0])
    monkeypatch.setattr(restore, "append_jsonl", real_append)
    s = restore.restore_folder(models, str(inp), str(out), opts)
    assert s["skipped"] == 1 and s["written"] == 2
    assert sorted(r["file"] for r in read_jsonl(str(out / "restore.jsonl"))) == ["0.png", "1.png", "2.png"]


@pytest.mark.parametrize("tune_blocks", [1, 2])
def test_batch_with_frozen_blocks_matches_one_image_path(tune_blocks):
    """Frozen blocks are computed once and each image's saved state feeds the tuned blocks: with
    tune_blocks=1 the frozen part already holds the [sharp; degraded] split (the 8x8 block carries a
    DegradBlock), with 2 it ends before it."""
    G = tiny_generator()
    images, ws, q = sample_images(G, 3, seed=2)
    target = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    ws = ws + 0.3 * torch.randn(ws.shape, generator=torch.Generator().manual_seed(8))
    tuner = PivotalTuner(G, ReconstructionLoss(PerceptualLoss("fallback"), 1.0, 1.0),
                         PTIOptions(lpips_threshold=0.0, pti_lr=PTI_LR, tune_blocks=tune_blocks))
    frozen, _ = tuner._frozen(ws, q)                                   # pylint: disable=protected-access
    assert frozen.branched == (tune_blocks == 1)
    got = tuner.tune_batch(ws, q, target, 3)
    for i in range(3):
        ref = tuner.tune(ws[i:i + 1], q[i:i + 1], target[i:i + 1], 3)
        assert got[i].steps == ref.steps == 3
        tuned = {f"b{r}" for r in G.synthesis.block_resolutions[-tune_blocks:]}
        assert set(got[i].delta["tensors"]) == set(ref.delta["tensors"])
        assert {name.split(".")[1] for name in got[i].delta["tensors"]} <= tuned      # only the tuned blocks
        assert float((got[i].degraded - ref.degraded).abs().max()) < RENDER_ATOL
        assert float((got[i].sharp - ref.sharp).abs().max()) < RENDER_ATOL


def test_cpu_inversion_keeps_freed_memory():
    """On Linux with glibc the allocator setting takes effect (and is made once)."""
    import platform
    from torch_utils.misc import keep_freed_cpu_memory
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_cpu_memory() is expected and keep_freed_cpu_memory() is expected
