"""Generator metrics of a network file (the library behind ``calc_metrics.py``)."""
from __future__ import annotations

import os

import dnnlib
from dnnlib.util import UserError
from metrics import metric_main
from torch_utils.misc import resolve_device
from training.checkpoint import load_network, pick_generator


def _snapshot_kimg(nets: dict):
    state = nets.get("training_state") or {}
    if "kimg" in state:
        return float(state["kimg"])
    if "cur_nimg" in state:
        return float(state["cur_nimg"]) / 1000
    return None


def run_generator_metrics(network: str, metrics: str, data=None, inception=None, inception_resize="auto",
                          outdir=None, device="auto", cache_dir=None, seed=0, degradation="paper",
                          degrade_seed=0, progress=True, echo=print) -> list:
    """Load ``network``, compute each metric, append the JSONL lines; returns the result dicts."""
    names = metric_main.parse_metric_list(metrics)
    if not names:
        raise UserError("no metrics given (--metrics fid50k_full,...)")
    dev = resolve_device(device)
    nets = load_network(network, device=dev)
    G = pick_generator(nets, network, require_qc=any("degraded" in n for n in names))
    if data is None:
        data = ((nets.get("metadata") or {}).get("training_set_kwargs") or {}).get("path")
        if data is None or not os.path.exists(data):
            raise UserError("pass --data DATASET (the real images to compare with); the network file "
                            "names no existing training set")
    dataset_kwargs = dnnlib.EasyDict(path=data)
    run_dir = outdir or os.path.dirname(os.path.abspath(network))
    out = []
    for name in names:
        result = metric_main.calc_metric(name, G=G, dataset_kwargs=dataset_kwargs, device=dev,
                                         cache_dir=cache_dir, feature_net=inception,
                                         inception_resize=inception_resize, degradation=degradation,
                                         degrade_seed=degrade_seed, seed=seed, progress=progress)
        path = metric_main.report_metric(result, run_dir=run_dir, snapshot_pkl=network, kimg=_snapshot_kimg(nets))
        values = "  ".join(f"{k} {v:.4f}" for k, v in result["results"].items())
        echo(f"{values}  ({result['total_time_str']}) -> {path}")
        out.append(result)
    return out
