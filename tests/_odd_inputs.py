"""The odd-input matrix every folder CLI must survive (degrade, restore, edit, invert run,
calc_metrics compare): one generator of the folder, shared by the tests.

``make_odd_folder(root)`` writes, under ``root``:
  readable: grey, RGBA, 16-bit, palette, CMYK, EXIF-rotated (orientation 6), WebP, BMP, TIFF,
            non-square, tiny (3x2), two names that collide without their extension (same.jpg,
            same.png) and one image in a sub-folder;
  refused:  huge (12000x9000, refused from its header: bounded memory), truncated, not an image,
            empty, a broken symbolic link, a named pipe, and ``locked.png`` (a valid image made
            unreadable by ``deny_reading``: tests run as root, where file modes do not stop reads).
"""
import io
import os
from typing import Dict

import numpy as np
from PIL import Image

READABLE = ["grey.png", "rgba.png", "g16.png", "palette.png", "cmyk.jpg", "exif6.jpg", "w.webp", "b.bmp",
            "t.tiff", "wide.png", "tiny.png", "same.jpg", "same.png", "sub/nested.png"]
# refused file -> a word its error message contains
REFUSED = {"huge.png": "Mpixel", "cut.png": "cannot", "notes.png": "not an image", "empty.jpg": "empty",
           "link.png": "broken symbolic link", "pipe.png": "not a regular file", "locked.png": "Permission denied"}
SIZES = {"wide.png": (24, 40), "tiny.png": (2, 3), "exif6.jpg": (40, 20)}      # (H, W) as read (upright)


def make_odd_folder(root) -> str:
    root = str(root)
    os.makedirs(os.path.join(root, "sub"), exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = lambda h, w: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    p = lambda name: os.path.join(root, name)
    Image.fromarray(rgb(20, 20)[..., 0]).save(p("grey.png"))
    Image.fromarray(rng.integers(0, 256, (20, 20, 4), dtype=np.uint8), "RGBA").save(p("rgba.png"))
    Image.fromarray(rng.integers(0, 65536, (20, 20), dtype=np.uint16)).save(p("g16.png"))
    Image.fromarray(rgb(20, 20)).convert("P").save(p("palette.png"))
    Image.fromarray(rgb(20, 20)).convert("CMYK").save(p("cmyk.jpg"))
    im = Image.fromarray(rgb(20, 40))
    exif = im.getexif()
    exif[0x0112] = 6                                       # stored 40 wide, 20 high; shown rotated
    im.save(p("exif6.jpg"), exif=exif.tobytes(), quality=95)
    Image.fromarray(rgb(20, 20)).save(p("w.webp"), lossless=True)
    Image.fromarray(rgb(20, 20)).save(p("b.bmp"))
    Image.fromarray(rgb(20, 20)).save(p("t.tiff"))
    Image.fromarray(rgb(24, 40)).save(p("wide.png"))
    Image.fromarray(rgb(2, 3)).save(p("tiny.png"))
    Image.fromarray(rgb(20, 20)).save(p("same.jpg"), quality=95)
    Image.fromarray(rgb(20, 20)).save(p("same.png"))
    Image.fromarray(rgb(20, 20)).save(p("sub/nested.png"))
    Image.fromarray(rgb(20, 20)).save(p("locked.png"))
    Image.new("1", (12000, 9000)).save(p("huge.png"))      # ~13 kB on disk, 324 MB as RGB
    buf = io.BytesIO()
    Image.fromarray(rgb(32, 32)).save(buf, format="PNG")
    open(p("cut.png"), "wb").write(buf.getvalue()[: len(buf.getvalue()) // 2])
    open(p("notes.png"), "w").write("these are my notes, not a picture\n")
    open(p("empty.jpg"), "wb").close()
    os.symlink(p("gone.png"), p("link.png"))
    os.mkfifo(p("pipe.png"))
    os.makedirs(p("folder.png"))                           # a folder named like an image: walked, empty
    return root


def deny_reading(monkeypatch, names=("locked.png",)) -> None:
    """Make ``dnnlib.image_io`` fail to open these file names with EACCES, as a file without
    read permission does for a normal user (root reads everything)."""
    import builtins
    from dnnlib import image_io

    def fake_open(path, *args, **kwargs):
        if os.path.basename(str(path)) in names:
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)
    monkeypatch.setattr(image_io, "open", fake_open, raising=False)


def folder_state(root) -> Dict[str, tuple]:
    """(kind, size, mtime, bytes of regular files) of everything under ``root``, without opening
    pipes or following links: inputs must come out of every CLI untouched."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(str(root)):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, str(root))
            import stat
            data = open(path, "rb").read() if stat.S_ISREG(st.st_mode) else None
            out[rel] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, data)
    return out
