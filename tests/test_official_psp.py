"""The official release's pSp encoder file (ffhq_psp.pt layout, inversion/official_psp.py).

The file is rebuilt from a seed by ../shared/fixtures/official_psp/make_checkpoint.py (once per
module, ~170 MB in a temporary folder); ``expected/`` holds the official code's outputs for its
images. Tolerance (the fixture's README): w and q each within 1e-4 of their largest magnitude
(float32 on other CPUs; float32 against float64 is 3e-7 here).
"""
import importlib.util
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import shared_path
from dnnlib.image_io import read_image
from dnnlib.util import BadFileError
from inversion.api import invert_images
from inversion.encoders import load_encoder
from inversion.official_psp import OfficialPSPEncoder, preprocess
from training.checkpoint import save_checkpoint
from training.networks import Generator

import invert

DIGEST = "3d624bb02cb258f0c91c90b03537b7b446dbec5c0e635a1dd9b2b34ac38af7b2"   # the fixture README's, seed 0
NAMES = ("0000.png", "0001.png", "0002.png", "0003.png")                      # 256 RGB x2, 320x240 RGB, 180 grey
REL = 1e-4


def _fixture_module(folder):
    spec = importlib.util.spec_from_file_location("official_psp_make_checkpoint",
                                                  os.path.join(folder, "make_checkpoint.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """(folder of the fixture, path of the rebuilt file, the builder module)."""
    folder = shared_path("fixtures", "official_psp")
    mod = _fixture_module(folder)
    ckpt = mod.build_checkpoint(0, latent_avg_q="random")
    if mod.state_digest(ckpt) != DIGEST:
        pytest.skip("the rebuilt fixture's state digest differs (another torch random generator): "
                    "the expected outputs do not apply")
    path = str(tmp_path_factory.mktemp("psp") / "ffhq_psp.pt")
    mod.save(ckpt, path)
    return folder, path, mod


def _expected(folder):
    return np.load(os.path.join(folder, "expected", "w.npy")), np.load(os.path.join(folder, "expected", "q.npy"))


def _assert_rel(got, want, rel=REL):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= rel, err


def qc_generator_256(resolution: int = 256, seed: int = 0) -> Generator:
    """A random-weight QC generator with the release's code sizes (w 512, q 16), few channels."""
    torch.manual_seed(seed)
    G = Generator(z_dim=16, c_dim=0, w_dim=512, img_resolution=resolution, img_channels=3, q_dim=16,
                  mapping_kwargs={"num_layers": 1},
                  synthesis_kwargs={"channel_base": 2048, "channel_max": 4, "num_fp16_res": 0, "conv_clamp": 256,
                                    "degrad_blocks": 1, "degrad_channels": 4})
    return G.eval().requires_grad_(False)


def test_preprocessing_is_the_release_s(official):
    """Our read_image + the official transform give expected/inputs.npz bit for bit (grey, 320x240)."""
    folder, _, _ = official
    images = [read_image(os.path.join(folder, "images", n)) for n in NAMES]
    want = np.load(os.path.join(folder, "expected", "inputs.npz"))["inputs"]
    assert np.array_equal(preprocess(images).numpy(), want)
    grey = np.asarray(images[3][:, :, 0])                           # [H, W] and [H, W, 1] read the same
    assert torch.equal(preprocess([grey]), preprocess([grey[:, :, None]]))


def test_invert_run_writes_the_official_w_and_q(official, tmp_path, capsys):
    """invert.py run --encoder ffhq_psp.pt --pti-steps 0 --w-steps 0 on a 256 QC generator: w (every
    row) and q are the release's for inputs of every size and mode; original names kept."""
    folder, path, _ = official
    net = str(tmp_path / "g256.pt")
    save_checkpoint(net, nets={"G_ema": qc_generator_256()})
    out = str(tmp_path / "inv")
    r = CliRunner().invoke(invert.main, ["run", "--network", net, "--encoder", path, "--input",
                                         os.path.join(folder, "images"), "--outdir", out, "--pti-steps", "0",
                                         "--w-steps", "0", "--perceptual", "fallback", "--align", "none",
                                         "--device", "cpu", "--batch", "4"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    want_w, want_q = _expected(folder)
    w = np.stack([np.load(os.path.join(out, n[:-4], "w.npy")) for n in NAMES])       # [4, 14, 512]
    q = np.stack([np.load(os.path.join(out, n[:-4], "q.npy")) for n in NAMES])       # [4, 16]
    assert w.shape == (4, 14, 512) and np.all(w == w[:, :1])
    _assert_rel(w[:, 0], want_w)
    _assert_rel(q, want_q)


def test_generator_512_gets_the_same_codes_in_16_rows(official):
    """The release resizes the ORIGINAL image to 256 whatever G's resolution: a 512 generator gets
    the same (w, q), w in its 16 rows."""
    folder, path, _ = official
    G = qc_generator_256(resolution=512)
    E = load_encoder(path, generator=G, log=lambda msg: None)
    img = read_image(os.path.join(folder, "images", "0003.png"))           # 180 x 180 grey
    res = invert_images(G, [img], encoder=E, pti_steps=0, w_steps=0, device="cpu", progress=False,
                        perceptual="fallback")[0]
    want_w, want_q = _expected(folder)
    assert tuple(res.w.shape) == (16, 512)
    _assert_rel(res.w[0].numpy(), want_w[3])
    _assert_rel(res.q.numpy(), want_q[3])


def test_cuda_tagged_file_loads_on_cpu_and_drops_the_rest(official, tmp_path):
    folder, path, mod = official
    cuda = str(tmp_path / "cuda.pt")
    mod.save(mod.build_checkpoint(0, latent_avg_q="random"), cuda, cuda_tags=True)
    with pytest.raises(RuntimeError):                    # the file really is tagged: no map_location fails
        if not torch.cuda.is_available():
            torch.load(cuda, weights_only=True)
        else:
            raise RuntimeError("CUDA present: nothing to show")
    a, b = load_encoder(path), load_encoder(cuda)
    assert isinstance(b, OfficialPSPEncoder)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) and sb[k].device.type == "cpu" for k in sa)
    assert not any("decoder" in k for k in sb)


def test_mismatched_generator_warns_and_matching_one_does_not(official):
    _, path, _ = official
    G = qc_generator_256()
    said = []
    load_encoder(path, generator=G, log=said.append)
    assert len(said) == 1 and "latent_avg differs from the network's w_avg" in said[0]
    E = load_encoder(path)
    G.mapping.w_avg.copy_(E.latent_avg[:512])
    said.clear()
    load_encoder(path, generator=G, log=said.append)
    assert said == []


def test_export_encoder_round_trip_is_identical(official, tmp_path):
    """invert.py export-encoder converts the official file to our format: same tensors, same
    outputs, no decoder or optimiser, and a file a quarter of the original's size or less."""
    folder, path, _ = official
    dst = str(tmp_path / "psp-ours.pt")
    r = CliRunner().invoke(invert.main, ["export-encoder", path, dst], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    a, b = load_encoder(path), load_encoder(dst)
    assert type(b) is OfficialPSPEncoder
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    payload = torch.load(dst, map_location="cpu", weights_only=True)
    assert payload["architecture"] == "official-psp" and payload["version"] == 2
    assert not any(k.startswith("decoder") for k in payload["state_dict"])
    x = torch.from_numpy(np.load(os.path.join(folder, "expected", "inputs.npz"))["inputs"][2:3])
    with torch.no_grad():
        wa, qa = a(x)
        wb, qb = b(x)
    assert torch.equal(wa, wb) and torch.equal(qa, qb)


def test_truncated_and_other_encoder_types_are_refused(official, tmp_path):
    _, path, _ = official
    cut = str(tmp_path / "cut.pt")
    with open(path, "rb") as f, open(cut, "wb") as g:
        g.write(f.read(50_000_000))
    with pytest.raises(BadFileError, match="corrupt or truncated"):
        load_encoder(cut)
    other = str(tmp_path / "gradual.pt")
    torch.save({"state_dict": {"encoder.styles.0.convs.0.weight": torch.zeros(2)},
                "opts": {"encoder_type": "GradualStyleEncoder"}, "latent_avg": torch.zeros(18, 512)}, other)
    with pytest.raises(BadFileError, match="encoder_type 'GradualStyleEncoder'") as exc:
        load_encoder(other)
    assert "\n" not in str(exc.value)
    plain = str(tmp_path / "plain.pt")
    torch.save({"weights": torch.zeros(3)}, plain)
    with pytest.raises(BadFileError, match="not an encoder checkpoint"):
        load_encoder(plain)
    r = CliRunner().invoke(invert.main, ["export-encoder", other, str(tmp_path / "x.pt")])
    assert r.exit_code == 2 and "GradualStyleEncoder" in r.output


def test_restore_preset_official_and_set_distance_edit_on_a_folder(official, tmp_path):
    """Issue 30's end to end: restore.py --preset official --encoder ffhq_psp.pt and edit.py edit
    --encoder ffhq_psp.pt --direction <a [1, 512] boundary> --mode set-distance on the fixture's
    folder (sizes 256, 320x240, 180 grey): every image written, none dropped, names kept. The
    preset asks for LPIPS (alex), which is not downloaded here: --perceptual fallback stands in."""
    import edit
    import restore
    folder, path, _ = official
    net = str(tmp_path / "g256.pt")
    save_checkpoint(net, nets={"G_ema": qc_generator_256()})
    images = os.path.join(folder, "images")
    r = CliRunner().invoke(restore.main, ["--network", net, "--encoder", path, "--input", images, "--outdir",
                                          str(tmp_path / "r"), "--preset", "official", "--perceptual", "fallback",
                                          "--pti-steps", "1", "--align", "none", "--device", "cpu", "--quiet"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert sorted(f for f in os.listdir(tmp_path / "r") if f.endswith(".png")) == list(NAMES)
    for n in NAMES:
        assert read_image(str(tmp_path / "r" / n)).shape[:2] == read_image(os.path.join(images, n)).shape[:2]
    import json
    opts = json.load(open(tmp_path / "r" / "restore_options.json"))["inversion"]
    assert opts["pti_lr"] == 3e-4 and opts["lpips_threshold"] == 0.002 and opts["pti_steps"] == 1
    boundary = np.random.RandomState(0).randn(1, 512).astype(np.float32)
    np.save(tmp_path / "smiling_boundary.npy", boundary / np.linalg.norm(boundary))
    r = CliRunner().invoke(edit.cli, ["edit", "--network", net, "--encoder", path, "--input", images,
                                       "--direction", str(tmp_path / "smiling_boundary.npy"), "--mode", "set-distance",
                                       "--pti-steps", "0", "--perceptual", "fallback", "--align", "none",
                                       "--device", "cpu", "--outdir", str(tmp_path / "e"), "--quiet"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    from dnnlib.util import read_jsonl
    recs = read_jsonl(str(tmp_path / "e" / "edit.jsonl"))
    assert sorted({rec["name"] for rec in recs}) == [n[:-4] for n in NAMES]       # every image, its own name
    assert {rec["mode"] for rec in recs} == {"set-distance"} and len(recs) == 4 * 10   # 10 distances each
