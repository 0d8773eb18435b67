"""Training speed: sec/kimg of a preset on the current device, on a generated dataset.

    python benchmarks/bench_train.py --cfg smoke --res 16 --precision fp32,bf16
    python benchmarks/bench_train.py --cfg auto --res 64 --batch 8 --steps 3

QC runs (q_dim > 0) start from a random stock generator that also serves as the teacher, so
every phase (G, D, D_degraded, distillation, lazy R1 / path length) is timed. The figure
averages whole steps after a warm-up, lazy-regularisation steps included in proportion.
"""
import os
import sys
import tempfile
import time

import click
import numpy as np
import PIL.Image
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from training import checkpoint as ckpt  # noqa: E402
from training.dataset import ImageDataset, convert_dataset  # noqa: E402
from training.launch import load_config, resolve_options  # noqa: E402
from training.training_loop import Trainer, build_networks  # noqa: E402


def make_dataset(root: str, res: int, count: int = 64) -> str:
    rng = np.random.RandomState(0)
    yy, xx = np.mgrid[0:res, 0:res]
    os.makedirs(os.path.join(root, "src"), exist_ok=True)
    for i in range(count):
        img = np.zeros((res, res, 3), np.uint8) + rng.randint(0, 80, 3).astype(np.uint8)
        (cx, cy), r = rng.uniform(0.25, 0.75, 2) * res, rng.uniform(0.1, 0.4) * res
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.randint(0, 256, 3)
        PIL.Image.fromarray(img).save(os.path.join(root, "src", f"{i:04d}.png"))
    path = os.path.join(root, f"bench{res}.zip")
    convert_dataset(os.path.join(root, "src"), path, progress=False)
    return path


def measure(cli: dict, steps: int, warmup: int, root: str) -> float:
    q_dim = cli["q_dim"] if cli.get("q_dim") is not None else load_config(cli["cfg"])["q_dim"]
    opts = resolve_options(dict(cli, q_dim=0))
    if q_dim > 0:             # a random stock generator: the start point and the teacher
        torch.manual_seed(0)
        nets = build_networks(opts, ImageDataset(opts.data))
        stock = os.path.join(root, "stock.pt")
        ckpt.save_checkpoint(stock, nets={"G": nets["G"], "D": nets["D"]})
        opts = resolve_options(dict(cli, resume=stock))
    trainer = Trainer(os.path.join(root, "run"), opts)
    it = trainer.data_iterator()
    for _ in range(warmup):
        trainer.step(it)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.time()
    for _ in range(steps):
        trainer.step(it)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.time() - start) / (steps * opts.batch / 1000)


@click.command()
@click.option("--cfg", default="smoke", show_default=True, help="Preset name")
@click.option("--res", type=int, default=16, show_default=True, help="Resolution of the generated dataset")
@click.option("--precision", default="fp32", show_default=True, help="Comma-separated: fp32,bf16,fp16")
@click.option("--batch", type=int, default=None, help="Override the preset's batch")
@click.option("--q-dim", type=int, default=None, help="0 = plain StyleGAN2-ADA [default: preset]")
@click.option("--steps", type=int, default=16, show_default=True, help="Timed steps (use a multiple of 16)")
@click.option("--warmup", type=int, default=2, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
def main(cfg, res, precision, batch, q_dim, steps, warmup, device, threads):
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as root:
        data = make_dataset(root, res)
        for prec in precision.split(","):
            cli = dict(data=data, cfg=cfg, precision=prec, device=device, workers=0)
            if batch:
                cli["batch"] = batch
            if q_dim is not None:
                cli["q_dim"] = q_dim
            spk = measure(cli, steps, warmup, root)
            dev = "cuda: " + torch.cuda.get_device_name() if "cuda" in device or (device == "auto" and torch.cuda.is_available()) \
                else f"cpu ({torch.get_num_threads()} threads)"
            print(f"cfg={cfg} res={res} precision={prec} batch={batch or 'preset'} q_dim={q_dim if q_dim is not None else 'preset'} "
                  f"device={dev}: {spk:.2f} sec/kimg")


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
