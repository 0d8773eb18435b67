"""evaluation.campaign_curve: the degraded mode's SWD per snapshot of a run, resumable, and the
same number metrics.swd.compute_swd gives for that generator."""
import os

import numpy as np
import pytest
import torch

from _applications import save_tiny_checkpoint
from dnnlib.image_io import write_image
from dnnlib.util import read_jsonl
from evaluation import campaign_curve as cc
from metrics import swd
from metrics.metric_utils import MetricOptions
from training.checkpoint import load_generator

RES = 32


@pytest.fixture()
def run(tmp_path):
    run_dir = tmp_path / "run"
    os.makedirs(run_dir)
    for k in (1, 2, 3):
        save_tiny_checkpoint(str(run_dir / f"network-snapshot-{k:06d}.000.pt"), seed=k, resolution=RES)
    reals = tmp_path / "reals"
    rng = np.random.RandomState(0)
    for i in range(12):
        write_image(str(reals / f"{i}.png"), rng.randint(0, 256, (RES, RES, 3)).astype(np.uint8))
    return str(run_dir), str(reals)


def test_snapshots_every_nth_and_the_last(run):
    run_dir, _ = run
    names = [os.path.basename(p) for p in cc.run_snapshots(run_dir, 2)]
    assert names == ["network-snapshot-000001.000.pt", "network-snapshot-000003.000.pt"]
    assert len(cc.run_snapshots(run_dir, 1)) == 3 and len(cc.run_snapshots(run_dir, 5)) == 2


def test_curve_matches_compute_swd_and_resumes(run, tmp_path):
    run_dir, reals = run
    out = str(tmp_path / "curve.jsonl")
    nets = cc.run_snapshots(run_dir, 2)
    points = cc.measure_curve(nets, reals, out, images=12)
    assert [p.kimg for p in points] == [1.0, 3.0] and all(p.swd_degraded > 0 for p in points)
    G = load_generator(nets[1])
    direct = swd.compute_swd(MetricOptions(G=G, dataset_kwargs={"path": reals}, device=torch.device("cpu")),
                             "degraded", 12)
    assert points[1].swd_degraded == pytest.approx(direct["avg"], rel=1e-6)   # the real side reused gives the same
    assert points[0].swd_degraded != points[1].swd_degraded
    assert cc.measure_curve(nets, reals, out, images=12) == []                 # a rerun measures nothing again
    more = cc.measure_curve(cc.run_snapshots(run_dir, 1), reals, out, images=12)
    assert [p.kimg for p in more] == [2.0] and len(read_jsonl(out)) == 3
