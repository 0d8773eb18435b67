"""Image files for every CLI of the project: reading what real folders hold, writing atomically.

Reading (``read_image``):
- formats: PNG, JPEG, WebP, BMP, TIFF (anything OpenCV or Pillow decodes);
- grayscale is repeated to three channels; palette images are expanded;
- 16-bit (and 32-bit integer) images are scaled to 8 bits with rounding (``v / 257`` for
  16-bit); floating-point TIFFs are taken as [0, 1];
- alpha policy: ``read_image`` returns the colour channels as stored and drops alpha (no
  compositing, so a fully transparent pixel keeps whatever colour the file holds);
  ``read_image_alpha`` returns ``(rgb, alpha or None)`` for callers that keep alpha
  (``degrade.py`` degrades the colour and copies alpha unchanged into its RGBA PNG output);
- EXIF orientation is applied, so the array is upright as a viewer shows it;
- an unreadable, empty or truncated file, a folder, pipe or broken link where a file is
  expected, and an image above ``max_pixels()`` (64 Mpixel, ``$QC_MAX_IMAGE_PIXELS``; checked
  from the header, before decoding, so memory stays bounded) raise ``dnnlib.util.UserError``
  naming the file: folder jobs report it and go on with the next file.

Output names of folder jobs (``output_stems``): the input's relative path without its extension,
or with it where two inputs would share a name (``b.jpg`` and ``b.png`` -> ``b.jpg``, ``b.png``).

Writing (``write_image``): PNG/JPEG/WebP/BMP/TIFF chosen by the extension, through a temporary
file renamed into place (``dnnlib.util.atomic_write``), so an interrupted run never leaves a
half-written image.

Arrays (the one place every package converts, tiles and resizes images):
- ``to_uint8`` / ``to_uint8_hwc``: float batches ``[N, C, H, W]`` -> uint8, in one of two
  conventions: ``drange=(-1, 1)`` for a generator's images (``x * 127.5 + 128`` clamped and
  truncated, the StyleGAN convention: the same seeds give the same files as the official tools),
  ``drange=(0, 255)`` for pixel values between degradation steps (rounded half to even, as a
  uint8 pipeline holds them); ``from_uint8_hwc`` is the way back;
- ``as_hwc``: a model's input checked (uint8, [H, W] or [H, W, 1 | 3]);
- ``match_channels``: the one channel conversion of the project: grey repeated to RGB, RGB to
  grey by its BT.601 luma (``LUMA_BT601``), extra channels dropped;
- ``make_grid``: uint8 ``[H, W, C]`` tiles in rows of ``cols``;
- ``resize``: Lanczos (Pillow) to a given height and width.
"""
from __future__ import annotations

import io
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .util import UserError, atomic_write

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

_EXIF_ORIENTATION_TAG = 0x0112
DEFAULT_MAX_PIXELS = 64_000_000      # a 48-Mpixel phone photo reads; a 12000x9000 scan is refused


def max_pixels() -> int:
    """Largest image (width x height) ``read_image`` decodes: ``$QC_MAX_IMAGE_PIXELS`` or 64 M."""
    try:
        return int(os.environ.get("QC_MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS))
    except ValueError:
        return DEFAULT_MAX_PIXELS


def output_stems(sources: Sequence[str]) -> Dict[str, str]:
    """Output name (relative, without extension) of each source of a folder job (module docstring)."""
    def stem(rel: str) -> str:
        return os.path.splitext(rel)[0]
    counts: Dict[str, int] = {}
    for rel in sources:
        counts[stem(rel)] = counts.get(stem(rel), 0) + 1
    return {rel: rel if counts[stem(rel)] > 1 else stem(rel) for rel in sources}


def is_image_file(path: str) -> bool:
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS


def list_images(root: str) -> List[str]:
    """Relative paths (``/``-separated) of the image files under ``root``, sorted, recursive.

    Hidden files and folders (name starting with ``.``, e.g. temporary files of an atomic
    write) are skipped. A file given as ``root`` lists as its own base name.
    """
    root = os.fspath(root)
    if os.path.isfile(root):
        return [os.path.basename(root)] if is_image_file(root) else []
    if not os.path.isdir(root):
        raise UserError(f"no such file or folder: {root}")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or not is_image_file(name):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            out.append(rel.replace(os.sep, "/"))
    return sorted(out)


def list_sources(input_path: str, outdir: str) -> Tuple[str, List[str]]:
    """The inputs of a folder job: ``(root, image paths relative to root)``.

    ``input_path`` is an image file or a folder (searched recursively). The output folder must
    differ from the input folder, and when it lies inside it, earlier outputs are not read as
    inputs. Raises ``UserError`` when nothing usable is found.
    """
    input_path, outdir = os.path.abspath(os.fspath(input_path)), os.path.abspath(os.fspath(outdir))
    if os.path.isfile(input_path):
        if not is_image_file(input_path):
            raise UserError(f"{input_path} is not an image file ({', '.join(IMAGE_EXTENSIONS)})")
        return os.path.dirname(input_path), [os.path.basename(input_path)]
    if not os.path.isdir(input_path):
        raise UserError(f"--input not found: {input_path}")
    if outdir == input_path:
        raise UserError("--outdir must differ from --input (inputs are never overwritten)")
    rel_out = os.path.relpath(outdir, input_path).replace(os.sep, "/")
    sources = [s for s in list_images(input_path)
               if rel_out.startswith("..") or not (s + "/").startswith(rel_out + "/")]
    if not sources:
        raise UserError(f"no images found under {input_path}")
    return input_path, sources


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if arr.dtype in (np.int32, np.uint32, np.int64):
        # Pillow's 'I' mode holds 16-bit data in int32.
        peak = 65535 if int(arr.max(initial=0)) > 255 else 255
        return np.clip(np.rint(arr.astype(np.float64) * (255.0 / peak)), 0, 255).astype(np.uint8)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    raise UserError(f"unsupported pixel type {arr.dtype}")


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation 1..8 to the upright image (TIFF/EXIF 2.3 definition)."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return np.swapaxes(arr, 0, 1)
    if orientation == 6:
        return np.swapaxes(arr, 0, 1)[:, ::-1]
    if orientation == 7:
        return np.swapaxes(arr, 0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.swapaxes(arr, 0, 1)[::-1]
    return arr


def _exif_orientation(data: bytes) -> int:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.getexif().get(_EXIF_ORIENTATION_TAG, 1) or 1)
    except Exception:
        return 1


def _decode_cv2(data: bytes) -> Optional[np.ndarray]:
    """Decode with OpenCV keeping depth and alpha (no orientation applied); RGB(A) order."""
    if hasattr(cv2, "utils") and hasattr(cv2.utils, "logging"):     # a refused file is reported once, by us
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        return None
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, [2, 1, 0, 3]]
    return arr


def _decode_pil(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif im.mode == "LA":
            im = im.convert("RGBA")  # grey + alpha -> RGBA
        return np.asarray(im)


def _read_bytes(path: str) -> bytes:
    if not os.path.isfile(path):
        if os.path.islink(path) and not os.path.exists(path):
            why = "broken symbolic link"
        elif os.path.isdir(path):
            why = "a folder, not an image file"
        elif os.path.exists(path):
            why = "not a regular file (a pipe, socket or device)"
        else:
            why = "no such file"
        raise UserError(f"cannot read {path}: {why}")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


def _check_size(data: bytes, path: str) -> None:
    """Refuse images above ``max_pixels()`` from the header alone (nothing is decoded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
    except Image.DecompressionBombError:
        w = h = None
    except Exception:           # a header Pillow does not know: the decoders decide
        return
    limit = max_pixels()
    if w is None or w * h > limit:
        size = f"{w}x{h} ({w * h / 1e6:.0f} Mpixel)" if w is not None else "far too large"
        raise UserError(f"cannot read {path}: {size}, above the {limit / 1e6:.0f}-Mpixel limit; downscale it "
                        f"first or raise QC_MAX_IMAGE_PIXELS")


def read_image_alpha(path: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Read an image as ``(rgb uint8 [H, W, 3], alpha uint8 [H, W] or None)``, upright.

    Raises ``UserError`` when the file is missing or cannot be decoded.
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    if not data:
        raise UserError(f"cannot read {path}: empty file")
    _check_size(data, path)
    arr = None
    try:
        arr = _decode_cv2(data)
    except Exception:
        arr = None
    if arr is None or arr.size == 0:
        try:
            arr = _decode_pil(data)
        except Exception as exc:
            why = "not an image (format not recognised)" if isinstance(exc, UnidentifiedImageError) else exc
            raise UserError(f"cannot decode {path}: {why or 'not an image'}") from None
    arr = _apply_orientation(arr, _exif_orientation(data))
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise UserError(f"cannot decode {path}: unsupported layout {arr.shape}")
    arr = _to_uint8(arr)
    alpha = None
    if arr.shape[2] in (2, 4):
        alpha = np.ascontiguousarray(arr[:, :, -1])
        arr = arr[:, :, :-1]
    return np.ascontiguousarray(match_channels(arr, 3)), alpha


def read_image(path: str) -> np.ndarray:
    """Read an image as uint8 ``[H, W, 3]`` RGB, upright; alpha is dropped (module docstring)."""
    return read_image_alpha(path)[0]


_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                ".tif": "TIFF", ".tiff": "TIFF"}


def encode_image(array: np.ndarray, ext: str, quality: int = 95) -> bytes:
    """Encode uint8 ``[H, W]``, ``[H, W, 1|3|4]`` into the format named by ``ext``."""
    fmt = _PIL_FORMATS.get(ext.lower())
    if fmt is None:
        raise UserError(f"unsupported image extension '{ext}' (use one of {', '.join(IMAGE_EXTENSIONS)})")
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise ValueError(f"write_image expects uint8 pixels, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(f"write_image expects [H, W], [H, W, 3] or [H, W, 4], got {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] == 4 and fmt in ("JPEG", "BMP"):
        arr = arr[:, :, :3]  # these formats hold no alpha
    img = Image.fromarray(np.ascontiguousarray(arr))
    buf = io.BytesIO()
    kwargs = {"quality": int(quality)} if fmt in ("JPEG", "WEBP") else {}
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def write_image(path: str, array: np.ndarray, quality: int = 95) -> None:
    """Write uint8 ``[H, W]`` / ``[H, W, 3]`` / ``[H, W, 4]`` to ``path`` atomically; the format
    follows the extension (``quality`` for JPEG/WebP)."""
    data = encode_image(array, os.path.splitext(os.fspath(path))[1], quality=quality)
    with atomic_write(path, "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------------------------------
# Arrays and tensors (module docstring).

GENERATOR_RANGE = (-1, 1)     # a generator's images, about [-1, 1]
PIXEL_RANGE = (0, 255)        # pixel values held as floats (degradations)
LUMA_BT601 = (0.299, 0.587, 0.114)   # ITU-R BT.601 luma weights of R, G, B


def as_hwc(image: np.ndarray) -> np.ndarray:
    """A model's input image checked: uint8 [H, W] or [H, W, C] (C = 1 or 3) -> [H, W, C]; anything
    else is a ``UserError`` naming what it got."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise UserError(f"images must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise UserError(f"expected an image [H, W, 3] or [H, W], got shape {arr.shape}")
    return arr


def match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """[H, W, C] -> [H, W, channels]: grey (C = 1) repeated; RGB to grey by its BT.601 luma
    (``LUMA_BT601``; computed in float32, uint8 rounded, other dtypes as float32); channels beyond
    ``channels`` (alpha) dropped. The array itself when C already matches."""
    arr = np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"match_channels expects [H, W, C], got {arr.shape}")
    c = arr.shape[2]
    if c == channels:
        return arr
    if c == 1:
        return np.repeat(arr, channels, axis=2)
    if channels == 1:
        luma = arr[:, :, :3].astype(np.float32) @ np.array(LUMA_BT601, np.float32)       # [H, W]
        if arr.dtype == np.uint8:
            luma = np.clip(np.rint(luma), 0, 255).astype(np.uint8)
        return luma[:, :, None]
    return arr[:, :, :channels]


def to_uint8(images: torch.Tensor, drange: Tuple[int, int] = GENERATOR_RANGE) -> torch.Tensor:
    """[N, C, H, W] float -> uint8 [N, C, H, W] on the same device, in one of the two conventions
    of the module docstring (``drange`` (-1, 1) or (0, 255))."""
    x = images.detach()
    if tuple(drange) == GENERATOR_RANGE:
        return (x.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    if tuple(drange) == PIXEL_RANGE:
        return x.round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"drange must be {GENERATOR_RANGE} or {PIXEL_RANGE}, got {drange}")


def to_uint8_hwc(images: torch.Tensor, drange: Tuple[int, int] = GENERATOR_RANGE) -> np.ndarray:
    """[N, C, H, W] float -> uint8 NumPy [N, H, W, C] on the CPU (``to_uint8``'s conventions)."""
    return to_uint8(images, drange).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def from_uint8_hwc(arr, drange: Tuple[int, int] = GENERATOR_RANGE, dtype: torch.dtype = torch.float32,
                   device=None) -> torch.Tensor:
    """uint8 [N, H, W, C] (an array or a list of [H, W, C]) -> [N, C, H, W] ``dtype`` on ``device``:
    ``x / 127.5 - 1`` for ``drange`` (-1, 1), the pixel values themselves for (0, 255)."""
    x = torch.from_numpy(np.stack(arr) if isinstance(arr, (list, tuple)) else np.asarray(arr))
    x = x.permute(0, 3, 1, 2).to(dtype)
    if tuple(drange) == GENERATOR_RANGE:
        return (x / 127.5 - 1).to(device)
    if tuple(drange) == PIXEL_RANGE:
        return x.to(device).contiguous()
    raise ValueError(f"drange must be {GENERATOR_RANGE} or {PIXEL_RANGE}, got {drange}")


def make_grid(images: Sequence[np.ndarray], cols: int) -> np.ndarray:
    """Tile uint8 [H, W, C] images (all of one shape) into rows of ``cols``; empty cells are black."""
    h, w, c = images[0].shape
    rows = (len(images) + cols - 1) // cols
    grid = np.zeros([rows * h, cols * w, c], dtype=np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        grid[r * h:(r + 1) * h, k * w:(k + 1) * w] = im
    return grid


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H, W] or [H, W, C] (C = 1, 3 or 4) -> the same layout at ``height`` x ``width``,
    Lanczos (Pillow); the aspect ratio follows the arguments. The array itself when the size
    already matches."""
    arr = np.asarray(image)
    if arr.shape[:2] == (height, width):
        return arr
    grey = arr.ndim == 3 and arr.shape[2] == 1
    out = np.asarray(Image.fromarray(arr[:, :, 0] if grey else arr).resize((width, height), Image.LANCZOS))
    return out[:, :, None] if grey else out


def blend(image: np.ndarray, other: np.ndarray, t: float) -> np.ndarray:
    """uint8 ``(1 - t) image + t other``, rounded (same shape; t in [0, 1]): restoration's
    ``--fidelity`` mix of the restored image with its input. The array itself when t = 0."""
    a, b = np.asarray(image), np.asarray(other)
    if a.shape != b.shape:
        raise ValueError(f"blend needs two images of one shape, got {a.shape} and {b.shape}")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"blend weight must be in [0, 1], got {t}")
    if t == 0:
        return a
    mixed = (1.0 - t) * a.astype(np.float32) + t * b.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def save_grid(path: str, batches: Sequence[torch.Tensor], cols: int) -> None:
    """uint8 batches [N, C, H, W] (concatenated in order) tiled ``cols`` per row -> an RGB image
    file (grey tiles repeated to three channels): the training and encoder-training grids."""
    grid = make_grid(torch.cat(list(batches)).permute(0, 2, 3, 1).cpu().numpy(), cols)
    write_image(path, match_channels(grid, 3))
