"""Shared by the training tests: a small generated dataset and a stock smoke generator."""
import os

import numpy as np
import PIL.Image
import torch

import dnnlib
from training import checkpoint as ckpt
from training.dataset import ImageDataset, convert_dataset
from training.launch import resolve_options
from training.training_loop import build_networks


def make_blobs(root):
    """32 generated 16x16 images (coloured discs on a dark background) as a training ZIP, and a
    plain (stock) smoke generator + discriminator with random weights as a checkpoint."""
    root = str(root)
    rng = np.random.RandomState(0)
    yy, xx = np.mgrid[0:16, 0:16]
    os.makedirs(os.path.join(root, "src"), exist_ok=True)
    for i in range(32):
        img = np.zeros((16, 16, 3), np.uint8) + rng.randint(0, 80, 3).astype(np.uint8)
        cx, cy, r = rng.uniform(4, 12), rng.uniform(4, 12), rng.uniform(2, 6)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.randint(0, 256, 3)
        PIL.Image.fromarray(img).save(os.path.join(root, "src", f"{i:03d}.png"))
    data = os.path.join(root, "blobs16.zip")
    convert_dataset(os.path.join(root, "src"), data, progress=False)
    opts = resolve_options(dict(data=data, cfg="smoke", q_dim=0, device="cpu"))
    torch.manual_seed(123)
    nets = build_networks(opts, ImageDataset(data))
    stock = os.path.join(root, "stock.pt")
    ckpt.save_checkpoint(stock, nets={"G": nets["G"], "G_ema": nets["G"], "D": nets["D"]})
    return dnnlib.EasyDict(data=data, stock=stock, root=root)
