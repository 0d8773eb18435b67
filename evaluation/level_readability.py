"""Can anything read a degradation level from the image? A learned reader for one level.

The Sec. 4.6 probe reads the encoder's q linearly, and ``evaluation.probe``'s ``image_spectrum``
reads each image's power spectrum linearly. This tool asks the question neither can settle: does
a *non-linear* reader, trained for exactly one task (sharp vs blurred at one level) on training
faces, tell the two apart on held-out faces? If it does not, no quality code can either, and the
balanced blurred-vs-sharp task of the probe is capped by that level.

The reader (``EnergyReader``) is built for blur: learned 5x5 filters at full and half resolution,
the log of each filter's mean energy over the image (so the reading is a ratio of bands, as blur
changes, not a brightness), then a small MLP. It learns the model report's 0.8-px level of 64x64
UTKFace faces to about 90 % in two epochs; a reader that cannot learn the 0.4-px level in the same
setup says the level sits inside the faces' own spread of sharpness (pretrained/README.md).

    python -m evaluation.level_readability --data ../shared/datasets/utkface64.zip \
        --heldout ../shared/datasets/utkface64-mini.zip --sigma 0.4 --out readability.json
"""
from __future__ import annotations

import dataclasses
import json
from typing import List, Sequence

import click
import numpy as np
import torch
from tqdm import tqdm

from dnnlib.util import UserError, atomic_write, cli_main

from .model_report import load_heldout_faces
from .probe import blur_op, degrade_pool

FILTERS = 24              # learned filters per scale
HIDDEN = 64               # MLP width
DEFAULT_SIGMA = 0.4       # px at the images' resolution: the model report's mildest probe level at 64x64


class EnergyReader(torch.nn.Module):
    """[N, 3, R, R] in [-1, 1] -> [N] logit of "blurred": log mean energy of learned filters at
    full and half resolution ([N, 2 * FILTERS]), then an MLP."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.fine = torch.nn.Conv2d(channels, FILTERS, 5, padding=2)
        self.coarse = torch.nn.Conv2d(channels, FILTERS, 5, padding=2)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(2 * FILTERS, HIDDEN), torch.nn.LeakyReLU(0.2),
                                       torch.nn.Linear(HIDDEN, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e_fine = self.fine(x).square().mean(dim=(2, 3)).add(1e-6).log()                         # [N, F]
        e_coarse = self.coarse(torch.nn.functional.avg_pool2d(x, 2)).square().mean(dim=(2, 3)).add(1e-6).log()
        return self.mlp(torch.cat([e_fine, e_coarse], dim=1))[:, 0]


@dataclasses.dataclass
class EpochResult:
    epoch: int
    train_loss: float                 # mean binary cross-entropy over the epoch (ln 2 = 0.693: nothing learned)
    heldout_balanced_accuracy: float  # (sharp recall + blurred recall) / 2 on the held-out faces
    sharp_recall: float
    blurred_recall: float


@dataclasses.dataclass
class ReadabilityResult:
    sigma_px: float
    resolution: int
    train_images: int                 # each used sharp and blurred
    heldout_images: int
    epochs: List[EpochResult]

    @property
    def best_heldout_accuracy(self) -> float:
        return max(e.heldout_balanced_accuracy for e in self.epochs)


def _pairs(faces: Sequence[np.ndarray], sigma: float, seed: int):
    """Every face sharp (label 0) and blurred by the probe's OpenCV Gaussian (label 1)."""
    blurred, _ = degrade_pool(faces, [blur_op(sigma)], seed=seed)
    x = torch.from_numpy(np.stack(list(faces) + list(blurred))).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = torch.cat([torch.zeros(len(faces)), torch.ones(len(faces))])
    return x, y                                                      # [2N, C, R, R], [2N]


def train_reader(train_faces: Sequence[np.ndarray], heldout_faces: Sequence[np.ndarray], sigma: float,
                 epochs: int = 3, batch: int = 64, lr: float = 1e-3, seed: int = 0,
                 progress: bool = True) -> ReadabilityResult:
    """Train an ``EnergyReader`` on sharp vs ``sigma``-blurred ``train_faces`` (uint8 [R, R, C]);
    score it on the same task with ``heldout_faces`` after each epoch."""
    if sigma <= 0:
        raise UserError(f"sigma must be > 0 px, got {sigma}")
    if len(train_faces) < batch or len(heldout_faces) < 2:
        raise UserError(f"need at least {batch} training faces and 2 held-out ones")
    torch.manual_seed(seed)
    x, y = _pairs(train_faces, sigma, seed)
    xt, yt = _pairs(heldout_faces, sigma, seed + 1)
    net = EnergyReader(x.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for ep in tqdm(range(epochs), desc="reader", unit="epoch", disable=not progress):
        perm = torch.randperm(len(x), generator=gen)
        losses = []
        net.train()
        for lo in range(0, len(x) - batch + 1, batch):
            idx = perm[lo:lo + batch]
            xb = x[idx]
            if torch.rand([], generator=gen) < 0.5:
                xb = xb.flip(3)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net(xt[lo:lo + 256]) for lo in range(0, len(xt), 256)]) > 0
        sharp = float((~pred[yt == 0]).float().mean())
        blurred = float(pred[yt == 1].float().mean())
        out.append(EpochResult(ep + 1, float(np.mean(losses)), (sharp + blurred) / 2, sharp, blurred))
    return ReadabilityResult(float(sigma), int(x.shape[-1]), len(train_faces), len(heldout_faces), out)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", required=True, type=click.Path(exists=True), help="Training faces (training-layout ZIP or folder).")
@click.option("--heldout", required=True, type=click.Path(exists=True), help="Held-out faces, never trained on.")
@click.option("--sigma", type=float, default=DEFAULT_SIGMA, show_default=True, help="Gaussian blur sigma, px at --resolution.")
@click.option("--resolution", type=click.IntRange(min=8), default=64, show_default=True)
@click.option("--train-images", type=click.IntRange(min=64), default=6000, show_default=True)
@click.option("--heldout-images", type=click.IntRange(min=2), default=512, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", default="readability.json", show_default=True, help="JSON result.")
@cli_main
def main(data, heldout, sigma, resolution, train_images, heldout_images, epochs, seed, out):
    """Train a learned blur reader for one level and score it on held-out faces."""
    res = train_reader(load_heldout_faces(data, train_images, resolution),
                       load_heldout_faces(heldout, heldout_images, resolution), sigma, epochs=epochs, seed=seed)
    with atomic_write(out, "w") as f:
        json.dump({**dataclasses.asdict(res), "best_heldout_accuracy": res.best_heldout_accuracy}, f, indent=2)
        f.write("\n")
    for e in res.epochs:
        print(f"epoch {e.epoch}: train loss {e.train_loss:.3f} (ln 2 = 0.693), held-out sharp vs {sigma:g} px "
              f"{100 * e.heldout_balanced_accuracy:.1f} % (sharp {100 * e.sharp_recall:.1f} %, blurred {100 * e.blurred_recall:.1f} %)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
