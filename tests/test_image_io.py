"""dnnlib.image_io: what real folders hold (formats, grayscale, alpha, 16-bit, EXIF orientation),
unreadable files, listing, atomic writing."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from dnnlib import image_io
from dnnlib.util import UserError


def _img(h=12, w=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff", ".webp"])
def test_lossless_round_trip(tmp_path, ext):
    a = _img()
    p = tmp_path / f"a{ext}"
    if ext == ".webp":
        Image.fromarray(a).save(p, format="WEBP", lossless=True)
    else:
        image_io.write_image(str(p), a)
    b = image_io.read_image(str(p))
    assert b.dtype == np.uint8 and b.shape == (12, 20, 3)
    np.testing.assert_array_equal(a, b)


def test_jpeg_reads_close_and_in_rgb_order(tmp_path):
    a = np.zeros((32, 32, 3), np.uint8)
    a[..., 0] = 200                                     # red
    p = tmp_path / "r.jpg"
    image_io.write_image(str(p), a, quality=95)
    b = image_io.read_image(str(p))
    assert b.shape == (32, 32, 3) and abs(int(b[..., 0].mean()) - 200) < 4 and b[..., 2].mean() < 5


def test_grayscale_becomes_three_equal_channels(tmp_path):
    g = np.random.default_rng(1).integers(0, 256, (10, 14), dtype=np.uint8)
    for ext in (".png", ".jpg"):
        p = tmp_path / f"g{ext}"
        Image.fromarray(g).save(p)
        b = image_io.read_image(str(p))
        assert b.shape == (10, 14, 3)
        assert (b[..., 0] == b[..., 1]).all() and (b[..., 1] == b[..., 2]).all()
        if ext == ".png":
            np.testing.assert_array_equal(b[..., 0], g)


def test_rgba_alpha_policy(tmp_path):
    a = _img()
    alpha = np.random.default_rng(2).integers(0, 256, (12, 20), dtype=np.uint8)
    p = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([a, alpha]), "RGBA").save(p)
    rgb = image_io.read_image(str(p))               # alpha dropped, colour as stored
    np.testing.assert_array_equal(rgb, a)
    rgb2, al = image_io.read_image_alpha(str(p))
    np.testing.assert_array_equal(rgb2, a)
    np.testing.assert_array_equal(al, alpha)
    assert image_io.read_image_alpha(str(tmp_path / "rgba.png"))[1] is not None
    # Grey + alpha and palette images also read.
    Image.fromarray(np.dstack([a[..., 0], alpha]), "LA").save(tmp_path / "la.png")
    rgb3, al3 = image_io.read_image_alpha(str(tmp_path / "la.png"))
    np.testing.assert_array_equal(rgb3[..., 2], a[..., 0])
    np.testing.assert_array_equal(al3, alpha)
    Image.fromarray(a).convert("P").save(tmp_path / "pal.png")
    assert image_io.read_image(str(tmp_path / "pal.png")).shape == (12, 20, 3)


def test_16_bit_is_scaled_with_rounding(tmp_path):
    cv2 = pytest.importorskip("cv2")
    v = np.random.default_rng(3).integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), v[:, :, ::-1])      # OpenCV writes BGR
    cv2.imwrite(str(tmp_path / "c16.tif"), v[:, :, ::-1])
    want = np.rint(v / 257.0).astype(np.uint8)
    for name in ("c16.png", "c16.tif"):
        np.testing.assert_array_equal(image_io.read_image(str(tmp_path / name)), want)
    g = v[..., 0]
    Image.fromarray(g).save(tmp_path / "g16.png")
    b = image_io.read_image(str(tmp_path / "g16.png"))
    np.testing.assert_array_equal(b[..., 1], np.rint(g / 257.0).astype(np.uint8))


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_applied(tmp_path, orientation):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:10, :20] = 255                                   # white block at the stored top-left
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.jpg"
    im.save(p, exif=exif.tobytes(), quality=98)
    b = image_io.read_image(str(p))
    want = {1: a, 3: np.rot90(a, 2), 6: np.rot90(a, -1), 8: np.rot90(a, 1)}[orientation]
    assert b.shape == want.shape
    assert np.abs(b.astype(int) - want.astype(int)).mean() < 4
    # Pillow's own transpose agrees.
    from PIL import ImageOps
    ref = np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB"))
    assert np.abs(ref.astype(int) - b.astype(int)).mean() < 1


def test_unreadable_files_raise_user_error(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not a png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(_img(64, 64)).save(buf, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[:40])
    for name in ("junk.png", "empty.jpg", "cut.jpg", "missing.png"):
        with pytest.raises(UserError, match=name.split(".")[0]):
            image_io.read_image(str(tmp_path / name))


def test_list_images_sorted_relative_and_filtered(tmp_path):
    for rel in ("b.png", "a/c.JPG", "a/b/d.webp", "z.tiff", "notes.txt", ".hidden.png", ".cache/x.png",
                "a/.tmp.png.123.tmp"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert image_io.list_images(str(tmp_path)) == ["a/b/d.webp", "a/c.JPG", "b.png", "z.tiff"]
    assert image_io.list_images(str(tmp_path / "b.png")) == ["b.png"]
    with pytest.raises(UserError):
        image_io.list_images(str(tmp_path / "nope"))


def test_write_image_is_atomic_and_checks_input(tmp_path):
    p = tmp_path / "out" / "x.png"
    image_io.write_image(str(p), _img())
    assert sorted(os.listdir(tmp_path / "out")) == ["x.png"]          # no temporary left behind
    rgba = np.dstack([_img(), np.full((12, 20), 7, np.uint8)])
    image_io.write_image(str(tmp_path / "y.png"), rgba)
    assert image_io.read_image_alpha(str(tmp_path / "y.png"))[1].max() == 7
    image_io.write_image(str(tmp_path / "g.png"), _img()[..., 0])
    with pytest.raises(UserError, match="extension"):
        image_io.write_image(str(tmp_path / "x.gifx"), _img())
    with pytest.raises(ValueError):
        image_io.write_image(str(tmp_path / "f.png"), _img().astype(np.float32))

    class Boom(Exception):
        pass

    # A failed encode leaves the previous file intact.
    before = (tmp_path / "out" / "x.png").read_bytes()
    from dnnlib import util
    try:
        with util.atomic_write(str(p), "wb") as f:
            f.write(b"partial")
            raise Boom()
    except Boom:
        pass
    assert (tmp_path / "out" / "x.png").read_bytes() == before
    assert sorted(os.listdir(tmp_path / "out")) == ["x.png"]


# ---------------------------------------------------------------------------------------------
# Arrays: the one uint8 conversion, grid and resize of the project.

def test_to_uint8_conventions():
    import torch
    # generator range: x * 127.5 + 128, clamped, truncated (-1 -> 0, 0 -> 128, 1 -> 255)
    g = torch.tensor([-1.5, -1.0, 0.0, 1.0 / 127.5, 1.0, 2.0]).view(1, 1, 1, 6)
    assert image_io.to_uint8(g).flatten().tolist() == [0, 0, 128, 129, 255, 255]
    # pixel range: rounded half to even, clamped (what a uint8 pipeline holds between steps)
    p = torch.tensor([-3.0, 2.5, 3.5, 254.4, 300.0]).view(1, 1, 1, 5)
    assert image_io.to_uint8(p, image_io.PIXEL_RANGE).flatten().tolist() == [0, 2, 4, 254, 255]
    with pytest.raises(ValueError):
        image_io.to_uint8(p, (0, 1))


def test_uint8_hwc_round_trip_in_both_conventions():
    a = np.stack([_img(4, 5, seed=s) for s in range(2)])                     # [N, H, W, C]
    for drange in (image_io.GENERATOR_RANGE, image_io.PIXEL_RANGE):
        x = image_io.from_uint8_hwc(a, drange)
        assert tuple(x.shape) == (2, 3, 4, 5)
        np.testing.assert_array_equal(image_io.to_uint8_hwc(x, drange), a)
    np.testing.assert_array_equal(image_io.from_uint8_hwc(list(a)), image_io.from_uint8_hwc(a))
    assert float(image_io.from_uint8_hwc(np.full((1, 1, 1, 3), 255, np.uint8)).max()) == 1.0


def test_make_grid_places_tiles_in_rows():
    tiles = [np.full((2, 3, 1), v, np.uint8) for v in (1, 2, 3)]
    grid = image_io.make_grid(tiles, 2)
    assert grid.shape == (4, 6, 1)
    assert grid[0, 0, 0] == 1 and grid[0, 3, 0] == 2 and grid[2, 0, 0] == 3 and grid[2, 3, 0] == 0   # empty cell black


def test_resize_keeps_layout_and_skips_same_size():
    a = _img(8, 10)
    assert image_io.resize(a, 8, 10) is a
    b = image_io.resize(a, 4, 6)
    assert b.shape == (4, 6, 3) and b.dtype == np.uint8
    assert image_io.resize(a[:, :, :1], 16, 20).shape == (16, 20, 1)
    assert image_io.resize(a[:, :, 0], 16, 20).shape == (16, 20)
    flat = np.full((8, 10, 3), 77, np.uint8)
    np.testing.assert_array_equal(image_io.resize(flat, 5, 7), 77)          # Lanczos keeps a constant image


def test_blend_rounds_and_refuses_bad_arguments():
    a = np.array([[[0, 100, 255]]], np.uint8)
    b = np.array([[[255, 101, 0]]], np.uint8)
    assert image_io.blend(a, b, 0.0) is a
    np.testing.assert_array_equal(image_io.blend(a, b, 1.0), b)
    np.testing.assert_array_equal(image_io.blend(a, b, 0.25), [[[64, 100, 191]]])   # 63.75, 100.25, 191.25
    with pytest.raises(ValueError, match="one shape"):
        image_io.blend(a, b[:, :, :2], 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        image_io.blend(a, b, 1.5)


def test_match_channels_is_the_one_channel_conversion():
    """Grey repeated, RGB to grey by BT.601 luma (uint8 rounded, as Pillow's convert('L') up to
    its fixed-point rounding), extra channels dropped; the array itself when nothing changes."""
    rng = np.random.RandomState(0)
    rgb = rng.randint(0, 256, (5, 7, 3)).astype(np.uint8)
    assert image_io.match_channels(rgb, 3) is rgb
    grey = image_io.match_channels(rgb, 1)
    expected = np.rint(rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
    assert grey.shape == (5, 7, 1) and grey.dtype == np.uint8 and np.abs(grey[:, :, 0] - expected).max() == 0
    pil = np.asarray(Image.fromarray(rgb).convert("L")).astype(int)
    assert np.abs(grey[:, :, 0].astype(int) - pil).max() <= 1
    assert np.array_equal(image_io.match_channels(grey, 3), np.repeat(grey, 3, axis=2))
    rgba = np.dstack([rgb, np.full((5, 7), 9, np.uint8)])
    assert np.array_equal(image_io.match_channels(rgba, 3), rgb)
    change = rgb.astype(np.float32) - 100.0                                   # floats stay floats, unrounded
    assert np.allclose(image_io.match_channels(change, 1)[:, :, 0], change @ np.float32([0.299, 0.587, 0.114]))
    with pytest.raises(ValueError):
        image_io.match_channels(rgb[:, :, 0], 3)


def test_as_hwc_checks_a_models_input():
    """inversion.api.prepare_image and the pSp preprocessing take images through one check."""
    grey = np.zeros((4, 5), np.uint8)
    assert image_io.as_hwc(grey).shape == (4, 5, 1) and image_io.as_hwc(np.zeros((4, 5, 3), np.uint8)).shape == (4, 5, 3)
    with pytest.raises(UserError, match="must be uint8"):
        image_io.as_hwc(grey.astype(np.float32))
    with pytest.raises(UserError, match=r"expected an image \[H, W, 3\] or \[H, W\], got shape \(4, 5, 4\)"):
        image_io.as_hwc(np.zeros((4, 5, 4), np.uint8))
