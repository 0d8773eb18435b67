"""Generator metrics: Frechet distance, FID/KID/SWD behaviour, feature nets, cache, registry."""
import json
import os

import numpy as np
import pytest
import scipy.linalg
import torch

from dnnlib.util import UserError
from metrics import fid_kid, metric_main, metric_utils, swd
from metrics.feature_nets import (InceptionStateDict, InceptionTorchScript, RandomFeatureNet, load_feature_net,
                                  load_inception)
from metrics.inception import InceptionV3FID, resize_tf1

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINI = os.path.join(ROOT, "..", "shared", "datasets", "utkface64-mini.zip")
needs_mini = pytest.mark.skipif(not os.path.isfile(MINI), reason="../shared/datasets/utkface64-mini.zip not present")


@pytest.fixture(scope="module")
def faces():
    """The 512 mini-dataset faces as uint8 [512, 3, 64, 64]."""
    from training.dataset import ImageDataset
    ds = ImageDataset(MINI)
    return torch.from_numpy(np.stack([ds[i][0] for i in range(len(ds))]))


def _features(net, imgs):
    with torch.no_grad():
        return torch.cat([net(imgs[i:i + 128]) for i in range(0, len(imgs), 128)])


def _fid(fa, fb):
    sa, sb = metric_utils.FeatureStats(capture_mean_cov=True), metric_utils.FeatureStats(capture_mean_cov=True)
    sa.append(fa)
    sb.append(fb)
    return fid_kid.frechet_distance(*sa.get_mean_cov(), *sb.get_mean_cov())


def _noise_images(n, seed=0):
    return torch.randint(0, 256, [n, 3, 64, 64], generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# --- Frechet distance / KID math -----------------------------------------------------------

def test_frechet_distance_matches_direct_scipy():
    rng = np.random.RandomState(0)
    a = rng.randn(400, 6) @ rng.randn(6, 6)
    b = rng.randn(300, 6) @ rng.randn(6, 6) + 0.5
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # The textbook formula with scipy's general matrix square root.
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
    assert fid_kid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-8, abs=1e-9)
    # Commuting (diagonal) covariances: closed form sum (sqrt(v1) - sqrt(v2))^2.
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    assert fid_kid.frechet_distance(np.zeros(3), np.diag(v1), np.ones(3), np.diag(v2)) == pytest.approx(3 + 1 + 1)
    # Rank-deficient covariances (fewer samples than dimensions) stay finite and agree.
    c, d = rng.randn(5, 8), rng.randn(6, 8)
    sc, sd = np.cov(c, rowvar=False), np.cov(d, rowvar=False)
    ref = np.sum((c.mean(0) - d.mean(0)) ** 2) + np.trace(sc) + np.trace(sd) - 2 * np.trace(scipy.linalg.sqrtm(sc @ sd).real)
    assert fid_kid.frechet_distance(c.mean(0), sc, d.mean(0), sd) == pytest.approx(ref, rel=1e-5, abs=1e-6)


def test_feature_stats_mean_cov_equal_numpy():
    x = torch.randn(250, 5, dtype=torch.float64) * 3 + 1
    st = metric_utils.FeatureStats(capture_all=True, capture_mean_cov=True)
    st.append(x[:100])
    st.append(x[100:])
    mu, cov = st.get_mean_cov()
    np.testing.assert_allclose(mu, x.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x.numpy(), rowvar=False), rtol=1e-10)
    np.testing.assert_allclose(st.get_all(), x.numpy().astype(np.float32))


def test_kid_matches_explicit_unbiased_mmd():
    rng = np.random.RandomState(0)
    x, y = rng.randn(30, 4), rng.randn(30, 4) + 0.3
    k = lambda a, b: (a @ b.T / 4 + 1) ** 3
    m = 30
    kxx, kyy, kxy = k(y, y), k(x, x), k(y, x)
    mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    # One subset of the full size with replace=False is a permutation: the estimate is exact.
    assert fid_kid.kernel_distance(x, y, num_subsets=1, max_subset_size=m) == pytest.approx(mmd, rel=1e-10)


# --- FID / KID / SWD behaviour with the test feature net -----------------------------------

@needs_mini
def test_fid_and_kid_real_halves_far_below_real_vs_noise(faces):
    net = RandomFeatureNet()
    fa, fb = _features(net, faces[:256]), _features(net, faces[256:])
    fn = _features(net, _noise_images(256))
    fid_halves, fid_noise = _fid(fa, fb), _fid(fa, fn)
    assert fid_halves * 20 < fid_noise, (fid_halves, fid_noise)
    kid_halves = fid_kid.kernel_distance(fa.numpy(), fb.numpy(), num_subsets=20, max_subset_size=200)
    kid_noise = fid_kid.kernel_distance(fa.numpy(), fn.numpy(), num_subsets=20, max_subset_size=200)
    assert abs(kid_halves) * 20 < kid_noise, (kid_halves, kid_noise)


def _blur(imgs, sigma):
    from scipy import ndimage
    x = imgs.numpy().astype(np.float64)
    return torch.from_numpy(np.round(ndimage.gaussian_filter(x, (0, 0, sigma, sigma))).clip(0, 255).astype(np.uint8))


def test_sliced_wasserstein_of_identical_descriptors_is_zero():
    d = torch.randn(500, 147)
    assert swd.sliced_wasserstein(d, d.clone(), np.random.RandomState(0)) == 0.0


def test_laplacian_pyramid_reconstructs_image():
    x = torch.rand(2, 3, 64, 64) * 255
    pyr = swd.laplacian_pyramid(x, 3)
    assert [p.shape[-1] for p in pyr] == [64, 32, 16]
    rec = pyr[-1]
    for band in reversed(pyr[:-1]):
        rec = swd.pyr_up(rec) + band
    torch.testing.assert_close(rec, x, rtol=0, atol=1e-3)


@needs_mini
def test_swd_near_zero_for_same_set_and_grows_with_blur(faces):
    x = faces[:128]
    same = swd.swd_of_image_sets(x, x)["avg"]
    blur1 = swd.swd_of_image_sets(x, _blur(x, 1.0))["avg"]
    blur2 = swd.swd_of_image_sets(x, _blur(x, 2.0))["avg"]
    assert same * 2 < blur1 < blur2, (same, blur1, blur2)   # same set: only patch-sampling noise
    assert set(swd.swd_of_image_sets(x[:64], x[:64]).keys()) == {"64", "32", "16", "avg"}


# --- Generator path with a stand-in generator ----------------------------------------------

class FaceGenerator(torch.nn.Module):
    """Stand-in with the Generator call signature: returns dataset faces (picked by z), darkened
    in proportion to |q|, or uniform noise. Records the q it was given."""

    def __init__(self, faces, noise=False, q_dim=4):
        super().__init__()
        self.faces = faces.float() / 127.5 - 1
        self.noise = noise
        self.z_dim, self.c_dim, self.w_dim, self.q_dim = 8, 0, 8, q_dim
        self.img_resolution, self.img_channels = faces.shape[-1], faces.shape[1]
        self.seen_q = []

    def forward(self, z, c, q=None, truncation_psi=1, truncation_cutoff=None, noise_mode="const"):
        assert c.shape == (z.shape[0], 0)
        self.seen_q.append(None if q is None else q.clone())
        if self.noise:
            return torch.rand([z.shape[0], 3, self.img_resolution, self.img_resolution]) * 2 - 1
        idx = (z[:, 0].abs() * 1e6).long() % len(self.faces)
        img = self.faces[idx]
        if q is not None:
            img = (img + 1) * torch.exp(-q.norm(dim=1))[:, None, None, None] - 1
        return img


@needs_mini
def test_calc_metric_generator_path_sharp_and_degraded(faces, tmp_path):
    kw = dict(dataset_kwargs={"path": MINI}, feature_net="random", cache_dir=str(tmp_path), device="cpu")
    good, bad = FaceGenerator(faces), FaceGenerator(faces, noise=True)
    fid_good = metric_main.calc_metric("fid256_full", G=good, **kw)["results"]["fid256_full"]
    fid_bad = metric_main.calc_metric("fid256_full", G=bad, **kw)["results"]["fid256_full"]
    assert fid_good * 10 < fid_bad
    assert all(q is not None and float(q.abs().max()) == 0 for q in good.seen_q)   # sharp: q = 0
    good.seen_q.clear()
    ident = lambda x, generator: (x, [{}] * x.shape[0])                            # no-op "degradation"
    res = metric_main.calc_metric("fid256_degraded_full", G=good, degradation=ident, **kw)
    assert all(float(q.abs().min()) > 0 for q in good.seen_q)                       # degraded: q ~ N(0, I)
    assert res["results"]["fid256_degraded_full"] > fid_good                        # darkened faces vs sharp reals
    swd_res = metric_main.calc_metric("swd128", G=good, **kw)["results"]
    assert {"swd128", "swd128_res64", "swd128_res32", "swd128_res16"} <= set(swd_res)


@needs_mini
def test_real_statistics_are_cached_on_disk(faces, tmp_path, monkeypatch):
    kw = dict(G=FaceGenerator(faces), dataset_kwargs={"path": MINI}, feature_net="random",
              cache_dir=str(tmp_path), device="cpu")
    first = metric_main.calc_metric("kid128_full", **kw)["results"]["kid128_full"]
    files = os.listdir(tmp_path)
    assert len(files) == 1 and "utkface64-mini" in files[0] and "-sharp-" in files[0]

    def boom(*args, **kwargs):
        raise AssertionError("real images read although cached")
    monkeypatch.setattr(metric_utils, "iterate_real_images", boom)
    assert metric_main.calc_metric("kid128_full", **kw)["results"]["kid128_full"] == first
    with pytest.raises(AssertionError, match="cached"):                 # other mode: another key
        metric_main.calc_metric("kid128_degraded_full", degradation=lambda x, generator: (x, []), **kw)


@needs_mini
def test_degraded_reals_use_paper_pipeline_deterministically():
    pytest.importorskip("degradations")
    opts = metric_utils.MetricOptions(dataset_kwargs={"path": MINI}, device="cpu")
    a = next(metric_utils.iterate_real_images(opts, "degraded", 16))
    b = next(metric_utils.iterate_real_images(opts, "degraded", 16))
    sharp = next(metric_utils.iterate_real_images(opts, "sharp", 16))
    assert a.dtype == torch.uint8 and a.shape == (16, 3, 64, 64)
    assert torch.equal(a, b) and not torch.equal(a, sharp)
    opts2 = metric_utils.MetricOptions(dataset_kwargs={"path": MINI}, device="cpu", degrade_seed=1)
    assert not torch.equal(next(metric_utils.iterate_real_images(opts2, "degraded", 16)), a)


def test_chunks_cover_every_item_once_for_any_world_size():
    for world in (1, 2, 3):
        seen = []
        for rank in range(world):
            opts = metric_utils.MetricOptions(num_gpus=world, rank=rank)
            steps = list(metric_utils._my_chunks(1000, opts))
            assert len(steps) == -(-16 // world)                         # same step count on every rank
            seen += [i for _k, s, e in steps for i in range(s, e)]
        assert sorted(seen) == list(range(1000))


def test_generator_metrics_need_q_for_degraded_mode():
    G = FaceGenerator(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), q_dim=0)
    opts = metric_utils.MetricOptions(G=G)
    with pytest.raises(UserError, match="q_dim"):
        metric_utils.generate_images(opts, "degraded", 0, 2)


# --- Registry and reporting ----------------------------------------------------------------

def test_registry_names_and_counted_variants(tmp_path):
    names = metric_main.list_valid_metrics()
    for n in ("fid50k_full", "fid50k_degraded_full", "kid50k_full", "kid50k_degraded_full", "fid10k_full",
              "fid2k_full", "fid2k_degraded_full", "swd16k", "swd16k_degraded", "swd2k"):
        assert n in names
    assert metric_main.parse_metric_list("fid300_full, swd1k_degraded") == ["fid300_full", "swd1k_degraded"]
    with pytest.raises(UserError, match="unknown metric 'fidd'"):
        metric_main.parse_metric_list("fidd")
    result = {"results": {"fid2k_full": 12.5}, "metric": "fid2k_full", "total_time": 3.0,
              "total_time_str": "3s", "num_gpus": 1}
    path = metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl="/x/network-snapshot-000100.pkl", kimg=100)
    metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl="/x/network-snapshot-000200.pkl", kimg=200)
    lines = [json.loads(l) for l in open(path)]
    assert os.path.basename(path) == "metric-fid2k_full.jsonl" and len(lines) == 2
    assert lines[1]["snapshot_pkl"] == "network-snapshot-000200.pkl" and lines[1]["kimg"] == 200
    assert lines[0]["results"]["fid2k_full"] == 12.5 and "timestamp" in lines[0]


# --- Feature nets and Inception loading ----------------------------------------------------

def test_inception_matches_torchvision_layout():
    tv = pytest.importorskip("torchvision")
    ours = InceptionV3FID().state_dict()
    ref = tv.models.inception_v3(weights=None, aux_logits=False, init_weights=False).state_dict()
    assert set(ours) == set(ref) - {"fc.weight", "fc.bias"}
    assert all(ours[k].shape == ref[k].shape for k in ours)


def test_inception_forward_equals_torchvision_except_fid_pools(monkeypatch):
    # With torchvision's pooling (average including padding, average in Mixed_7c) the network
    # must compute exactly torchvision's pool features: same wiring, same weights.
    tv = pytest.importorskip("torchvision")
    import metrics.inception as inc
    torch.manual_seed(0)
    ref = tv.models.inception_v3(weights=None, aux_logits=False, init_weights=True, transform_input=False).eval()
    ref.fc = torch.nn.Identity()
    ours = InceptionV3FID().eval()
    ours.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")})
    monkeypatch.setattr(inc, "_avg_pool", lambda x: torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1))
    ours.Mixed_7c.pool = "avg"
    x = torch.randn(1, 3, 299, 299)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


def test_tf1_resize_formula():
    x = torch.tensor([[[[0.0, 10.0]]]]).repeat(1, 1, 2, 1)               # [1, 1, 2, 2]
    y = resize_tf1(x, size=4)
    torch.testing.assert_close(y[0, 0, 0], torch.tensor([0.0, 5.0, 10.0, 10.0]))


def test_state_dict_inception_files_load(tmp_path):
    torch.manual_seed(0)
    net = InceptionV3FID()
    state = {"module." + k: v for k, v in net.state_dict().items()}
    state["module.fc.weight"] = torch.zeros(1008, 2048)
    for name, resize in (("pt_inception-2015-12-05-6726825d.pth", "torch"),
                         ("weights-inception-2015-12-05-6726825d.pth", "tf1")):
        torch.save(state, tmp_path / name)
        loaded = load_inception(str(tmp_path / name))
        assert isinstance(loaded, InceptionStateDict) and loaded.resize == resize
        torch.testing.assert_close(loaded.net.Mixed_7c.branch_pool.conv.weight, net.Mixed_7c.branch_pool.conv.weight)
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="not an Inception-v3 FID state dict"):
        load_inception(str(tmp_path / "bad.pth"))


@pytest.mark.slow
def test_state_dict_inception_features_shape(tmp_path):
    net = InceptionStateDict(None, resize="tf1")
    with torch.no_grad():
        f = net(torch.randint(0, 256, [2, 1, 32, 32], dtype=torch.uint8))
    assert f.shape == (2, 2048) and torch.isfinite(f).all()


class _FakeTorchScriptInception(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return x.float().mean(dim=(2, 3)).repeat(1, 4)


def test_torchscript_inception_is_called_with_uint8_and_return_features(tmp_path, monkeypatch):
    monkeypatch.setenv("QC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.jit.script(_FakeTorchScriptInception()).save(str(tmp_path / "inception-2015-12-05.pt"))
    net = load_feature_net(None)                                          # found in the cache dir
    assert isinstance(net, InceptionTorchScript)
    x = torch.randint(0, 256, [2, 1, 8, 8], dtype=torch.uint8)
    torch.testing.assert_close(net(x), x.float().mean(dim=(2, 3)).repeat(1, 12))


def test_missing_inception_names_files_and_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("QC_CACHE_DIR", str(tmp_path / "qc"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(UserError) as err:
        load_feature_net(None)
    msg = str(err.value)
    assert "inception-2015-12-05.pt" in msg and str(tmp_path / "qc") in msg
    assert "pt_inception-2015-12-05-6726825d.pth" in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    with pytest.raises(UserError, match="not found"):
        load_feature_net(str(tmp_path / "nope.pt"))
    with pytest.raises(UserError, match="inception-2015-12-05.pt"):          # before any training
        metric_main.preflight("swd2k,fid50k_full")
    metric_main.preflight("swd2k,swd16k_degraded")                           # SWD needs no weights
    metric_main.preflight("kid2k_full", feature_net="random")


# --- torch.distributed: two CPU ranks give the single-process numbers ----------------------

def _dist_worker(rank, world, init_file, out_file):
    import torch.distributed as dist
    from training.dataset import ImageDataset
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ds = ImageDataset(MINI)
        faces = torch.from_numpy(np.stack([ds[i][0] for i in range(len(ds))]))
        out = {}
        for name in ("fid200_full", "swd130"):
            res = metric_main.calc_metric(name, G=FaceGenerator(faces), dataset_kwargs={"path": MINI},
                                          num_gpus=world, rank=rank, device="cpu", feature_net="random",
                                          cache_dir="")
            out[name] = res["results"][name]
        if rank == 0:
            with open(out_file, "w") as f:
                json.dump(out, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@needs_mini
def test_two_ranks_match_single_process(faces, tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "out.json")), nprocs=2, join=True)
    dist_res = json.load(open(tmp_path / "out.json"))
    for name in ("fid200_full", "swd130"):
        single = metric_main.calc_metric(name, G=FaceGenerator(faces), dataset_kwargs={"path": MINI},
                                         device="cpu", feature_net="random", cache_dir="")["results"][name]
        assert dist_res[name] == pytest.approx(single, rel=1e-5), name
