"""Registry of generator metrics, ``calc_metric`` for the training loop and ``calc_metrics.py``,
and JSONL reporting.

A metric is a function ``fn(opts: MetricOptions) -> dict`` of named results whose first entry is
the headline value; ``register_metric`` adds one by name. Counted variants (``fid500_full``,
``kid1k_degraded_full``, ``swd256``) are created on first use. Names follow the StyleGAN convention:
``fid50k_full`` = 50k generated images vs the full dataset. ``*_degraded*`` are the QC-StyleGAN
degraded-domain variants (G(z, q), q ~ N(0, I) vs degraded real images, paper Table 1).
"""
from __future__ import annotations

import os
import re
import time
from typing import Callable, Dict, List, Optional

import dnnlib
from dnnlib.util import UserError
from metrics import feature_nets, fid_kid, metric_utils, swd

_metric_dict: Dict[str, Callable] = {}


def register_metric(fn: Callable = None, *, name: Optional[str] = None):
    """Decorator (or call) registering ``fn`` under ``name`` (default: the function name)."""
    def deco(f):
        _metric_dict[name or f.__name__] = f
        return f
    return deco(fn) if fn is not None else deco


_COUNTED = re.compile(r"^(fid|kid)(\d+)(k?)(_degraded)?_full$|^swd(\d+)(k?)(_degraded)?$")


def _resolve(name: str) -> bool:
    """Register a counted variant on first use: ``fid<N>[k][_degraded]_full``,
    ``kid<N>[k][_degraded]_full``, ``swd<N>[k][_degraded]`` (e.g. ``fid500_full``)."""
    m = _COUNTED.match(name)
    if not m:
        return False
    kind = m.group(1) or "swd"
    digits, k, degraded = m.group(2, 3, 4) if m.group(1) else m.group(5, 6, 7)
    count = int(digits) * (1000 if k else 1)
    if count < 2:
        return False
    mode = "degraded" if degraded else "sharp"
    if kind == "swd":
        _register_swd(count, digits + k, mode)
    else:
        _register_fid_kid(kind, count, digits + k, mode)
    return name in _metric_dict


def is_valid_metric(name: str) -> bool:
    return name in _metric_dict or _resolve(name)


def list_valid_metrics() -> List[str]:
    """Registered names (counted variants such as ``fid500_full`` are also accepted)."""
    return list(_metric_dict.keys())


def parse_metric_list(spec) -> List[str]:
    """'fid50k_full,swd2k' -> names, each checked; 'none' or '' -> []."""
    names = spec if isinstance(spec, (list, tuple)) else [s.strip() for s in str(spec).split(",")]
    names = [n for n in names if n and n.lower() != "none"]
    for n in names:
        if not is_valid_metric(n):
            raise UserError(f"unknown metric '{n}'; available: {', '.join(list_valid_metrics())}")
    return names


def preflight(names, feature_net=None) -> None:
    """Fail early (``UserError``) when a FID/KID metric in ``names`` would find no feature
    network, e.g. before a training run that computes FID at its first snapshot."""
    if not any(n.startswith(("fid", "kid")) for n in parse_metric_list(names)):
        return
    if isinstance(feature_net, feature_nets.FeatureNet) or feature_net in feature_nets.RANDOM_SPECS:
        return
    if feature_net is not None:
        if not os.path.isfile(os.fspath(feature_net)):
            raise UserError(f"Inception file not found: {feature_net}")
    elif not any(os.path.isfile(p) for p in feature_nets.cache_candidates()):
        raise UserError(feature_nets.missing_inception_message())


# ---------------------------------------------------------------------------------------------

def calc_metric(name: str, G=None, dataset_kwargs: Optional[dict] = None, num_gpus: int = 1,
                rank: int = 0, device=None, cache_dir: Optional[str] = None, **opts_kwargs) -> dict:
    """Compute one registered metric. Extra keyword arguments go to ``MetricOptions``
    (``feature_net``, ``inception_resize``, ``degradation``, ``degrade_seed``, ``seed``,
    ``G_kwargs``, ``progress``).

    Returns ``{'results': {name: value, ...}, 'metric': name, 'total_time': seconds,
    'total_time_str': '1m 05s', 'num_gpus': n}``; values are meaningful on rank 0.
    """
    if not is_valid_metric(name):
        raise UserError(f"unknown metric '{name}'; available: {', '.join(list_valid_metrics())}")
    opts = metric_utils.MetricOptions(G=G, dataset_kwargs=dataset_kwargs, num_gpus=num_gpus, rank=rank,
                                      device=device, cache_dir=cache_dir, **opts_kwargs)
    start = time.time()
    results = _metric_dict[name](opts)
    total = time.time() - start
    return dnnlib.EasyDict(results=dnnlib.EasyDict(results), metric=name, total_time=total,
                           total_time_str=dnnlib.util.format_time(total), num_gpus=num_gpus)


def report_metric(result: dict, run_dir: Optional[str] = None, snapshot_pkl: Optional[str] = None,
                  kimg: Optional[float] = None) -> Optional[str]:
    """Append ``result`` to ``<run_dir>/metric-<name>.jsonl`` (with snapshot, kimg and a
    timestamp). Returns the file written, or None without ``run_dir``."""
    if run_dir is None:
        return None
    record = dict(result)
    record["snapshot_pkl"] = os.path.basename(snapshot_pkl) if snapshot_pkl else None
    record["kimg"] = kimg
    record["timestamp"] = time.time()
    path = os.path.join(run_dir, f"metric-{result['metric']}.jsonl")
    dnnlib.util.append_jsonl(path, record)
    return path


# ---------------------------------------------------------------------------------------------
# Registered metrics. Counts: 50k (paper), 10k and 2k (quick runs during training).

def _register_fid_kid(kind: str, count: int, label: str, mode: str) -> None:
    suffix = "_degraded_full" if mode == "degraded" else "_full"
    name = f"{kind}{label}{suffix}"
    compute = fid_kid.compute_fid if kind == "fid" else fid_kid.compute_kid

    def fn(opts):
        return {name: compute(opts, mode=mode, num_gen=count, max_real=None)}
    fn.__name__ = name
    fn.__doc__ = f"{kind.upper()} of {count} generated images vs the full dataset ({mode})."
    register_metric(fn, name=name)


def _register_swd(count: int, label: str, mode: str) -> None:
    name = f"swd{label}" + ("_degraded" if mode == "degraded" else "")

    def fn(opts):
        out = swd.compute_swd(opts, mode=mode, num_images=count)
        results = {name: out["avg"]}
        results.update({f"{name}_res{k}": v for k, v in out.items() if k != "avg"})
        return results
    fn.__name__ = name
    fn.__doc__ = f"SWD x 1e3 of {count} generated vs {count} real images ({mode})."
    register_metric(fn, name=name)


for _kind in ("fid", "kid"):
    for _count, _label in ((50000, "50k"), (10000, "10k"), (2000, "2k")):
        for _mode in metric_utils.MODES:
            _register_fid_kid(_kind, _count, _label, _mode)
for _count, _label in ((16384, "16k"), (2000, "2k")):
    for _mode in metric_utils.MODES:
        _register_swd(_count, _label, _mode)
