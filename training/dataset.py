"""Image datasets for training: an uncompressed ZIP of PNGs or a folder of images.

Layout follows the StyleGAN2-ADA convention (Karras et al., 2020, "Training Generative Adversarial
Networks with Limited Data", code release): images anywhere in the archive/folder, sorted by
path, and an optional ``dataset.json`` holding ``{"labels": [[relative_path, label], ...]}`` where
a label is an integer class (one-hot encoded) or a list of floats. ``dataset_tool.py`` writes
such ZIPs.

Also here: ``InfiniteSampler``, a deterministic, resumable, rank-sharded index stream.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Iterator, List, Optional, Tuple

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
import tqdm

from dnnlib.image_io import resize
from dnnlib.util import UserError, atomic_write

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _to_chw(array: np.ndarray) -> np.ndarray:
    """HW or HWC uint8 -> CHW uint8."""
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


class ImageDataset(torch.utils.data.Dataset):
    """Images as ``(np.uint8 [C, H, W], label np.float32 [label_dim])``.

    Constructor arguments:
        path        ZIP file or folder holding the images.
        resolution  expected side in pixels; None = whatever the images have (checked to be a
                    square power of two either way).
        use_labels  read class labels from ``dataset.json`` (required to be present); False gives
                    labels of shape [0].
        max_size    keep at most this many images (a fixed random subset); None = all.
        xflip       double the dataset with horizontally mirrored copies.
        random_seed seed of the ``max_size`` subset.
    """

    def __init__(self,
                 path: str,                         # ZIP file or folder
                 resolution: Optional[int] = None,  # expected side in pixels; None = from the data
                 use_labels: bool = False,          # read dataset.json labels
                 max_size: Optional[int] = None,    # image count cap; None = all
                 xflip: bool = False,               # add mirrored copies (doubles len)
                 random_seed: int = 0,              # seed of the max_size subset
                 ):
        self._path = os.fspath(path)
        self._zipfile: Optional[zipfile.ZipFile] = None
        self._zipfile_pid: Optional[int] = None     # process that opened _zipfile
        if os.path.isdir(self._path):
            self._type = "dir"
            names = []
            for root, _dirs, files in os.walk(self._path):
                for fname in files:
                    names.append(os.path.relpath(os.path.join(root, fname), self._path).replace(os.sep, "/"))
        elif os.path.isfile(self._path) and zipfile.is_zipfile(self._path):
            self._type = "zip"
            names = self._get_zipfile().namelist()
        elif os.path.exists(self._path):
            raise UserError(f"dataset must be a folder or a ZIP file: {self._path}")
        else:
            raise UserError(f"dataset not found: {self._path}")
        self._all_names = set(names)
        self._image_names: List[str] = sorted(n for n in names if _is_image(n))
        if not self._image_names:
            raise UserError(f"no images found in {self._path}")
        self.name = os.path.splitext(os.path.basename(self._path.rstrip("/")))[0]

        # Subset and mirror bookkeeping: item i -> (raw index, flipped?).
        raw_idx = np.arange(len(self._image_names), dtype=np.int64)
        if max_size is not None and raw_idx.size > max_size:
            rnd = np.random.RandomState(random_seed)
            raw_idx = np.sort(rnd.permutation(raw_idx)[:max_size])
        self._raw_idx = raw_idx
        self._xflip = np.zeros(raw_idx.size, dtype=bool)
        if xflip:
            self._raw_idx = np.concatenate([raw_idx, raw_idx])
            self._xflip = np.concatenate([self._xflip, np.ones(raw_idx.size, dtype=bool)])

        # Shape checks on the first image; every item is checked again on load.
        first = self._load_raw_image(int(raw_idx[0]))
        c, h, w = first.shape
        if h != w:
            raise UserError(f"{self.name}: images must be square, got {w}x{h} "
                            f"({self._image_names[raw_idx[0]]}); use dataset_tool.py to crop")
        if h < 4 or (h & (h - 1)) != 0:
            raise UserError(f"{self.name}: resolution must be a power of two (>= 4), got {h}; "
                            f"use dataset_tool.py --resolution to resize")
        if c not in (1, 3):
            raise UserError(f"{self.name}: images must have 1 or 3 channels, got {c}")
        if resolution is not None and resolution != h:
            raise UserError(f"{self.name}: expected resolution {resolution}, images are {h}x{h}")
        self.resolution = h
        self.num_channels = c
        self.image_shape = [c, h, w]

        self._raw_labels = self._load_raw_labels() if use_labels else None
        self.label_dim = 0 if self._raw_labels is None else int(self._raw_labels.shape[1])
        self.has_labels = self.label_dim > 0
        # No handle outlives the constructor: DataLoader workers fork later and would share it.
        self.close()

    # -----------------------------------------------------------------------------------------
    def _get_zipfile(self) -> zipfile.ZipFile:
        """This process's own handle of the archive.

        A handle inherited through ``fork`` (DataLoader workers) shares one file offset with the
        parent and its siblings, so concurrent reads interleave (``Bad CRC-32``). Such a handle
        is never read: it is dropped (closing this process's descriptor leaves the parent's
        alone) and the archive is reopened, keyed by pid.
        """
        assert self._type == "zip"
        if self._zipfile is not None and self._zipfile_pid != os.getpid():
            self._zipfile = None   # inherited through fork: never read from it
        if self._zipfile is None:
            self._zipfile = zipfile.ZipFile(self._path)
            self._zipfile_pid = os.getpid()
        return self._zipfile

    def _open_file(self, name: str):
        if self._type == "dir":
            return open(os.path.join(self._path, name), "rb")
        return self._get_zipfile().open(name, "r")

    def __getstate__(self):
        # ZipFile handles do not pickle; each spawned worker reopens the archive.
        return dict(self.__dict__, _zipfile=None, _zipfile_pid=None)

    def close(self) -> None:
        """Close this process's handle (an inherited one is only dropped)."""
        if self._zipfile is not None and self._zipfile_pid == os.getpid():
            self._zipfile.close()
        self._zipfile = None
        self._zipfile_pid = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        name = self._image_names[raw_idx]
        try:
            with self._open_file(name) as f:
                image = PIL.Image.open(io.BytesIO(f.read()))
                image.load()
        except Exception as exc:
            raise UserError(f"cannot read image {name} in {self._path}: {exc}") from None
        if image.mode in ("I;16", "I;16B", "I"):
            image = PIL.Image.fromarray((np.asarray(image, dtype=np.float64) / 257.0).round().astype(np.uint8))
        elif image.mode == "P":
            image = image.convert("RGB")
        elif image.mode not in ("L", "RGB"):
            raise UserError(f"image {name} has mode {image.mode}; convert it to RGB or grayscale "
                            f"with dataset_tool.py")
        return _to_chw(np.asarray(image, dtype=np.uint8))

    def _load_raw_labels(self) -> np.ndarray:
        if "dataset.json" not in self._all_names:
            raise UserError(f"{self.name}: labels were asked for (--cond) but there is no dataset.json")
        with self._open_file("dataset.json") as f:
            try:
                labels = json.load(f).get("labels")
            except (json.JSONDecodeError, AttributeError) as exc:
                raise UserError(f"{self.name}: dataset.json is not valid: {exc}") from None
        if labels is None:
            raise UserError(f"{self.name}: dataset.json has no 'labels'")
        table = dict((str(k).replace("\\", "/"), v) for k, v in labels)
        missing = [n for n in self._image_names if n not in table]
        if missing:
            raise UserError(f"{self.name}: dataset.json has no label for {len(missing)} image(s), "
                            f"e.g. {missing[0]}")
        values = [table[n] for n in self._image_names]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            classes = np.asarray(values, dtype=np.int64)
            if classes.min() < 0:
                raise UserError(f"{self.name}: class labels must be >= 0")
            onehot = np.zeros([len(values), int(classes.max()) + 1], dtype=np.float32)
            onehot[np.arange(len(values)), classes] = 1
            return onehot
        try:
            array = np.asarray(values, dtype=np.float32)
        except ValueError:
            raise UserError(f"{self.name}: labels must be integers or equal-length lists of numbers") from None
        if array.ndim == 1:
            array = array[:, np.newaxis]
        if array.ndim != 2:
            raise UserError(f"{self.name}: labels must be integers or lists of numbers")
        return array

    # -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._raw_idx.size)

    def get_label(self, idx: int) -> np.ndarray:
        if self._raw_labels is None:
            return np.zeros([0], dtype=np.float32)
        return self._raw_labels[self._raw_idx[idx]].copy()

    def __getitem__(self, idx: int) -> Tuple[np.ndarray, np.ndarray]:
        image = self._load_raw_image(int(self._raw_idx[idx]))
        if list(image.shape) != self.image_shape:
            raise UserError(f"image {self._image_names[self._raw_idx[idx]]} has shape "
                            f"{list(image.shape)}, the dataset {self.image_shape}")
        if self._xflip[idx]:
            image = np.ascontiguousarray(image[:, :, ::-1])
        return image, self.get_label(idx)

    def image_name(self, idx: int) -> str:
        return self._image_names[self._raw_idx[idx]]


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless index stream, sharded per rank, resumable at any position.

    The global stream is the concatenation of per-epoch permutations (epoch e shuffled with
    ``seed + e``; unshuffled when ``shuffle=False``). Rank ``r`` of ``world`` yields the global
    items ``start + r, start + r + world, ...``, so with a per-rank batch of ``b`` one step of all
    ranks consumes ``b * world`` consecutive items and ``start = images seen so far`` resumes the
    exact sequence.
    """

    def __init__(self, dataset_size: int, rank: int = 0, world: int = 1, shuffle: bool = True,
                 seed: int = 0, start: int = 0):
        if dataset_size <= 0:
            raise ValueError("empty dataset")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world of {world}")
        self.size, self.rank, self.world = int(dataset_size), int(rank), int(world)
        self.shuffle, self.seed, self.start = bool(shuffle), int(seed), int(start)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.RandomState((self.seed + epoch) % (1 << 32)).permutation(self.size)

    def __iter__(self) -> Iterator[int]:
        pos = self.start + self.rank
        epoch, order = -1, None
        while True:
            e = pos // self.size
            if e != epoch:
                epoch, order = e, self._epoch_order(e)
            yield int(order[pos % self.size])
            pos += self.world


# ---------------------------------------------------------------------------------------------
# Conversion: folder / ZIP of arbitrary images -> training ZIP (used by dataset_tool.py).

TRANSFORMS = ("center-crop", "none")


def _read_any_image(data: bytes, name: str) -> np.ndarray:
    """Decode image bytes to uint8 [H, W, 3] (grayscale, palette, RGBA, 16-bit, EXIF orientation
    handled). Raises ``UserError`` when unreadable."""
    try:
        image = PIL.Image.open(io.BytesIO(data))
        image = PIL.ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(image, dtype=np.float64)
            image = PIL.Image.fromarray(np.clip(array / 257.0, 0, 255).round().astype(np.uint8))
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
            background = PIL.Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = PIL.Image.alpha_composite(background, image)
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as exc:
        raise UserError(f"cannot read {name}: {exc}") from None


def _transform_image(array: np.ndarray, resolution: Optional[int], transform: str) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [R, R, 3]: center-crop to a square, then Lanczos resize."""
    h, w = array.shape[:2]
    if transform == "center-crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        array = array[top:top + side, left:left + side]
    elif transform != "none":
        raise UserError(f"unknown transform '{transform}' (choose from {', '.join(TRANSFORMS)})")
    h, w = array.shape[:2]
    if resolution is not None and (h, w) != (resolution, resolution):
        if h != w:
            raise UserError(f"image of {w}x{h} is not square; use --transform center-crop")
        array = resize(array, resolution, resolution)
    return array


def _iterate_source(source: str) -> Iterator[Tuple[str, bytes]]:
    """(relative name, bytes) of every image-like file in a folder or ZIP, sorted by name."""
    if os.path.isdir(source):
        names = []
        for root, _dirs, files in os.walk(source):
            names += [os.path.relpath(os.path.join(root, f), source).replace(os.sep, "/") for f in files]
        for name in sorted(n for n in names if _is_image(n)):
            with open(os.path.join(source, name), "rb") as f:
                yield name, f.read()
    elif os.path.isfile(source) and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            for name in sorted(n for n in zf.namelist() if _is_image(n)):
                yield name, zf.read(name)
    else:
        raise UserError(f"source must be a folder or a ZIP file: {source}")


def _read_source_labels(source: str) -> Optional[dict]:
    data = None
    if os.path.isdir(source) and os.path.isfile(os.path.join(source, "dataset.json")):
        with open(os.path.join(source, "dataset.json"), "rb") as f:
            data = f.read()
    elif os.path.isfile(source) and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            if "dataset.json" in zf.namelist():
                data = zf.read("dataset.json")
    if data is None:
        return None
    try:
        labels = json.loads(data).get("labels")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise UserError(f"{source}: dataset.json is not valid: {exc}") from None
    return None if labels is None else {str(k).replace("\\", "/"): v for k, v in labels}


IMAGE_FORMATS = ("png", "webp")   # training ZIP members: uncompressed PNG, or lossless WebP (smaller)


def convert_dataset(source: str, dest: str, resolution: Optional[int] = None,
                    transform: str = "center-crop", max_images: Optional[int] = None,
                    progress: bool = True, image_format: str = "png") -> dict:
    """Write a training ZIP (uncompressed PNGs ``00000/img00000000.png``... or lossless WebP,
    and ``dataset.json`` with the source's labels renamed to the new paths).

    Unreadable files are skipped and reported. Returns ``{'written': n, 'skipped': [(name,
    reason), ...], 'resolution': r, 'labels': bool}``.
    """
    if not os.path.exists(source):
        raise UserError(f"source not found: {source}")
    if not str(dest).lower().endswith(".zip"):
        raise UserError(f"--dest must be a .zip file: {dest}")
    if resolution is not None and (resolution < 4 or resolution & (resolution - 1)):
        raise UserError(f"--resolution must be a power of two >= 4, got {resolution}")
    if image_format not in IMAGE_FORMATS:
        raise UserError(f"unknown image format '{image_format}' (choose from {', '.join(IMAGE_FORMATS)})")
    if transform not in TRANSFORMS:
        raise UserError(f"unknown transform '{transform}' (choose from {', '.join(TRANSFORMS)})")
    src_labels = _read_source_labels(source)
    skipped: List[Tuple[str, str]] = []
    out_labels = []
    written, out_res = 0, resolution
    items = _iterate_source(source)
    if progress:
        items = tqdm.tqdm(items, desc="images", unit="img")
    with atomic_write(dest, "wb") as raw:
        with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, data in items:
                if max_images is not None and written >= max_images:
                    break
                try:
                    array = _transform_image(_read_any_image(data, name), out_res, transform)
                except UserError as exc:
                    skipped.append((name, str(exc)))
                    continue
                h, w = array.shape[:2]
                if out_res is None:
                    if h != w or h < 4 or h & (h - 1):
                        raise UserError(f"{name} is {w}x{h}: training images must be square with a "
                                        f"power-of-two side; pass --resolution")
                    out_res = h
                elif h != out_res:
                    skipped.append((name, f"size {w}x{h} differs from {out_res}x{out_res}"))
                    continue
                arcname = f"{written // 1000:05d}/img{written:08d}.{image_format}"
                buf = io.BytesIO()
                if image_format == "png":
                    PIL.Image.fromarray(array).save(buf, format="png", compress_level=0, optimize=False)
                else:
                    PIL.Image.fromarray(array).save(buf, format="webp", lossless=True, quality=100, method=4)
                zf.writestr(arcname, buf.getvalue())
                if src_labels is not None:
                    if name not in src_labels:
                        raise UserError(f"dataset.json of the source has no label for {name}")
                    out_labels.append([arcname, src_labels[name]])
                written += 1
            if written == 0:
                raise UserError(f"no readable images in {source}")
            meta = {"labels": out_labels if src_labels is not None else None}
            zf.writestr("dataset.json", json.dumps(meta))
    return {"written": written, "skipped": skipped, "resolution": out_res,
            "labels": src_labels is not None}
