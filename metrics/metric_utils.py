"""Shared machinery of the generator metrics: options, image streams, feature statistics, cache.

Determinism: real and generated images are processed in fixed chunks of ``CHUNK`` items; chunk
``k`` goes to rank ``k % num_gpus`` and draws its randomness (degradation, z, q, labels, noise)
from seeds derived from ``k`` alone. Results therefore do not depend on the number of GPUs.

Modes: ``'sharp'`` compares G(z, c, q=0) with the real images; ``'degraded'`` compares G(z, c, q)
with q ~ N(0, I) against real images degraded by the training pipeline (``build_pipeline``, the
``'paper'`` mix by default) with a fixed seed (QC-StyleGAN, Table 1).
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
from typing import Any, Iterator, Optional

import numpy as np
import torch
from tqdm import tqdm

import dnnlib
from dnnlib.image_io import PIXEL_RANGE, to_uint8
from degradations import build_pipeline
from dnnlib.util import UserError
from metrics.feature_nets import FeatureNet, load_feature_net
from torch_utils.misc import assert_shape

CHUNK = 64                    # images per processing chunk (fixed: part of the determinism)
MODES = ("sharp", "degraded")
CACHE_VERSION = 1
DEFAULT_DATASET_CLASS = "training.dataset.ImageDataset"


class MetricOptions:
    """Everything a metric function needs.

    G               generator (interface of ``training.networks.Generator``); None for
                    dataset-only use.
    G_kwargs        extra keyword arguments for ``G(...)`` (default: noise_mode='random',
                    truncation_psi=1, as the StyleGAN metrics do).
    dataset_kwargs  kwargs of the dataset class (``path`` required; ``class_name`` optional,
                    default ``training.dataset.ImageDataset``).
    num_gpus, rank  torch.distributed world size and this process' rank.
    device          where G and the feature net run (None: G's device, else CPU).
    cache_dir       real-statistics cache folder; None = ``<dnnlib cache>/gan-metrics``.
    feature_net     FeatureNet, file path, 'random' or None (cache locations), for FID/KID.
    inception_resize  'auto', 'tf1' or 'torch' (state-dict Inception files).
    degradation     pipeline name/spec for ``build_pipeline`` or a pipeline object.
    degrade_seed    base seed of the real-image degradations.
    seed            base seed of z, q, labels and noise.
    progress        show tqdm progress bars (rank 0).
    """

    def __init__(self, G=None, G_kwargs=None, dataset_kwargs=None, num_gpus: int = 1, rank: int = 0,
                 device=None, cache_dir: Optional[str] = None, feature_net=None,
                 inception_resize: str = "auto", degradation: Any = "paper", degrade_seed: int = 0,
                 seed: int = 0, progress: bool = False):
        self.G = G
        self.G_kwargs = dict(noise_mode="random", truncation_psi=1)
        self.G_kwargs.update(G_kwargs or {})
        self.dataset_kwargs = dnnlib.EasyDict(dataset_kwargs or {})
        self.num_gpus = int(num_gpus)
        self.rank = int(rank)
        if device is None:      # default: where G lives, else the CPU
            params = list(G.parameters()) if isinstance(G, torch.nn.Module) else []
            device = params[0].device if params else "cpu"
        self.device = torch.device(device)
        self.cache_dir = cache_dir if cache_dir is not None else os.path.join(dnnlib.util.cache_dir(), "gan-metrics")
        self.feature_net = feature_net
        self.inception_resize = inception_resize
        self.degradation = degradation
        self.degrade_seed = int(degrade_seed)
        self.seed = int(seed)
        self.progress = bool(progress) and self.rank == 0
        self._dataset = None


# ---------------------------------------------------------------------------------------------
# Datasets.

def _import_by_name(name: str):
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"cannot import dataset class {name}: {exc}") from None


def open_dataset(opts: MetricOptions):
    """The full real dataset (no subset, no mirroring), labels on when G is conditional."""
    if opts._dataset is None:
        kwargs = dict(opts.dataset_kwargs)
        if not kwargs.get("path"):
            raise UserError("this metric needs the real images: pass --data DATASET (a ZIP or folder)")
        cls = _import_by_name(kwargs.pop("class_name", DEFAULT_DATASET_CLASS))
        kwargs["max_size"] = None
        kwargs["xflip"] = False
        if opts.G is not None and getattr(opts.G, "c_dim", 0) > 0:
            kwargs["use_labels"] = True
        opts._dataset = cls(**kwargs)
    ds = opts._dataset
    if opts.G is not None and ds.resolution != opts.G.img_resolution:
        raise UserError(f"dataset resolution {ds.resolution} does not match the generator's "
                        f"{opts.G.img_resolution}")
    return ds


def dataset_identity(opts: MetricOptions) -> dict:
    """What identifies the real data in cache keys: path, size and mtime, and the kwargs."""
    path = os.path.abspath(os.fspath(opts.dataset_kwargs.get("path", "")))
    stat = os.stat(path) if os.path.exists(path) else None
    kwargs = {k: v for k, v in opts.dataset_kwargs.items() if k not in ("path",)}
    return {"path": path, "size": stat.st_size if stat else None,
            "mtime": int(stat.st_mtime) if stat else None, "kwargs": kwargs}


# ---------------------------------------------------------------------------------------------
# Distributed helpers.

def _my_chunks(num_items: int, opts: MetricOptions) -> Iterator[tuple]:
    """(chunk index, start, stop) of the chunks this rank processes; every rank yields the same
    number of steps (missing ones as empty ranges) so collective calls stay matched."""
    num_chunks = (num_items + CHUNK - 1) // CHUNK
    steps = (num_chunks + opts.num_gpus - 1) // opts.num_gpus
    for step in range(steps):
        k = step * opts.num_gpus + opts.rank
        start = min(k * CHUNK, num_items)
        yield k, start, min(start + CHUNK, num_items)


def gather_rows(x: torch.Tensor, opts: MetricOptions, max_rows: int = CHUNK) -> torch.Tensor:
    """Concatenate ``x`` [n, ...] (n <= max_rows, may be 0) from all ranks, in rank order."""
    if opts.num_gpus == 1:
        return x
    count = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(count) for _ in range(opts.num_gpus)]
    torch.distributed.all_gather(counts, count)
    padded = torch.zeros([max_rows, *x.shape[1:]], dtype=x.dtype, device=x.device)
    padded[:x.shape[0]] = x
    parts = [torch.zeros_like(padded) for _ in range(opts.num_gpus)]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([p[:int(c)] for p, c in zip(parts, counts)])


def _progress(opts: MetricOptions, total: int, desc: str):
    if not opts.progress:
        return None
    return tqdm(total=total, desc=desc, unit="img", leave=False)


# ---------------------------------------------------------------------------------------------
# Image streams (uint8 [n, C, H, W] on opts.device).

def _build_degradation(opts: MetricOptions, resolution: int):
    if callable(opts.degradation):
        return opts.degradation
    return build_pipeline(opts.degradation, resolution=resolution)


def degradation_name(opts: MetricOptions) -> str:
    d = opts.degradation
    if isinstance(d, str):
        return d
    if isinstance(d, dict):
        return json.dumps(d, sort_keys=True)
    return getattr(d, "name", type(d).__name__)


def _chunk_seed(base: int, k: int, salt: int) -> int:
    return (base * 1_000_003 + k * 7919 + salt) % (1 << 62)


def iterate_real_images(opts: MetricOptions, mode: str, num_items: Optional[int] = None,
                        order: Optional[np.ndarray] = None, desc: str = "real") -> Iterator[torch.Tensor]:
    """Real images of this rank's chunks, degraded in mode 'degraded'. ``order`` (a permutation
    of dataset indices) selects which items; ``num_items`` caps the count."""
    assert mode in MODES
    ds = open_dataset(opts)
    n = len(ds) if num_items is None else min(num_items, len(ds))
    pipe = _build_degradation(opts, ds.resolution) if mode == "degraded" else None
    bar = _progress(opts, n, desc)
    for k, start, stop in _my_chunks(n, opts):
        idx = range(start, stop) if order is None else order[start:stop]
        if stop > start:
            imgs = torch.from_numpy(np.stack([ds[int(i)][0] for i in idx]))
        else:
            imgs = torch.zeros([0, ds.num_channels, ds.resolution, ds.resolution], dtype=torch.uint8)
        if pipe is not None and imgs.shape[0] > 0:
            gen = torch.Generator().manual_seed(_chunk_seed(opts.degrade_seed, k, 1))
            if imgs.shape[1] != 3:
                raise UserError("degraded metrics need RGB datasets (the degradation pipeline is RGB)")
            y, _records = pipe(imgs.to(opts.device, torch.float32), generator=gen)
            imgs = to_uint8(y, PIXEL_RANGE)
        if bar is not None:
            bar.update((stop - start) * opts.num_gpus)
        yield imgs.to(opts.device)
    if bar is not None:
        bar.close()


def _labels(ds, count: int, gen: torch.Generator) -> torch.Tensor:
    idx = torch.randint(len(ds), [count], generator=gen).tolist()
    getter = getattr(ds, "get_label", None)
    labels = [getter(i) if getter else ds[i][1] for i in idx]
    return torch.from_numpy(np.stack(labels).astype(np.float32))


@torch.no_grad()
def generate_images(opts: MetricOptions, mode: str, k: int, count: int) -> torch.Tensor:
    """Chunk ``k`` of generated images: uint8 [count, C, H, W] on opts.device."""
    G = opts.G
    gen = torch.Generator().manual_seed(_chunk_seed(opts.seed, k, 2))
    z = torch.randn([count, G.z_dim], generator=gen)
    if G.c_dim > 0:
        c = _labels(open_dataset(opts), count, gen)
    else:
        c = torch.zeros([count, 0])
    q_dim = getattr(G, "q_dim", 0)
    if mode == "degraded":
        if q_dim == 0:
            raise UserError("degraded metrics need a QC-StyleGAN generator (q_dim > 0); this one has q_dim=0")
        q = torch.randn([count, q_dim], generator=gen).to(opts.device)
    else:
        q = torch.zeros([count, q_dim], device=opts.device) if q_dim > 0 else None
    noise_seed = int(torch.randint(1 << 31, [1], generator=gen))
    devices = [opts.device] if opts.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(noise_seed)
        img = G(z.to(opts.device), c.to(opts.device), q=q, **opts.G_kwargs)
    assert_shape(img, [count, G.img_channels, G.img_resolution, G.img_resolution])
    return to_uint8(img)


def iterate_generated_images(opts: MetricOptions, mode: str, num_items: int,
                             desc: str = "generated") -> Iterator[torch.Tensor]:
    assert mode in MODES
    if opts.G is None:
        raise UserError("this metric needs a generator")
    bar = _progress(opts, num_items, desc)
    for k, start, stop in _my_chunks(num_items, opts):
        if stop > start:
            yield generate_images(opts, mode, k, stop - start)
        else:
            G = opts.G
            yield torch.zeros([0, G.img_channels, G.img_resolution, G.img_resolution],
                              dtype=torch.uint8, device=opts.device)
        if bar is not None:
            bar.update((stop - start) * opts.num_gpus)
    if bar is not None:
        bar.close()


# ---------------------------------------------------------------------------------------------
# Feature statistics.

class FeatureStats:
    """Accumulates features [n, D]: all rows (``capture_all``, float32) and/or running sums for
    the mean and covariance (``capture_mean_cov``, float64)."""

    def __init__(self, capture_all: bool = False, capture_mean_cov: bool = False):
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.num_items = 0
        self.all = []
        self.sum = None
        self.sum_outer = None

    def append(self, x: torch.Tensor) -> None:
        # x: [n, D] float
        assert_shape(x, [None, None])
        if x.shape[0] == 0:
            return
        if self.capture_all:
            self.all.append(x.detach().to("cpu", torch.float32).numpy())
        if self.capture_mean_cov:
            x64 = x.detach().to(torch.float64)
            s, so = x64.sum(0), x64.T @ x64
            self.sum = s if self.sum is None else self.sum + s
            self.sum_outer = so if self.sum_outer is None else self.sum_outer + so
        self.num_items += int(x.shape[0])

    def get_all(self) -> np.ndarray:
        assert self.capture_all
        return np.concatenate(self.all) if self.all else np.zeros([0, 0], np.float32)

    def get_mean_cov(self):
        """Mean [D] and unbiased covariance [D, D] (``np.cov`` convention), float64."""
        assert self.capture_mean_cov and self.num_items >= 2
        n = self.num_items
        s = self.sum.cpu().numpy()
        so = self.sum_outer.cpu().numpy()
        mu = s / n
        cov = (so - n * np.outer(mu, mu)) / (n - 1)
        return mu, cov

    def save(self, path: str) -> None:
        arrays = {"num_items": np.array(self.num_items)}
        if self.capture_all:
            arrays["all"] = self.get_all()
        if self.capture_mean_cov:
            arrays["sum"] = self.sum.cpu().numpy()
            arrays["sum_outer"] = self.sum_outer.cpu().numpy()
        with dnnlib.util.atomic_write(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str) -> "FeatureStats":
        with np.load(path) as data:
            stats = cls(capture_all="all" in data, capture_mean_cov="sum" in data)
            stats.num_items = int(data["num_items"])
            if stats.capture_all:
                stats.all = [data["all"]]
            if stats.capture_mean_cov:
                stats.sum = torch.from_numpy(data["sum"])
                stats.sum_outer = torch.from_numpy(data["sum_outer"])
        return stats


_feature_net_cache = {}


def get_feature_net(opts: MetricOptions):
    spec = opts.feature_net
    if isinstance(spec, FeatureNet):
        return spec.to(opts.device)
    key = (str(spec), opts.inception_resize, str(opts.device))
    if key not in _feature_net_cache:
        _feature_net_cache[key] = load_feature_net(spec, device=opts.device, resize=opts.inception_resize)
    return _feature_net_cache[key]


def _cache_path(opts: MetricOptions, kind: str, mode: str, key: dict) -> str:
    digest = hashlib.md5(json.dumps(key, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:12]
    name = os.path.splitext(os.path.basename(str(opts.dataset_kwargs.get("path", "data")).rstrip("/")))[0]
    return os.path.join(opts.cache_dir, f"{name}-{kind}-{mode}-{digest}.npz")


@torch.no_grad()
def compute_real_stats(opts: MetricOptions, net, mode: str, max_items: Optional[int] = None,
                       capture_all: bool = False, capture_mean_cov: bool = False) -> FeatureStats:
    """Feature statistics of the real images, cached on disk (key: dataset identity, mode,
    degradation and seed, feature net, count, what is captured)."""
    key = {"version": CACHE_VERSION, "data": dataset_identity(opts), "mode": mode,
           "feature_net": net.name, "max_items": max_items, "chunk": CHUNK,
           "capture_all": capture_all, "capture_mean_cov": capture_mean_cov}
    if mode == "degraded":
        key["degradation"] = degradation_name(opts)
        key["degrade_seed"] = opts.degrade_seed
    path = _cache_path(opts, "features", mode, key)
    if opts.cache_dir and os.path.isfile(path):
        return FeatureStats.load(path)
    stats = FeatureStats(capture_all, capture_mean_cov)
    for imgs in iterate_real_images(opts, mode, max_items, desc=f"real {mode} features"):
        feats = net(imgs) if imgs.shape[0] > 0 else torch.zeros([0, net.feature_dim], device=opts.device)
        stats.append(gather_rows(feats, opts))
    if opts.cache_dir and opts.rank == 0:
        stats.save(path)
    return stats


@torch.no_grad()
def compute_generator_stats(opts: MetricOptions, net, mode: str, num_items: int,
                            capture_all: bool = False, capture_mean_cov: bool = False) -> FeatureStats:
    stats = FeatureStats(capture_all, capture_mean_cov)
    for imgs in iterate_generated_images(opts, mode, num_items, desc=f"generated {mode} features"):
        feats = net(imgs) if imgs.shape[0] > 0 else torch.zeros([0, net.feature_dim], device=opts.device)
        stats.append(gather_rows(feats, opts))
    return stats
