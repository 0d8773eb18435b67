"""The model campaign's curve (issue 31): how a training run's degraded mode moves, snapshot by
snapshot, without an encoder.

For every ``--every``-th snapshot of a run folder (and the last one), the SWD x 1e3 of its G_ema's
degraded renders G(w, q), q ~ N(0, I), against ``paper``-degraded training faces (the Table 1
measure, ``metrics.swd``; the real side is computed once for all snapshots). One JSON line per
snapshot goes to ``--out``; a rerun measures only the snapshots not there yet.

    python -m evaluation.campaign_curve --run ../runs/qc/00000-utkface64-faces64-gpus1-batch16-q16-kd0-ada0.6 \\
        --reals ../shared/datasets/utkface64.zip --every 12 --also pretrained/qc-faces64.pt --out ../runs/qc/curve.jsonl
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
import time
from typing import List, Optional, Sequence

import click
import torch
from tqdm import tqdm

from dnnlib.util import UserError, append_jsonl, cli_main, read_jsonl
from metrics import swd
from metrics import metric_utils
from metrics.metric_utils import MetricOptions
from training.checkpoint import load_generator

SNAPSHOT_RE = re.compile(r"network-snapshot-(\d+(?:\.\d+)?)\.pt$")


@dataclasses.dataclass(frozen=True)
class CurvePoint:
    """One snapshot's row of the curve."""
    network: str                # the file measured (path as given or found)
    kimg: Optional[float]       # the run's counter at the snapshot; None for an --also file
    swd_degraded: float         # SWD x 1e3, mean over pyramid levels
    swd_levels: dict            # per level ('64', '32', '16')
    images: int
    seconds: float

    def record(self) -> dict:
        return dataclasses.asdict(self)


def run_snapshots(run_dir: str, every: int) -> List[str]:
    """Every ``every``-th snapshot of ``run_dir`` in kimg order, and always the last one."""
    found = sorted((float(m.group(1)), p) for p in glob.glob(os.path.join(run_dir, "network-snapshot-*.pt"))
                   if (m := SNAPSHOT_RE.search(os.path.basename(p))))
    if not found:
        raise UserError(f"no network-snapshot-*.pt in {run_dir}")
    picked = [p for i, (_k, p) in enumerate(found) if i % every == 0]
    return picked if picked[-1] == found[-1][1] else picked + [found[-1][1]]


def measure_curve(networks: Sequence[str], reals: str, out: str, images: int = 2000, seed: int = 0,
                  device: str = "cpu") -> List[CurvePoint]:
    """Measure each file of ``networks`` not yet in ``out`` (JSONL); returns the new points."""
    done = {r["network"] for r in read_jsonl(out)} if os.path.isfile(out) else set()
    todo = [n for n in networks if n not in done]
    if not todo:
        return []
    dev = torch.device(device)
    opts = MetricOptions(dataset_kwargs={"path": reals}, device=dev, seed=seed, progress=False)
    real = swd.real_descriptors(opts, "degraded", images)          # once; each generator is loaded once, below
    resolutions = swd.pyramid_resolutions(metric_utils.open_dataset(opts).resolution)
    points = []
    for path in tqdm(todo, desc="snapshots", unit="snapshot"):
        t0 = time.perf_counter()
        G = load_generator(path, device=dev, require_qc=True)
        opts.G = G                  # the real side stays; only the generator changes
        levels = swd.swd_between(real, swd.generated_descriptors(opts, "degraded", images), resolutions, seed)
        m = SNAPSHOT_RE.search(os.path.basename(path))
        point = CurvePoint(network=path, kimg=float(m.group(1)) if m else None, swd_degraded=levels.pop("avg"),
                           swd_levels=levels, images=images, seconds=round(time.perf_counter() - t0, 1))
        append_jsonl(out, point.record())
        points.append(point)
    return points


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--run", "run_dir", default=None, type=click.Path(file_okay=False), help="Training run folder (its network-snapshot-*.pt).")
@click.option("--every", type=click.IntRange(min=1), default=12, show_default=True, help="Measure every N-th snapshot (and the last).")
@click.option("--also", multiple=True, help="Other generator files to measure too (e.g. the shipped model).")
@click.option("--reals", required=True, type=click.Path(), help="The training ZIP (degraded by the paper pipeline).")
@click.option("--images", type=click.IntRange(min=64), default=2000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", required=True, help="JSONL of the curve (appended; measured files are skipped).")
@cli_main
def main(run_dir, every, also, reals, images, seed, device, out):
    """The degraded mode's SWD per snapshot of a campaign run."""
    networks = list(also) + (run_snapshots(run_dir, every) if run_dir else [])
    if not networks:
        raise UserError("nothing to measure: give --run and/or --also")
    for p in measure_curve(networks, reals, out, images=images, seed=seed, device=device):
        print(f"{p.kimg if p.kimg is not None else p.network}: SWD degraded {p.swd_degraded:.1f}")


if __name__ == "__main__":
    main()
