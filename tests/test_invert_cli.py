"""invert.py: train-encoder (loss falls, resume, stop on SIGTERM, real rows) and run (end to end, resumable)."""
import json
import os
import signal

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dnnlib.image_io import write_image
from dnnlib.util import append_jsonl, read_jsonl
from inversion.encoder_training import train_encoder
from training.checkpoint import save_checkpoint
from test_inversion_utils import sample_images, tiny_generator

import invert




@pytest.fixture(scope="module")
def network(tmp_path_factory):
    G = tiny_generator()
    path = str(tmp_path_factory.mktemp("net") / "tiny.pt")
    save_checkpoint(path, nets={"G_ema": G})
    return path, G


def _invoke(args):
    result = CliRunner().invoke(invert.main, args, catch_exceptions=False)
    return result


def _face_folder(G, tmp_path):
    """Six samples of G written as PNGs: a folder dataset for the real rows."""
    data = tmp_path / "data"
    images, _, _ = sample_images(G, 6, seed=7)
    for i, im in enumerate(images):
        write_image(str(data / f"{i}.png"), im)
    return data


def test_train_encoder_loss_falls_and_resumes(network, tmp_path):
    path, G = network
    out = str(tmp_path / "enc")
    args = ["train-encoder", "--network", path, "--outdir", out, "--steps", "60", "--batch", "8", "--lr", "1e-3",
            "--width", "8", "--log-steps", "20", "--snap-steps", "30", "--perceptual", "fallback", "--device", "cpu"]
    r = _invoke(args)
    assert r.exit_code == 0, r.output
    lines = read_jsonl(os.path.join(out, "stats.jsonl"))
    assert [l["step"] for l in lines] == [20, 40, 60]
    losses = [l["loss"] for l in lines]          # seeded, so deterministic on one machine
    assert losses[-1] < losses[0] and np.mean(losses[1:]) < 0.9 * losses[0], losses
    assert lines[0]["perceptual_loss"] == "lap1+msssim"
    for name in ("encoder.pt", "encoder-000030.pt", "encoder-000060.pt", "val-000060.png", "training_options.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    # Running again with more steps continues from step 60.
    r = _invoke(args[:6] + ["80"] + args[7:])
    assert r.exit_code == 0, r.output
    assert [l["step"] for l in read_jsonl(os.path.join(out, "stats.jsonl"))] == [20, 40, 60, 80]


def test_train_encoder_sigterm_snapshots_and_resume_repeats_the_run(network, tmp_path):
    """SIGTERM finishes the step and writes encoder.pt (as train.py does); the resumed run equals an
    uninterrupted one (the initial weights come from the seed), and stats lines logged after the
    snapshot of a killed run are not repeated."""
    path, G = network
    opts = dict(mode="synthetic", steps=40, batch=8, lr=1e-3, width=8, log_steps=10, snap_steps=1000,
                perceptual="fallback")
    whole = train_encoder(str(tmp_path / "whole"), G, dict(opts))

    def stop_at_20(line):
        if line["step"] == 20:
            os.kill(os.getpid(), signal.SIGTERM)
    run = str(tmp_path / "run")
    handler = signal.getsignal(signal.SIGTERM)
    first = train_encoder(run, G, dict(opts), progress_fn=stop_at_20)
    assert first.stopped == "SIGTERM" and first.step == 20
    assert signal.getsignal(signal.SIGTERM) == handler                   # the handler is put back
    append_jsonl(os.path.join(run, "stats.jsonl"), {"step": 30, "loss": 0.0})   # as if killed after logging 30
    second = train_encoder(run, G, dict(opts))
    assert second.stopped is None and second.step == 40
    assert [l["step"] for l in read_jsonl(os.path.join(run, "stats.jsonl"))] == [10, 20, 30, 40]
    assert read_jsonl(os.path.join(run, "stats.jsonl"))[2]["loss"] != 0.0
    a, b = whole.trainer.E.state_dict(), second.trainer.E.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_encoder_bf16_autocast_tracks_fp32(network, tmp_path):
    """--precision bf16 (what 'auto' picks on CPUs with native bf16; emulated, slower, elsewhere):
    the passes run under autocast while the weights, Adam and the losses stay float32, so the run
    follows the float32 one up to bf16 rounding; each stats line names the precision, and a run
    resumes under another precision (a machine of another kind)."""
    path, G = network
    data = _face_folder(G, tmp_path)
    from training.dataset import ImageDataset
    dataset = ImageDataset(str(data))
    opts = dict(mode="mixed", steps=12, batch=4, lr=1e-3, width=8, log_steps=4, snap_steps=1000,
                perceptual="fallback", val_images=2)
    runs = {p: train_encoder(str(tmp_path / p), G, dict(opts, precision=p), dataset) for p in ("fp32", "bf16")}
    for p, run in runs.items():
        assert [l["precision"] for l in run.history] == [p] * 3
        assert all(v.dtype == torch.float32 for v in run.trainer.E.state_dict().values() if v.is_floating_point())
    a, b = ([l["loss"] for l in runs[p].history] for p in ("fp32", "bf16"))
    assert np.allclose(a, b, rtol=0.1), (a, b)                 # bf16 rounding, not another run
    assert a[0] != b[0]                                          # ... but the bf16 passes did run
    more = train_encoder(str(tmp_path / "bf16"), G, dict(opts, steps=16, precision="fp32"), dataset)
    assert more.step == 16 and more.history[-1]["precision"] == "fp32"


def test_train_encoder_real_rows(network, tmp_path):
    path, G = network
    data = _face_folder(G, tmp_path)
    out = str(tmp_path / "enc")
    r = _invoke(["train-encoder", "--network", path, "--data", str(data), "--mode", "mixed", "--outdir", out,
                 "--steps", "4", "--batch", "4", "--width", "8", "--log-steps", "2", "--perceptual", "fallback",
                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    line = read_jsonl(os.path.join(out, "stats.jsonl"))[-1]
    assert {"latent", "rec_degraded", "rec_sharp", "w_norm", "q_r2"} <= set(line)
    assert np.isfinite(line["q_r2"]) and line["q_r2"] <= 1      # R^2 of the synthetic rows' known q
    r = CliRunner().invoke(invert.main, ["train-encoder", "--network", path, "--outdir", out, "--mode", "real"])
    assert r.exit_code == 1 and "error: --mode real needs --data" in r.output


def test_run_end_to_end_and_second_run_skips(network, tmp_path):
    path, G = network
    images, _, _ = sample_images(G, 3, seed=11)
    inp = tmp_path / "in"
    write_image(str(inp / "a.png"), images[0])
    write_image(str(inp / "sub" / "b.png"), images[1])
    big = np.asarray(torch.nn.functional.interpolate(torch.from_numpy(images[2]).permute(2, 0, 1)[None].float(),
                                                     size=[24, 20]).round()[0].permute(1, 2, 0).to(torch.uint8))
    write_image(str(inp / "c.png"), big)                 # another size: resized
    (inp / "broken.png").write_bytes(b"not an image")
    out = str(tmp_path / "out")
    args = ["run", "--network", path, "--input", str(inp), "--outdir", out, "--w-steps", "20", "--pti-steps", "5", "--align", "none",
            "--lpips-threshold", "0", "--perceptual", "fallback", "--device", "cpu", "--batch", "2"]
    r = CliRunner().invoke(invert.main, args)
    assert r.exit_code == 0, r.output
    assert "inverted 3, skipped 0 (done before), failed 1" in r.output
    for name in ("a", "sub/b", "c"):
        for f in ("w.npy", "q.npy", "delta.pt", "reconstruction.png", "sharp.png", "result.json"):
            assert os.path.isfile(os.path.join(out, name, f)), (name, f)
    assert np.load(os.path.join(out, "a", "w.npy")).shape == (G.num_ws, G.w_dim)
    assert np.load(os.path.join(out, "a", "q.npy")).shape == (G.q_dim,)
    lines = read_jsonl(os.path.join(out, "results.jsonl"))
    ok = {l["name"]: l for l in lines if "error" not in l}
    assert set(ok) == {"a", "sub/b", "c"} and [l["name"] for l in lines if "error" in l] == ["broken.png"]
    assert ok["c"]["input_size"] == [24, 20] and ok["a"]["pti_steps"] == 5
    assert ok["a"]["psnr"] > 10 and ok["a"]["perceptual_loss"] == "lap1+msssim" and ok["a"]["seconds"] > 0
    with open(os.path.join(out, "sub", "b", "result.json")) as f:
        assert json.load(f)["name"] == "sub/b"
    # Second run: the three finished images are skipped, nothing is recomputed.
    mtime = os.path.getmtime(os.path.join(out, "a", "w.npy"))
    r = CliRunner().invoke(invert.main, args)
    assert r.exit_code == 0 and "inverted 0, skipped 3 (done before), failed 1" in r.output
    assert os.path.getmtime(os.path.join(out, "a", "w.npy")) == mtime
    assert len([l for l in read_jsonl(os.path.join(out, "results.jsonl")) if "error" not in l]) == 3


def test_run_with_encoder_and_errors(network, tmp_path):
    path, G = network
    from inversion.encoders import InversionEncoder, save_encoder
    save_encoder(str(tmp_path / "e.pt"), InversionEncoder.for_generator(G, width=8))
    images, _, _ = sample_images(G, 1, seed=2)
    write_image(str(tmp_path / "x.png"), images[0])
    r = CliRunner().invoke(invert.main, ["run", "--network", path, "--encoder", str(tmp_path / "e.pt"), "--input",
                                         str(tmp_path / "x.png"), "--outdir", str(tmp_path / "o"), "--pti-steps", "0",
                                         "--perceptual", "fallback", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    line = read_jsonl(str(tmp_path / "o" / "results.jsonl"))[0]
    assert line["w_steps"] == 0 and line["pti_steps"] == 0
    assert not os.path.exists(tmp_path / "o" / "x" / "delta.pt")
    for extra, msg in [(["--delta", "zip"], "delta encoding"), (["--input", str(tmp_path / "none")], "not found")]:
        args = ["run", "--network", path, "--input", str(tmp_path / "x.png"), "--outdir", str(tmp_path / "o2")] + extra
        r = CliRunner().invoke(invert.main, args)
        assert r.exit_code == 1 and "error:" in r.output and msg in r.output, r.output


def test_export_encoder_half_drops_state_and_predicts_the_same(network, tmp_path):
    path, G = network
    from inversion.encoders import InversionEncoder, load_encoder, save_encoder
    torch.manual_seed(0)
    E = InversionEncoder.for_generator(G, width=8)
    with torch.no_grad():
        for p in E.parameters():
            p.add_(0.05 * torch.randn_like(p))          # non-trivial weights
    save_encoder(str(tmp_path / "e.pt"), E, training_state={"step": 3, "opt": {"lr": 1.0}})
    r = _invoke(["export-encoder", str(tmp_path / "e.pt"), str(tmp_path / "r.pt"), "--half"])
    assert r.exit_code == 0 and "MiB" in r.output, r.output
    raw = torch.load(tmp_path / "r.pt", weights_only=True)
    assert raw["training_state"] is None and raw["metadata"]["weights_dtype"] == "float16"
    assert raw["state_dict"]["content.conv1.weight"].dtype == torch.float16
    assert raw["state_dict"]["content.bn1.running_var"].dtype == torch.float32
    assert os.path.getsize(tmp_path / "r.pt") < 0.6 * os.path.getsize(tmp_path / "e.pt")
    E2 = load_encoder(str(tmp_path / "r.pt"))
    assert E2.content.conv1.weight.dtype == torch.float32
    x = torch.rand(2, G.img_channels, G.img_resolution, G.img_resolution) * 2 - 1
    ws, q = E.eval()(x)
    ws2, q2 = E2(x)
    torch.testing.assert_close(ws2, ws, rtol=0, atol=2e-2)
    torch.testing.assert_close(q2, q, rtol=0, atol=2e-2)


def test_train_encoder_init_starts_from_another_encoder(network, tmp_path):
    # --init: a new run starts from the given encoder's weights and architecture (width 8 here,
    # though --width says 64). With lr 0 the one step leaves every weight where the file had it.
    from inversion.encoders import read_encoder_file
    path, G = network
    base = ["train-encoder", "--network", path, "--batch", "8", "--perceptual", "fallback", "--device", "cpu"]
    assert _invoke(base + ["--outdir", str(tmp_path / "a"), "--width", "8", "--steps", "20", "--lr", "1e-3",
                           "--snap-steps", "20"]).exit_code == 0
    trained = os.path.join(tmp_path, "a", "encoder.pt")
    r = _invoke(base + ["--outdir", str(tmp_path / "b"), "--init", trained, "--steps", "1", "--lr", "0",
                        "--log-steps", "1", "--snap-steps", "1"])
    assert r.exit_code == 0, r.output
    src, out = read_encoder_file(trained), read_encoder_file(os.path.join(tmp_path, "b", "encoder.pt"))
    assert out["kwargs"] == src["kwargs"] and out["kwargs"]["width"] == 8
    weights = [k for k in src["state_dict"] if k.endswith(".weight")]
    assert weights and all(torch.equal(out["state_dict"][k], src["state_dict"][k]) for k in weights)
    assert torch.equal(out["state_dict"]["w_avg"], G.mapping.w_avg)
    fresh = read_encoder_file(os.path.join(tmp_path, "a", "encoder-000020.pt"))
    assert fresh["training_state"]["step"] == 20 and out["training_state"]["step"] == 1
    assert json.load(open(os.path.join(tmp_path, "b", "training_options.json")))["init"] == trained


def test_train_encoder_from_init_resumes_with_the_same_command(network, tmp_path):
    """A run started with --init (here width 8, though --width defaults to 64) is resumed by the
    same command: the architecture is the run's own snapshot's, the step goes on from there."""
    from inversion.encoders import read_encoder_file
    path, G = network
    base = ["train-encoder", "--network", path, "--batch", "4", "--perceptual", "fallback", "--device", "cpu"]
    assert _invoke(base + ["--outdir", str(tmp_path / "a"), "--width", "8", "--steps", "2"]).exit_code == 0
    init = os.path.join(tmp_path, "a", "encoder.pt")
    cmd = base + ["--outdir", str(tmp_path / "b"), "--init", init, "--log-steps", "1", "--snap-steps", "1"]
    assert _invoke(cmd + ["--steps", "2"]).exit_code == 0
    r = _invoke(cmd + ["--steps", "3"])
    assert r.exit_code == 0, r.output
    out = read_encoder_file(os.path.join(tmp_path, "b", "encoder.pt"))
    assert out["training_state"]["step"] == 3 and out["kwargs"]["width"] == 8
    assert [l["step"] for l in read_jsonl(os.path.join(tmp_path, "b", "stats.jsonl"))] == [1, 2, 3]


@pytest.mark.parametrize("bad", ["1,0", "0.5", "a,b", "-1,1"])
def test_train_encoder_refuses_a_bad_q_scale_before_writing(network, tmp_path, bad):
    path, _ = network
    out = tmp_path / "enc"
    r = _invoke(["train-encoder", "--network", path, "--outdir", str(out), "--q-scale", bad, "--steps", "2"])
    assert r.exit_code == 1 and "--q-scale must be LO,HI" in r.output, r.output
    assert not out.exists()


def test_clean_frac_leaves_that_share_of_real_rows_sharp(network, tmp_path):
    """clean_frac: real rows that skip the pipeline (input = its sharp target); 0 (the default) draws
    nothing extra, so the degraded rows of earlier runs are unchanged."""
    from inversion.encoder_training import EncoderTrainer
    from training.dataset import ImageDataset
    path, G = network
    data = _face_folder(G, tmp_path)
    dataset = ImageDataset(str(data))
    rows = {}
    same = lambda deg, sharp: (deg - sharp).abs().flatten(1).amax(dim=1) < 1e-6     # noqa: E731
    for frac in (0.0, 0.5, 1.0):
        tr = EncoderTrainer(str(tmp_path / f"r{frac}"), G, dict(mode="real", width=8, clean_frac=frac, degradations="paper",
                                                                 perceptual="fallback", precision="fp32"), dataset)
        got = tr.real_rows(32, torch.Generator().manual_seed(5))
        rows[frac] = (got.degraded, got.sharp)
        assert torch.equal(got.kept, same(*rows[frac])), frac
        assert torch.equal(got.severity[got.kept], torch.zeros_like(got.severity[got.kept])), frac   # sharp rows: no severity
        assert bool((got.severity[~got.kept].sum(dim=1) > 0).all()), frac
    assert not same(*rows[0.0]).any()                                   # paper: every row degraded
    assert same(*rows[1.0]).all()
    kept = same(*rows[0.5])
    assert 4 <= int(kept.sum()) <= 28, kept
    assert torch.equal(rows[0.5][0][~kept], rows[0.0][0][~kept])        # the others: the same draws as frac 0
    with pytest.raises(Exception, match="clean_frac must be in"):
        EncoderTrainer(str(tmp_path / "bad"), G, dict(mode="real", clean_frac=1.5), dataset)


def test_clean_q_weight_pulls_a_sharp_faces_q_to_zero(network, tmp_path):
    """clean_q_weight adds weight * MSE(q, 0) on the rows clean_frac leaves sharp (logged as q_clean):
    the step's loss grows by exactly that term, and training with it leaves the encoder answering a
    smaller q for sharp faces than the same run without it."""
    from inversion.encoder_training import EncoderTrainer
    from training.dataset import ImageDataset
    path, G = network
    data = _face_folder(G, tmp_path)
    dataset = ImageDataset(str(data))
    base = dict(mode="real", width=8, clean_frac=1.0, degradations="paper", perceptual="fallback",
                precision="fp32", batch=4, lr=3e-3)
    trainers = {w: EncoderTrainer(str(tmp_path / f"w{w}"), G, dict(base, clean_q_weight=w), dataset) for w in (0.0, 5.0)}
    first = {w: tr.train_step() for w, tr in trainers.items()}
    assert first[0.0]["q_clean"] > 0
    assert first[5.0]["q_clean"] == pytest.approx(first[0.0]["q_clean"], rel=1e-5)      # same weights, same rows
    assert first[5.0]["loss"] - first[0.0]["loss"] == pytest.approx(5.0 * first[0.0]["q_clean"], rel=1e-3)
    for _ in range(15):
        last = {w: tr.train_step() for w, tr in trainers.items()}
    assert last[5.0]["q_clean"] < 0.5 * last[0.0]["q_clean"], last
    with pytest.raises(Exception, match="clean_q_weight must be >= 0"):
        EncoderTrainer(str(tmp_path / "bad"), G, dict(base, clean_q_weight=-1.0), dataset)


@pytest.mark.parametrize("flag,value,message", [("--clean-frac", "1.5", "--clean-frac must be in"),
                                                ("--clean-q-weight", "-1", "--clean-q-weight must be >= 0"),
                                                ("--q-readout-weight", "-1", "--q-readout-weight must be >= 0")])
def test_train_encoder_refuses_bad_clean_options_before_writing(network, tmp_path, flag, value, message):
    path, _ = network
    out = tmp_path / "enc"
    r = _invoke(["train-encoder", "--network", path, "--outdir", str(out), flag, value, "--steps", "2"])
    assert r.exit_code == 1 and message in r.output, r.output
    assert not out.exists()


def test_q_readout_weight_makes_q_read_the_severity_and_resumes(network, tmp_path):
    """q_readout_weight adds weight * MSE(A q, severity) on real rows (logged as q_readout): the
    step's loss grows by exactly that term, training lowers it, the map A is saved with the run and
    read back on resume, and a run cannot be resumed with the other setting."""
    from inversion.encoder_training import EncoderTrainer
    from training.dataset import ImageDataset
    path, G = network
    dataset = ImageDataset(str(_face_folder(G, tmp_path)))
    base = dict(mode="real", width=8, clean_frac=0.25, degradations="paper", perceptual="fallback",
                precision="fp32", batch=8, lr=3e-3)
    tr = EncoderTrainer(str(tmp_path / "r"), G, dict(base, q_readout_weight=2.0), dataset)
    plain = EncoderTrainer(str(tmp_path / "p"), G, base, dataset)
    first, first_plain = tr.train_step(), plain.train_step()
    assert "q_readout" not in first_plain and first["q_readout"] > 0      # A starts at 0: the mean square severity
    assert first["loss"] - first_plain["loss"] == pytest.approx(2.0 * first["q_readout"], rel=1e-3)
    for _ in range(30):
        last = tr.train_step()
    assert last["q_readout"] < 0.8 * first["q_readout"], (first, last)
    tr.save()
    again = EncoderTrainer(str(tmp_path / "r"), G, dict(base, q_readout_weight=2.0), dataset)
    assert again.step == tr.step and torch.equal(again.readout.weight, tr.readout.weight)
    with pytest.raises(Exception, match="trained with --q-readout-weight"):
        EncoderTrainer(str(tmp_path / "r"), G, base, dataset)
    with pytest.raises(Exception, match="q_readout_weight must be >= 0"):
        EncoderTrainer(str(tmp_path / "bad"), G, dict(base, q_readout_weight=-1.0), dataset)
