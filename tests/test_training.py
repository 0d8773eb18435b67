"""training_loop / train.py: smoke training with snapshots, grids, stats; exact resume;
train-blocks freezing; divergence stop; options and CLI (the 2-rank run: test_training_ddp.py)."""
import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch

from dnnlib.util import UserError, read_jsonl
from metrics.training_metrics import TRAINING_METRICS
from training import checkpoint as ckpt
from training.launch import launch, resolve_options
from training.training_loop import training_loop

from _training_data import make_blobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return make_blobs(tmp_path_factory.mktemp("data"))


def _opts(blobs, **kw):
    cli = dict(data=blobs.data, cfg="smoke", resume=blobs.stock, workers=0, device="cpu", tick_kimg=0.032, snap=1,
               precision="fp32")  # fp32 pinned: 'auto' follows the CPU (bf16 on AMX); tests must not depend on which CPU runs them
    cli.update(kw)
    return resolve_options(cli, metric_runner=TRAINING_METRICS)


def _states(path):
    nets = ckpt.load_network(path)
    return {k: nets[k].state_dict() for k in ("G", "G_ema", "D", "D_degraded")}, nets["training_state"]


def test_smoke_run_outputs_and_exact_resume(blobs, tmp_path):
    # Uninterrupted: 12 steps of 8 images, a tick (and snapshot) every 4 steps.
    run_a = launch(_opts(blobs, kimg=0.096), str(tmp_path / "a"))
    assert os.path.basename(run_a).startswith("00000-blobs16-smoke-")
    names = sorted(os.listdir(run_a))
    for expected in ["training_options.json", "stats.jsonl", "reals.png", "fakes_init.png",
                     "network-snapshot-000000.032.pt", "network-snapshot-000000.096.pt", "fakes000000.096.png"]:
        assert expected in names, names
    stats = read_jsonl(os.path.join(run_a, "stats.jsonl"))
    assert [s["Progress/tick"] for s in stats] == [1, 2, 3]
    assert {"Loss/G/adv_sharp", "Loss/G/adv_degraded", "Loss/G/kd", "Loss/D/r1", "Loss/Dd/real"} <= set(stats[0])
    assert all(np.isfinite(s["Loss/G/kd"]["mean"]) for s in stats)
    grid = np.asarray(PIL.Image.open(os.path.join(run_a, "fakes000000.096.png")))
    assert grid.shape == (8 * 16, 16 * 16, 3)              # 8 rows of 8 sharp/degraded pairs
    options = json.load(open(os.path.join(run_a, "training_options.json")))
    assert options["cfg"] == "smoke" and options["kd_weight"] == 3 and options["q_dim"] == 4

    # Interrupted after 8 steps, then resumed from its snapshot to the same length.
    out_b = training_loop(str(tmp_path / "b"), _opts(blobs, kimg=0.064))
    assert out_b["snapshot"].endswith("network-snapshot-000000.064.pt")
    out_c = training_loop(str(tmp_path / "c"), _opts(blobs, kimg=0.096, resume=out_b["snapshot"]))
    final_a, state_a = _states(os.path.join(run_a, "network-snapshot-000000.096.pt"))
    final_c, state_c = _states(out_c["snapshot"])
    assert state_c["cur_nimg"] == 96 and state_c["batch_idx"] == 12
    for net in final_a:
        for name, value in final_a[net].items():
            assert torch.equal(value, final_c[net][name]), f"{net}.{name} differs after resume"
    assert state_a["augment_p"] == state_c["augment_p"] > 0      # ADA moved p the same way
    # The teacher was frozen; the mapping network and lower blocks too (train_blocks 3 of 3 here,
    # so check G actually changed relative to the stock start).
    stock = ckpt.load_network(blobs.stock)["G"].state_dict()
    assert not torch.equal(stock["synthesis.b16.conv1.bias"], final_a["G"]["synthesis.b16.conv1.bias"][:16])


def test_train_blocks_freeze_mapping_and_lower_blocks(blobs, tmp_path):
    out = training_loop(str(tmp_path / "f"), _opts(blobs, kimg=0.016, train_blocks=1, snap=0))
    trained = ckpt.load_network(out["snapshot"])
    stock = ckpt.load_network(blobs.stock)["G"].state_dict()
    for net in ("G", "G_ema"):
        state = trained[net].state_dict()
        assert torch.equal(state["mapping.fc0.weight"], stock["mapping.fc0.weight"])
        assert torch.equal(state["synthesis.b8.conv1.weight"][:32], stock["synthesis.b8.conv1.weight"])
        assert not torch.equal(state["synthesis.b16.conv0.weight"], stock["synthesis.b16.conv0.weight"])
    assert trained["training_state"]["train_blocks"] == 1


def test_train_blocks_degrad_keeps_the_sharp_path_exactly(blobs, tmp_path):
    # --train-blocks degrad: only the DegradBlocks (convq, conv1's extra rows) learn, so every
    # tensor G(w, 0) reads stays the stock teacher's bit for bit, and the sharp D never trains.
    opts = _opts(blobs, kimg=0.032, train_blocks="degrad", snap=0)
    assert opts.loss.kd_weight == 0                 # nothing left for distillation to keep
    out = training_loop(str(tmp_path / "d"), opts)
    start = training_loop(str(tmp_path / "z"), _opts(blobs, kimg=0.008, train_blocks="degrad", snap=0, lr=0.0))
    trained, initial = ckpt.load_network(out["snapshot"]), ckpt.load_network(start["snapshot"])
    stock = ckpt.load_network(blobs.stock)["G"].state_dict()
    degrad_moved = []
    for net in ("G", "G_ema"):
        for name, value in trained[net].state_dict().items():
            if ".convq." in name:
                if name.endswith(".weight"):         # (its buffers are fixed filters)
                    degrad_moved.append(not torch.equal(value, initial[net].state_dict()[name]))
                continue
            ref = stock[name]                   # widened conv1: its first rows are the stock ones
            head = value[:ref.shape[0]] if ref.ndim else value
            assert torch.equal(head, ref), f"{net}.{name}: the sharp path moved"
            if value.shape != ref.shape:
                degrad_moved.append(not torch.equal(value[ref.shape[0]:],
                                                    initial[net].state_dict()[name][ref.shape[0]:]))
    assert all(degrad_moved) and len(degrad_moved) > 4, "a DegradBlock parameter did not learn"
    for name, value in trained["D"].state_dict().items():
        assert torch.equal(value, initial["D"].state_dict()[name]), f"the sharp D trained ({name})"
    assert trained["training_state"]["train_blocks"] == "degrad"
    stats = read_jsonl(os.path.join(os.path.dirname(out["snapshot"]), "stats.jsonl"))
    assert stats and all("Loss/Dd/real" in s and "Loss/D/real" not in s and "Loss/G/adv_sharp" not in s
                         for s in stats)


def test_degradation_params_mask_the_sharp_rows_of_a_frozen_loaded_generator(blobs):
    # Files load frozen (requires_grad False, as --init gives them): the hook must still attach,
    # and a backward must leave conv1's x_c rows without gradient while its extra rows get one.
    from training.training_loop import degradation_params
    G = ckpt.widen_generator(ckpt.load_network(blobs.stock)["G"], q_dim=4).requires_grad_(False)
    params = degradation_params(G)
    z, q = torch.randn(2, G.z_dim), torch.randn(2, 4)
    G(z, None, q=q).square().mean().backward()
    for res in G.synthesis.degrad_resolutions:
        block = getattr(G.synthesis, f"b{res}")
        c = block.convq.out_channels
        for p in (block.conv1.weight, block.conv1.bias):
            assert any(p is x for x in params)
            assert p.grad[:c].abs().max() == 0 and p.grad[c:].abs().max() > 0


def test_degraded_reals_baseline_trains_a_plain_g_on_degraded_images(blobs, tmp_path, monkeypatch):
    # --degraded-reals (plain runs): the reals D sees are the degradation pipeline's outputs
    # (Table 1's baseline: a StyleGAN2 fine-tuned on degraded images). The degrader is replaced
    # by a marker (every pixel -0.25) so "D saw degraded reals" is an exact check.
    from training import training_loop as tl
    from training.launch import run_description
    monkeypatch.setattr(tl.RealDegrader, "__call__", lambda self, u8, seed: torch.full(u8.shape, -0.25))
    seen = []
    original_d = tl.QCLoss._d_main
    monkeypatch.setattr(tl.QCLoss, "_d_main",
                        lambda self, real_img, **kw: seen.append(real_img.clone()) or original_d(self, real_img=real_img, **kw))
    opts = _opts(blobs, kimg=0.016, q_dim=0, degraded_reals=True, snap=0)
    assert "-plain-degradedreals-" in run_description(opts)
    training_loop(str(tmp_path / "b"), opts)
    assert seen and all(torch.equal(r, torch.full_like(r, -0.25)) for r in seen)
    with pytest.raises(UserError, match="plain runs"):
        _opts(blobs, degraded_reals=True)


def test_nonfinite_loss_stops_naming_the_term(blobs, tmp_path, monkeypatch):
    from training import loss as loss_mod
    original = loss_mod.distillation_loss
    monkeypatch.setattr(loss_mod, "distillation_loss", lambda s, t: original(s, t) * float("nan"))
    with pytest.raises(UserError, match=r"non-finite loss term G/kd"):
        training_loop(str(tmp_path / "n"), _opts(blobs, kimg=0.016))
    assert not any(f.startswith("network-snapshot") for f in os.listdir(tmp_path / "n"))


def test_options_presets_and_errors(blobs, tmp_path):
    opts = _opts(blobs, gamma=0.5, batch=4)
    assert opts.loss.gamma == 0.5 and opts.schedule.batch == 4 and opts.schedule.lr == 0.0025
    assert opts.discriminator.mbstd_group == 4
    auto = resolve_options(dict(data=blobs.data, cfg="auto", q_dim=0, device="cpu"))
    assert auto.schedule.batch == 32 and auto.loss.gamma == pytest.approx(0.0002 * 256 / 32)
    assert auto.generator.map == 2
    for name in ("paper256", "paper512", "church256", "stylegan2"):
        assert resolve_options(dict(data=blobs.data, cfg=name, q_dim=0, device="cpu")).schedule.batch in (32, 64)
    with pytest.raises(UserError, match="teacher"):
        resolve_options(dict(data=blobs.data, cfg="smoke", device="cpu"))
    with pytest.raises(UserError, match="unknown config"):
        resolve_options(dict(data=blobs.data, cfg="nope"))
    with pytest.raises(UserError, match="fp16 needs CUDA"):
        resolve_options(dict(data=blobs.data, cfg="smoke", q_dim=0, device="cpu", precision="fp16"))


def test_cli_dry_run_and_error(blobs, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--outdir", str(tmp_path), "--data", blobs.data,
                          "--cfg", "smoke", "--q-dim", "0", "--device", "cpu", "--dry-run"],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert '"cfg": "smoke"' in res.stdout and "00000-blobs16-smoke-gpus1-batch8-plain" in res.stdout
    assert not os.listdir(tmp_path)
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--outdir", str(tmp_path), "--data",
                          str(tmp_path / "missing.zip"), "--cfg", "smoke"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_fid_metric_without_inception_fails_before_training(tmp_path, monkeypatch, blobs):
    monkeypatch.setenv("QC_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    with pytest.raises(UserError, match="(?i)inception"):
        _opts(blobs, metrics="fid2k_full")
    with pytest.raises(UserError, match="not found"):
        _opts(blobs, metrics="fid2k_full", inception=str(tmp_path / "missing.pt"))
    assert _opts(blobs, metrics="swd2k").run.metrics == ("swd2k",)     # SWD needs no network


def test_snapshot_metrics_run_through_the_runner(blobs, tmp_path):
    """--metrics: the loop computes them at each snapshot through the runner train.py hands over
    (training never imports metrics); asking for metrics without a runner is refused."""
    opts = _opts(blobs, kimg=0.016, snap=0, metrics="swd32,swd32_degraded")
    assert opts.run.metrics == ("swd32", "swd32_degraded")
    with pytest.raises(UserError, match="no metric runner"):
        training_loop(str(tmp_path / "none"), opts)
    out = training_loop(str(tmp_path / "m"), opts, metric_runner=TRAINING_METRICS)
    for name in opts.run.metrics:
        lines = read_jsonl(os.path.join(tmp_path, "m", f"metric-{name}.jsonl"))
        assert len(lines) == 1 and lines[0]["snapshot_pkl"] == os.path.basename(out["snapshot"])
        assert np.isfinite(lines[0]["results"][name]) and lines[0]["kimg"] == out["kimg"]
    with pytest.raises(UserError, match="computes no metrics"):
        resolve_options(dict(data=blobs.data, cfg="smoke", q_dim=0, device="cpu", metrics="swd32"))


def test_smoke_trains_a_few_kimg_and_learns(blobs, tmp_path):
    """2 kimg of QC smoke training (about 30 s on one core) moves G_ema toward the data: the
    sliced Wasserstein distance of its sharp samples to the training images drops, and a
    resumed run continues the kimg counter."""
    from metrics.metric_main import calc_metric
    out = training_loop(str(tmp_path / "r"), _opts(blobs, kimg=2.0, tick_kimg=0.5, snap=0))
    assert out["kimg"] == 2.0 and out["snapshot"].endswith("network-snapshot-000002.pt")
    stats = read_jsonl(os.path.join(tmp_path, "r", "stats.jsonl"))
    assert [round(s["Progress/kimg"], 1) for s in stats] == [0.5, 1.0, 1.5, 2.0]
    assert all(np.isfinite(s["Loss/G/adv_degraded"]["mean"]) for s in stats)

    def swd(G):
        res = calc_metric("swd256", G=G, dataset_kwargs=dict(path=blobs.data), device=torch.device("cpu"),
                          progress=False)
        return res["results"]["swd256"]
    start = swd(ckpt.load_network(blobs.stock)["G"])
    trained = swd(ckpt.load_network(out["snapshot"])["G_ema"])
    assert trained < 0.8 * start, (start, trained)

    more = training_loop(str(tmp_path / "r2"), _opts(blobs, kimg=2.5, tick_kimg=0.5, snap=0, resume=out["snapshot"]))
    state = ckpt.load_network(more["snapshot"])["training_state"]
    assert 2.5 <= more["kimg"] < 2.51 and state["cur_nimg"] == round(more["kimg"] * 1000)   # whole batches


@pytest.mark.precision_auto
def test_auto_precision_steps_like_fp32_with_float32_master_weights(blobs, tmp_path):
    """--precision auto as the CPU resolves it (bf16 where native; ``make test-isa`` forces bf16 on
    every CPU with QC_AUTO_PRECISION): the choice is recorded, the first step's losses are those of
    fp32 up to bf16 rounding, and the weights, optimiser state and snapshot stay float32 (bf16 is an
    autocast of the compute, never of the stored weights)."""
    from torch_utils.misc import resolve_precision
    auto = _opts(blobs, kimg=0.008, snap=0, precision="auto")
    assert auto.compute.precision == resolve_precision("auto", "cpu")["precision"]
    assert auto.compute.precision_info["auto_override"] == resolve_precision("auto", "cpu")["auto_override"]
    out_auto = training_loop(str(tmp_path / "auto"), auto)
    training_loop(str(tmp_path / "fp32"), _opts(blobs, kimg=0.008, snap=0))
    nets = ckpt.load_network(out_auto["snapshot"])
    for key in ("G", "G_ema", "D", "D_degraded"):
        assert {v.dtype for v in nets[key].state_dict().values() if v.is_floating_point()} == {torch.float32}, key
    for group in nets["training_state"]["optimizers"].values():
        for state in group["state"].values():
            assert all(v.dtype == torch.float32 for v in state.values() if torch.is_tensor(v) and v.ndim)
    a = read_jsonl(os.path.join(tmp_path, "auto", "stats.jsonl"))[0]
    b = read_jsonl(os.path.join(tmp_path, "fp32", "stats.jsonl"))[0]
    losses = [k for k in b if k.startswith("Loss/")]
    assert losses
    for k in losses:       # one step from the same weights and data: bf16 rounding apart (0.05 abs + 5 %)
        assert abs(a[k]["mean"] - b[k]["mean"]) <= 0.05 + 0.05 * abs(b[k]["mean"]), (k, a[k], b[k])


def test_slim_checkpoint_resumes_a_degrad_run_from_git_sized_files(blobs, tmp_path):
    """The campaign hand-over (convert_network.py --slim-base): G/G_ema as exact differences from a
    base G_ema beside the file, D_degraded in bfloat16, no optimiser moments; the slim file loads
    with weights_only, gives the snapshot's generators bit for bit, and a run resumed from it
    continues at the snapshot's kimg. A base that changed afterwards is refused."""
    from training.checkpoint import convert_network, slim_checkpoint
    out = training_loop(str(tmp_path / "a"), _opts(blobs, kimg=0.016, train_blocks="degrad", snap=0))
    ship = tmp_path / "ship"
    ship.mkdir()
    convert_network(out["snapshot"], str(ship / "release.pt"), only=["G_ema"])
    sizes = slim_checkpoint(out["snapshot"], str(ship / "campaign.pt"), str(ship / "release.pt"))
    full_bytes = sum(v.numel() * 4 for v in ckpt.load_network(out["snapshot"])["G"].state_dict().values())
    assert sizes["G_ema"] == 0 and 0 < sizes["G"] < full_bytes          # only the DegradBlocks' tensors
    torch.load(str(ship / "campaign.pt"), weights_only=True)
    full, slim = ckpt.load_network(out["snapshot"]), ckpt.load_network(str(ship / "campaign.pt"))
    for net in ("G", "G_ema"):
        for name, value in full[net].state_dict().items():
            assert torch.equal(value, slim[net].state_dict()[name]), (net, name)
    assert slim["training_state"]["optimizers"] == {} and slim["training_state"]["cur_nimg"] == 16
    more = training_loop(str(tmp_path / "b"), _opts(blobs, kimg=0.032, train_blocks="degrad", snap=0,
                                                    resume=str(ship / "campaign.pt")))
    assert ckpt.load_network(more["snapshot"])["training_state"]["cur_nimg"] == 32
    convert_network(more["snapshot"], str(ship / "release.pt"), only=["G_ema"])   # the base moves on
    with pytest.raises(UserError, match="changed since this file was written"):
        ckpt.load_network(str(ship / "campaign.pt"))
