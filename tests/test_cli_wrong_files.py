"""Wrong model files given to every CLI: a discriminator-only file, a plain StyleGAN2 generator where
a QC one is needed, an encoder made for another generator, a truncated checkpoint, a checkpoint of
a newer format version: one line each (``error: ...``), exit status 2, nothing written."""
import os

import pytest
import torch
from click.testing import CliRunner

from _applications import save_tiny_checkpoint, tiny_qc_generator

import calc_metrics  # noqa: E402
import edit  # noqa: E402
import generate  # noqa: E402
import invert  # noqa: E402
import restore  # noqa: E402
from dnnlib.image_io import write_image  # noqa: E402
from training.checkpoint import save_checkpoint  # noqa: E402
from training.networks import Discriminator, Generator  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    good = root / "qc.pt"
    save_tiny_checkpoint(good)
    d = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=16)
    save_checkpoint(str(root / "d_only.pt"), nets={"D": d})
    plain = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, q_dim=0,
                      mapping_kwargs={"num_layers": 2}, synthesis_kwargs={"channel_base": 256, "channel_max": 16})
    save_checkpoint(str(root / "plain.pt"), nets={"G": plain, "G_ema": plain})
    data = good.read_bytes()
    (root / "truncated.pt").write_bytes(data[: len(data) // 2])
    payload = torch.load(good, weights_only=True)
    payload["version"] = 99
    torch.save(payload, root / "newer.pt")
    from inversion.encoders import InversionEncoder, save_encoder
    save_encoder(str(root / "enc_other.pt"), InversionEncoder.for_generator(tiny_qc_generator(resolution=32), width=8))
    write_image(str(root / "in" / "a.png"), torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8).numpy())
    return root


NEEDLES = {"d_only.pt": "holds no generator (it has D)", "plain.pt": "convert_network.py",
           "truncated.pt": "corrupt or truncated", "newer.pt": "version 99 is newer"}


def _check(cmd, args, out, needle):
    r = CliRunner().invoke(cmd, [str(a) for a in args])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2, (r.exit_code, r.output, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert not os.path.exists(out), "nothing may be written"


@pytest.mark.parametrize("name", sorted(NEEDLES))
def test_restore_edit_invert_generate_metrics_refuse_wrong_networks(files, tmp_path, name):
    net, inp, out = files / name, files / "in", tmp_path / "out"
    needle = NEEDLES[name]
    _check(restore.main, ["--network", net, "--input", inp, "--outdir", out, "--device", "cpu"], out, needle)
    _check(edit.cli, ["--network", net, "--input", inp, "--outdir", out, "--sefa", 0, "--device", "cpu"], out, needle)
    if name != "plain.pt":        # a plain StyleGAN2 inverts and generates fine
        _check(invert.main, ["run", "--network", net, "--input", inp, "--outdir", out, "--device", "cpu"], out, needle)
        _check(generate.main, ["--network", net, "--seeds", "0", "--outdir", out, "--device", "cpu"], out, needle)
    metrics = "swd2k_degraded" if name == "plain.pt" else "swd2k"       # degraded metrics need QC
    _check(calc_metrics.main, ["--network", net, "--metrics", metrics, "--outdir", out, "--device", "cpu"], out, needle)


def test_encoder_of_another_generator_is_named(files, tmp_path):
    net, inp, out, enc = files / "qc.pt", files / "in", tmp_path / "out", files / "enc_other.pt"
    needle = "shape mismatch in img_resolution (encoder 32, network 16)"
    _check(restore.main, ["--network", net, "--encoder", enc, "--input", inp, "--outdir", out, "--device", "cpu"],
           out, needle)
    _check(invert.main, ["run", "--network", net, "--encoder", enc, "--input", inp, "--outdir", out, "--device", "cpu"],
           out, needle)
    _check(edit.cli, ["--network", net, "--encoder", enc, "--input", inp, "--outdir", out, "--sefa", 0,
                      "--device", "cpu"], out, needle)
    r = CliRunner().invoke(invert.main, ["run", "--network", str(net), "--encoder", str(files / "truncated.pt"),
                                         "--input", str(inp), "--outdir", str(out)])
    assert r.exit_code == 2 and "corrupt or truncated encoder file" in r.stderr and not os.path.exists(out)
