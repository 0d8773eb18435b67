"""The generator metrics of a training run (``train.py --metrics``): checked before the run,
computed on G_ema at each snapshot.

``training/`` never imports ``metrics/`` (docs/architecture.md): ``train.py`` hands
``TRAINING_METRICS`` to ``training.launch.resolve_options`` / ``launch`` (``metric_runner=``), and
the training loop calls ``run`` on it. The object is picklable (``--gpus N`` sends it to each
spawned rank).
"""
from __future__ import annotations

from typing import Dict, List, Optional

from dnnlib.util import UserError
from metrics import metric_main


class TrainingMetrics:
    """What the training entry points need from the metrics package."""

    def check(self, opts) -> None:
        """``opts.metrics`` (the option string) -> checked names; a FID/KID metric without its
        feature network fails now (``UserError``), not at the first snapshot."""
        opts.metrics = metric_main.parse_metric_list(opts.metrics)
        if opts.q_dim == 0 and any("degraded" in m for m in opts.metrics):
            raise UserError("degraded metrics need a QC generator; with --q-dim 0 use the sharp ones")
        metric_main.preflight(opts.metrics, opts.get("inception"))

    def run(self, names: List[str], G, dataset_kwargs: dict, run_dir: str, snapshot_pkl: str, kimg: float,
            num_gpus: int = 1, rank: int = 0, device=None, degradation: Optional[str] = None,
            feature_net=None) -> Dict[str, dict]:
        """Every metric in ``names`` on ``G`` (all ranks take part); rank 0 appends each result to
        ``run_dir/metric-<name>.jsonl``. Returns name -> results."""
        out = {}
        for name in names:
            result = metric_main.calc_metric(name, G=G, dataset_kwargs=dataset_kwargs, num_gpus=num_gpus,
                                             rank=rank, device=device, degradation=degradation,
                                             feature_net=feature_net)
            if rank == 0:
                metric_main.report_metric(result, run_dir=run_dir, snapshot_pkl=snapshot_pkl, kimg=kimg)
            out[name] = dict(result.results)
        return out


TRAINING_METRICS = TrainingMetrics()
