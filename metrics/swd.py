"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al., "Progressive Growing
of GANs", ICLR 2018, Sec. 5 and Appendix D).

For every pyramid level (from the image resolution down to 16x16; the last level is the
Gaussian low-pass, the others band-pass) 128 random 7x7 neighbourhoods are taken per image,
each channel normalised by the mean and std of its set, and the distance between the two sets
of 7x7xC descriptors is estimated with 4 x 128 random unit directions: project, sort, mean
absolute difference. Values are reported x 1e3, per level and averaged, as ProGAN does. Needs
no pretrained network.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from metrics import metric_utils
from torch_utils.misc import assert_shape

BINOMIAL_5 = np.array([1, 4, 6, 4, 1], dtype=np.float64) / 16   # cv2.pyrDown / pyrUp kernel
NHOOD_SIZE = 7
NHOODS_PER_IMAGE = 128
DIR_REPEATS = 4
DIRS_PER_REPEAT = 128
MIN_RESOLUTION = 16
REPORT_SCALE = 1e3


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    # x: [N, C, H, W] float32; 5x5 binomial filter, mirrored borders (d c b | a b c d)
    c = x.shape[1]
    k = torch.tensor(np.outer(BINOMIAL_5, BINOMIAL_5) * gain, dtype=x.dtype, device=x.device)
    x = F.pad(x, [2, 2, 2, 2], mode="reflect")
    return F.conv2d(x, k[None, None].repeat(c, 1, 1, 1), groups=c)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[:, :, ::2, ::2]


def pyr_up(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    up = torch.zeros([n, c, h * 2, w * 2], dtype=x.dtype, device=x.device)
    up[:, :, ::2, ::2] = x
    return _blur(up, gain=4.0)


def pyramid_resolutions(resolution: int) -> List[int]:
    res, out = resolution, []
    while res >= MIN_RESOLUTION:
        out.append(res)
        res //= 2
    return out


def laplacian_pyramid(x: torch.Tensor, num_levels: int) -> List[torch.Tensor]:
    """x: [N, C, H, W] float32 -> levels [N, C, H / 2^i, W / 2^i], band-pass then low-pass."""
    pyramid = [x]
    for _ in range(1, num_levels):
        pyramid.append(pyr_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - pyr_up(pyramid[-1])
    return pyramid


def random_patches(x: torch.Tensor, per_image: int, rng: np.random.RandomState) -> torch.Tensor:
    """Random 7x7 neighbourhoods. x: [N, C, H, W] -> [N * per_image, C, 7, 7]."""
    n, c, h, w = x.shape
    r = NHOOD_SIZE // 2
    cy = torch.from_numpy(rng.randint(r, h - r, size=n * per_image)).to(x.device)
    cx = torch.from_numpy(rng.randint(r, w - r, size=n * per_image)).to(x.device)
    img = torch.arange(n, device=x.device).repeat_interleave(per_image)
    off = torch.arange(-r, r + 1, device=x.device)
    ys = (cy[:, None] + off[None, :])[:, :, None]                   # [P, 7, 1]
    xs = (cx[:, None] + off[None, :])[:, None, :]                   # [P, 1, 7]
    patches = x.permute(0, 2, 3, 1)[img[:, None, None], ys, xs]     # [P, 7, 7, C]
    return patches.permute(0, 3, 1, 2).contiguous()


def normalize_descriptors(desc: torch.Tensor) -> torch.Tensor:
    """desc: [P, C, 7, 7] -> [P, C * 49], each channel standardised over the whole set."""
    assert_shape(desc, [None, None, NHOOD_SIZE, NHOOD_SIZE])
    desc = desc.to(torch.float64)
    desc = desc - desc.mean(dim=(0, 2, 3), keepdim=True)
    desc = desc / desc.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
    return desc.reshape(desc.shape[0], -1).to(torch.float32)


def _sorted_projections(x: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Projections onto each direction, sorted: [P, D] @ [D, K] -> [K, P]. NumPy sorts on the
    CPU (an order of magnitude faster than torch.sort there), torch on GPUs."""
    proj = (dirs.T @ x.T).contiguous()
    if proj.device.type == "cpu":
        return torch.from_numpy(np.sort(proj.numpy(), axis=1))
    return torch.sort(proj, dim=1)[0]


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, rng: np.random.RandomState,
                       dir_repeats: int = DIR_REPEATS, dirs_per_repeat: int = DIRS_PER_REPEAT) -> float:
    """Approximate SWD between descriptor sets a, b: [P, D] (same P)."""
    assert a.shape == b.shape, f"descriptor sets differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}"
    results = []
    for _ in range(dir_repeats):
        dirs = rng.randn(a.shape[1], dirs_per_repeat)
        dirs /= np.sqrt(np.sum(dirs ** 2, axis=0, keepdims=True))
        dirs = torch.from_numpy(dirs.astype(np.float32)).to(a.device)
        pa, pb = _sorted_projections(a, dirs), _sorted_projections(b, dirs)
        results.append(float((pa - pb).abs().to(torch.float64).mean()))
    return float(np.mean(results))


class PyramidDescriptors:
    """Collects per-level patch descriptors of a stream of uint8 images."""

    def __init__(self, resolution: int, salt: int, seed: int = 0):
        self.resolutions = pyramid_resolutions(resolution)
        self.levels: List[List[torch.Tensor]] = [[] for _ in self.resolutions]
        self.salt, self.seed = salt, seed

    def add(self, images: torch.Tensor, k: int, opts=None) -> None:
        # images: [n, C, H, W] uint8 (chunk k)
        rng = np.random.RandomState((self.seed * 7919 + k * 31 + self.salt) % (1 << 32))
        x = images.to(torch.float32)
        pyramid = laplacian_pyramid(x, len(self.resolutions)) if x.shape[0] > 0 else [None] * len(self.resolutions)
        c = images.shape[1]
        for lod, level in enumerate(pyramid):
            if level is not None:
                desc = random_patches(level, NHOODS_PER_IMAGE, rng)
            else:
                desc = torch.zeros([0, c, NHOOD_SIZE, NHOOD_SIZE], device=images.device)
            if opts is not None:
                desc = metric_utils.gather_rows(desc, opts, metric_utils.CHUNK * NHOODS_PER_IMAGE)
            self.levels[lod].append(desc.cpu())

    def finalize(self) -> List[torch.Tensor]:
        return [normalize_descriptors(torch.cat(parts)) for parts in self.levels]


def swd_between(desc_a: List[torch.Tensor], desc_b: List[torch.Tensor], resolutions: List[int],
                seed: int = 0) -> Dict[str, float]:
    """Per-level SWD x 1e3 (keys '<res>') and their mean ('avg')."""
    rng = np.random.RandomState(seed)
    out = {str(res): sliced_wasserstein(a, b, rng) * REPORT_SCALE for res, a, b in zip(resolutions, desc_a, desc_b)}
    out["avg"] = float(np.mean(list(out.values())))
    return out


def swd_of_image_sets(a: torch.Tensor, b: torch.Tensor, seed: int = 0) -> Dict[str, float]:
    """SWD between two uint8 image batches [N, C, H, W] of equal shape (library/test helper)."""
    assert a.shape == b.shape
    da, db = PyramidDescriptors(a.shape[2], salt=1, seed=seed), PyramidDescriptors(b.shape[2], salt=2, seed=seed)
    for k, start in enumerate(range(0, a.shape[0], metric_utils.CHUNK)):
        da.add(a[start:start + metric_utils.CHUNK], k)
        db.add(b[start:start + metric_utils.CHUNK], k)
    return swd_between(da.finalize(), db.finalize(), da.resolutions, seed)


@torch.no_grad()
def compute_swd(opts: metric_utils.MetricOptions, mode: str, num_images: int,
                gen_mode: Optional[str] = None) -> Dict[str, float]:
    """SWD between ``n = min(num_images, len(dataset))`` real images (a seeded random subset,
    degraded in mode 'degraded') and n generated images of ``gen_mode`` (default: the same mode;
    'sharp' against degraded reals scores a plain generator trained on degraded images, the
    baseline of the paper's Table 1)."""
    real = real_descriptors(opts, mode, num_images)
    fake = generated_descriptors(opts, gen_mode or mode, num_images)
    if opts.rank != 0:
        return {"avg": float("nan")}
    return swd_between(real, fake, pyramid_resolutions(metric_utils.open_dataset(opts).resolution), opts.seed)


def _sample_count(opts: metric_utils.MetricOptions, num_images: int) -> int:
    return min(num_images, len(metric_utils.open_dataset(opts)))


def real_descriptors(opts: metric_utils.MetricOptions, mode: str, num_images: int) -> List[torch.Tensor]:
    """The real side of ``compute_swd`` (per-level descriptors; computed once, it serves many
    generators: ``evaluation.campaign_curve``)."""
    ds = metric_utils.open_dataset(opts)
    n = _sample_count(opts, num_images)
    order = np.random.RandomState(opts.seed).permutation(len(ds))[:n]
    real = PyramidDescriptors(ds.resolution, salt=1, seed=opts.seed)
    chunks = [k for k, _s, _e in metric_utils._my_chunks(n, opts)]
    for k, imgs in zip(chunks, metric_utils.iterate_real_images(opts, mode, n, order=order, desc=f"real {mode} SWD")):
        real.add(imgs, k, opts)
    return real.finalize() if opts.rank == 0 else []        # gathered on rank 0 (PyramidDescriptors.add)


def generated_descriptors(opts: metric_utils.MetricOptions, gen_mode: str, num_images: int) -> List[torch.Tensor]:
    """The generated side of ``compute_swd``: as many images of ``opts.G`` in ``gen_mode``."""
    n = _sample_count(opts, num_images)
    fake = PyramidDescriptors(opts.G.img_resolution, salt=2, seed=opts.seed)
    chunks = [k for k, _s, _e in metric_utils._my_chunks(n, opts)]
    for k, imgs in zip(chunks, metric_utils.iterate_generated_images(opts, gen_mode, n, desc=f"generated {gen_mode} SWD")):
        fake.add(imgs, k, opts)
    return fake.finalize() if opts.rank == 0 else []
