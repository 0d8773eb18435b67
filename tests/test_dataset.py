"""training/dataset.py, dataset_tool.py: loading, labels, checks, sampler, conversion."""
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import PIL.Image
import pytest

from dnnlib.util import UserError
from training.dataset import ImageDataset, InfiniteSampler, convert_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINI = os.path.join(ROOT, "..", "shared", "datasets", "utkface64-mini.zip")
need_mini = pytest.mark.skipif(not os.path.isfile(MINI), reason="../shared/datasets/utkface64-mini.zip absent")


def _write_folder(root, n=6, size=(8, 8), mode="RGB", labels=None):
    os.makedirs(root, exist_ok=True)
    rng = np.random.RandomState(0)
    for i in range(n):
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        arr = rng.randint(0, 256, shape).astype(np.uint8)
        PIL.Image.fromarray(arr).save(os.path.join(root, f"im{i}.png"))
    if labels is not None:
        with open(os.path.join(root, "dataset.json"), "w") as f:
            json.dump({"labels": [[f"im{i}.png", labels[i]] for i in range(n)]}, f)
    return root


@need_mini
def test_mini_zip_labels_and_flip():
    ds = ImageDataset(MINI, use_labels=True, xflip=True)
    assert len(ds) == 1024 and ds.resolution == 64 and ds.num_channels == 3 and ds.label_dim == 2
    img, label = ds[3]
    flipped, label2 = ds[512 + 3]
    assert img.dtype == np.uint8 and img.shape == (3, 64, 64)
    np.testing.assert_array_equal(flipped, img[:, :, ::-1])
    assert label.sum() == 1 and np.array_equal(label, label2)
    assert ds.name == "utkface64-mini"


@need_mini
def test_mini_max_size_is_fixed_subset():
    a = ImageDataset(MINI, max_size=10)
    b = ImageDataset(MINI, max_size=10)
    assert len(a) == 10 and [a.image_name(i) for i in range(10)] == [b.image_name(i) for i in range(10)]
    assert ImageDataset(MINI, use_labels=False).label_dim == 0


def test_folder_float_labels_and_grayscale(tmp_path):
    root = _write_folder(str(tmp_path / "g"), mode="L", labels=[[0.5, 1.0]] * 6)
    ds = ImageDataset(root, use_labels=True)
    img, label = ds[0]
    assert ds.num_channels == 1 and img.shape == (1, 8, 8)
    np.testing.assert_array_equal(label, [0.5, 1.0])


@pytest.mark.parametrize("size,msg", [((8, 4), "square"), ((12, 12), "power of two")])
def test_bad_shapes_raise_user_error(tmp_path, size, msg):
    root = _write_folder(str(tmp_path / "b"), size=size)
    with pytest.raises(UserError, match=msg):
        ImageDataset(root)


def test_other_errors(tmp_path):
    root = _write_folder(str(tmp_path / "c"))
    with pytest.raises(UserError, match="expected resolution 16"):
        ImageDataset(root, resolution=16)
    with pytest.raises(UserError, match="dataset.json"):
        ImageDataset(root, use_labels=True)
    with pytest.raises(UserError, match="not found"):
        ImageDataset(str(tmp_path / "nope"))


def test_sampler_shards_cover_stream_and_resume():
    import itertools
    full = list(itertools.islice(iter(InfiniteSampler(7, seed=3)), 28))
    r0 = list(itertools.islice(iter(InfiniteSampler(7, rank=0, world=2, seed=3)), 14))
    r1 = list(itertools.islice(iter(InfiniteSampler(7, rank=1, world=2, seed=3)), 14))
    assert full[0::2] == r0 and full[1::2] == r1
    assert sorted(full[:7]) == list(range(7)) and sorted(full[7:14]) == list(range(7))  # epochs
    assert full[7:14] != full[:7]  # reshuffled per epoch
    resumed = list(itertools.islice(iter(InfiniteSampler(7, seed=3, start=10)), 18))
    assert resumed == full[10:]


def test_convert_crop_resize_labels_and_skip(tmp_path):
    src = _write_folder(str(tmp_path / "src"), n=3, size=(20, 12), labels=[0, 1, 1])
    with open(os.path.join(src, "broken.png"), "wb") as f:
        f.write(b"not an image")
    dest = str(tmp_path / "out.zip")
    report = convert_dataset(src, dest, resolution=8, progress=False)
    assert report["written"] == 3 and [n for n, _ in report["skipped"]] == ["broken.png"]
    with zipfile.ZipFile(dest) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    ds = ImageDataset(dest, use_labels=True)
    assert ds.resolution == 8 and len(ds) == 3
    np.testing.assert_array_equal(np.stack([ds[i][1] for i in range(3)]), [[1, 0], [0, 1], [0, 1]])
    # The crop is the centred 12x12 square: a left-half-only marker disappears.
    arr = np.zeros((12, 20, 3), np.uint8)
    arr[:, :4] = 255
    src2 = str(tmp_path / "src2")
    os.makedirs(src2)
    PIL.Image.fromarray(arr).save(os.path.join(src2, "a.png"))
    convert_dataset(src2, str(tmp_path / "o2.zip"), progress=False, resolution=4)
    assert ImageDataset(str(tmp_path / "o2.zip"))[0][0].max() == 0


@need_mini
def test_dataset_tool_cli_from_zip(tmp_path):
    dest = str(tmp_path / "m16.zip")
    res = subprocess.run([sys.executable, os.path.join(ROOT, "dataset_tool.py"), "--source", MINI, "--dest", dest,
                          "--resolution", "16", "--max-images", "20"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    ds = ImageDataset(dest, use_labels=True)
    src = ImageDataset(MINI, use_labels=True)
    assert len(ds) == 20 and ds.resolution == 16
    assert np.array_equal(ds[5][1], src[5][1])
    # Downsampled content matches a direct Lanczos resize of the same image.
    ref = np.asarray(PIL.Image.fromarray(src[5][0].transpose(1, 2, 0)).resize((16, 16), PIL.Image.LANCZOS))
    assert np.abs(ds[5][0].transpose(1, 2, 0).astype(int) - ref).max() <= 1
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "dataset_tool.py"), "--source", str(tmp_path / "x"),
                          "--dest", dest], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_dataset_tool_webp_is_lossless_and_smaller(tmp_path):
    from conftest import shared_path
    from training.dataset import ImageDataset, convert_dataset
    src = shared_path("datasets", "utkface64-mini.zip")
    png, webp = str(tmp_path / "png.zip"), str(tmp_path / "webp.zip")
    convert_dataset(src, png, max_images=40, progress=False)
    report = convert_dataset(src, webp, max_images=40, progress=False, image_format="webp")
    assert report["written"] == 40 and report["labels"]
    a, b = ImageDataset(png, use_labels=True), ImageDataset(webp, use_labels=True)
    assert len(a) == len(b) == 40
    for i in (0, 17, 39):
        assert np.array_equal(a[i][0], b[i][0]) and np.array_equal(a[i][1], b[i][1])
    assert os.path.getsize(webp) < 0.9 * os.path.getsize(png)


def _zip_of_random_pngs(path, n=48, side=32):
    """An uncompressed training ZIP of noise PNGs (noise: each file is a few KB, so concurrent
    reads through one shared file offset would interleave inside a file)."""
    rng = np.random.RandomState(1)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for i in range(n):
            buf = io.BytesIO()
            PIL.Image.fromarray(rng.randint(0, 256, (side, side, 3)).astype(np.uint8)).save(buf, "PNG")
            z.writestr(f"00000/img{i:08d}.png", buf.getvalue())
    return path


def test_zip_dataset_forked_workers_read_every_image_intact(tmp_path):
    """Issue 14: a ZIP opened before the DataLoader forks its workers must not share one file
    offset among them. 4 forked workers, 6 epochs, every image byte-identical to a
    single-process read (no handle survives __init__; each process reopens by pid)."""
    import multiprocessing
    import torch
    path = _zip_of_random_pngs(str(tmp_path / "noise.zip"))
    ds = ImageDataset(path)
    assert ds._zipfile is None                                  # nothing left open to inherit
    ref = [ds[i][0] for i in range(len(ds))]                    # main process opens its own handle
    assert ds._zipfile is not None and ds._zipfile_pid == os.getpid()
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=4, shuffle=False,
                                         multiprocessing_context=multiprocessing.get_context("fork"),
                                         persistent_workers=False)
    for _epoch in range(6):
        got = torch.cat([x for x, _ in loader]).numpy()
        assert got.shape == (len(ds), 3, 32, 32)
        for i in range(len(ds)):
            np.testing.assert_array_equal(got[i], ref[i])
    ds.close()
