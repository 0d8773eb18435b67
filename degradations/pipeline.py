"""Pipelines: a validated tree of steps (op / one_of / steps) that samples one record per image
and applies it, batched on CPU or CUDA or per image with OpenCV.

Spec grammar (JSON)::

    spec  := {"name": str, "steps": [node, ...]}
    node  := {"op": NAME, "p": prob, <op parameters>}          one degradation
           | {"one_of": [node, ...], "weights": [w, ...], "p": prob, "name": str}
           | {"steps": [node, ...], "p": prob, "name": str}     a sequence
    a parameter is a number or a range [lo, hi]; kernel sizes are odd.

``p`` (default 1) is the probability that a node runs; ``one_of`` picks one child (weights
default to uniform). A record lists the names of the named nodes taken (``groups``, e.g. the
family of the paper mix) and the ops with their drawn parameters.
"""
from __future__ import annotations

import copy
import json
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from dnnlib.util import UserError
from torch_utils import misc

from degradations import functional as Fn
from .registry import OPS, REFERENCE_RESOLUTION, Sampler, get_op
from .presets import PRESETS, preset_spec

MODES = ("relative", "absolute")


# ---------------------------------------------------------------------------------------------
# Spec validation.

def _check_p(node: Dict[str, Any], path: str) -> float:
    p = node.get("p", 1.0)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise UserError(f"{path}: 'p' must be a probability in [0, 1], got {p!r}")
    return float(p)


def _check_name(node: Dict[str, Any], path: str) -> Optional[str]:
    name = node.get("name")
    if name is not None and not isinstance(name, str):
        raise UserError(f"{path}: 'name' must be a string")
    return name


def normalize_node(node: Any, path: str, resolution: int, mode: str) -> Dict[str, Any]:
    """Validate one node and return it with defaults filled and ranges scaled for ``mode``."""
    if not isinstance(node, dict):
        raise UserError(f"{path}: a step must be an object, got {node!r}")
    kinds = [k for k in ("op", "one_of", "steps") if k in node]
    if len(kinds) != 1:
        raise UserError(f"{path}: a step needs exactly one of 'op', 'one_of', 'steps' (got {sorted(node)})")
    p = _check_p(node, path)
    kind = kinds[0]
    if kind == "op":
        if not isinstance(node["op"], str):
            raise UserError(f"{path}: 'op' must be a name")
        op = get_op(node["op"], path)
        params = {k: v for k, v in node.items() if k not in ("op", "p")}
        cfg = op.configure(params, f"{path} ({op.name})")
        if mode == "relative":
            cfg = op.relative(cfg, resolution)
        return {"op": op.name, "p": p, **cfg}
    allowed = {kind, "p", "name"} | ({"weights"} if kind == "one_of" else set())
    extra = set(node) - allowed
    if extra:
        raise UserError(f"{path}: unknown key(s) {sorted(extra)} in a '{kind}' step")
    children = node[kind]
    if not isinstance(children, list) or not children:
        raise UserError(f"{path}: '{kind}' must be a non-empty list of steps")
    out = {kind: [normalize_node(c, f"{path}.{kind}[{i}]", resolution, mode) for i, c in enumerate(children)],
           "p": p}
    name = _check_name(node, path)
    if name is not None:
        out["name"] = name
    if kind == "one_of" and node.get("weights") is not None:
        w = node["weights"]
        if (not isinstance(w, list) or len(w) != len(children)
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in w) or sum(w) <= 0):
            raise UserError(f"{path}: 'weights' must be {len(children)} non-negative numbers, not all zero")
        out["weights"] = [float(v) for v in w]
    return out


def normalize_spec(spec: Dict[str, Any], resolution: int, mode: str) -> Dict[str, Any]:
    if not isinstance(spec, dict):
        raise UserError("a pipeline spec must be a JSON object with 'steps'")
    extra = set(spec) - {"name", "steps", "description"}
    if extra:
        raise UserError(f"pipeline spec: unknown key(s) {sorted(extra)} (allowed: name, steps, description)")
    if "steps" not in spec:
        raise UserError("pipeline spec: missing 'steps'")
    name = spec.get("name", "custom")
    if not isinstance(name, str):
        raise UserError("pipeline spec: 'name' must be a string")
    root = normalize_node({"steps": spec["steps"]}, "steps", resolution, mode)
    return {"name": name, "steps": root["steps"]}


# ---------------------------------------------------------------------------------------------
# Pipeline.

class Pipeline:
    """A degradation pipeline for images of a given resolution (see the module docstring).

    ``pipe(x, generator) -> (y, records)``: x, y ``[N, 3, H, W]`` float32 in [0, 255] (CPU or
    CUDA); records are plain dicts. ``pipe.replay(x, records)`` redoes them. Per image on CPU:
    ``pipe.apply_numpy(img_uint8_hwc, seed) -> (img, record)``, ``pipe.replay_numpy(img, record)``.
    Values are rounded to integers in [0, 255] at the start and after every op, as a uint8
    pipeline holds them.
    """

    def __init__(self, spec: Dict[str, Any], resolution: int, mode: Optional[str] = None, impl: str = "auto",
                 workers: int = 1):
        resolution = int(resolution)
        if resolution < 1:
            raise UserError(f"resolution must be positive, got {resolution}")
        if mode is None:
            mode = "relative" if resolution < REFERENCE_RESOLUTION else "absolute"
        if mode not in MODES:
            raise UserError(f"unknown mode '{mode}' (use one of {', '.join(MODES)})")
        if impl not in ("auto", "torch", "cv2"):
            raise UserError(f"unknown impl '{impl}' (use auto, torch or cv2)")
        self.source_spec = copy.deepcopy(spec)
        self.resolution = resolution
        self.mode = mode
        self.impl = impl            # 'auto' | 'cv2' (CPU, per image) | 'torch' (grouped, any device)
        self.workers = int(workers) # threads over images in the CPU path (1: the calling thread)
        self.spec = normalize_spec(spec, resolution, mode)     # ranges as used (after scaling)
        self.name = self.spec["name"]

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, resolution={self.resolution}, mode={self.mode!r})"

    # -- sampling ----------------------------------------------------------------------------
    def _sample_node(self, node: Dict[str, Any], s: Sampler, ops: list, groups: list) -> None:
        if node["p"] < 1.0 and not s.uniform() < node["p"]:
            return
        if "op" in node:
            op = OPS[node["op"]]
            cfg = {k: v for k, v in node.items() if k not in ("op", "p")}
            ops.append(op.sample(cfg, s))
            return
        if "name" in node:
            groups.append(node["name"])
        if "one_of" in node:
            children = node["one_of"]
            self._sample_node(children[s.choice(len(children), node.get("weights"))], s, ops, groups)
        else:
            for child in node["steps"]:
                self._sample_node(child, s, ops, groups)

    def sample_one(self, s: Sampler) -> Dict[str, Any]:
        ops: List[Dict[str, Any]] = []
        groups: List[str] = []
        for node in self.spec["steps"]:
            self._sample_node(node, s, ops, groups)
        return {"pipeline": self.name, "mode": self.mode, "resolution": self.resolution,
                "groups": groups, "ops": ops}

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> List[Dict[str, Any]]:
        """Records for ``n`` images (drawn in order from ``generator``)."""
        s = Sampler(_default_generator() if generator is None else generator)
        return [self.sample_one(s) for _ in range(n)]

    # -- batched application -----------------------------------------------------------------
    def __call__(self, x: torch.Tensor, generator: Optional[torch.Generator] = None
                 ) -> Tuple[torch.Tensor, List[Dict[str, Any]]]:
        # x: [N, 3, H, W] float32 in [0, 255]
        misc.assert_shape(x, [None, 3, None, None])
        records = self.sample(x.shape[0], generator)
        return self.replay(x, records), records

    def replay(self, x: torch.Tensor, records: Sequence[Dict[str, Any]]) -> torch.Tensor:
        """Apply recorded degradations (one record per image) to ``x``.

        CPU tensors (``impl`` 'auto' or 'cv2'): each image's chain runs through the OpenCV ops on
        uint8 data (``workers`` > 1 spreads images over a thread pool), which measured 4-100x
        faster per op on CPU than grouped torch convolutions (``benchmarks/``). CUDA tensors
        or ``impl='torch'``: ops run stage by stage, each op once per group of images sharing a
        kernel size (grouped convolutions, gathers, vectorised noise).
        """
        # x: [N, 3, H, W] float32 in [0, 255] -> same shape and dtype
        misc.assert_shape(x, [len(records), 3, None, None])
        entries = [_record_ops(r) for r in records]
        for ops in entries:
            for e in ops:
                get_op(e["op"], "record").check_entry(e)
        if self.impl == "cv2" or (self.impl == "auto" and not x.is_cuda):
            return self._replay_cv2(x, records)
        return self._replay_torch(x, entries)

    def _replay_cv2(self, x: torch.Tensor, records: Sequence[Dict[str, Any]]) -> torch.Tensor:
        N, C, H, W = x.shape
        src = x.detach().float().cpu().numpy()
        y = np.empty((N, C, H, W), np.float32)

        def work(i: int) -> None:
            # One image at a time in numpy (cache-resident, no small multi-threaded torch ops):
            # round/clip to uint8 HWC, the OpenCV chain, back to float CHW.
            u8 = np.clip(np.rint(src[i].transpose(1, 2, 0)), 0, 255).astype(np.uint8)
            y[i] = self.replay_numpy(u8, records[i]).transpose(2, 0, 1)
        workers = min(self.workers, N)
        if workers <= 1:
            for i in range(N):
                work(i)
        else:
            list(_thread_pool(workers).map(work, range(N)))
        return torch.from_numpy(y).to(x.dtype)

    def _replay_torch(self, x: torch.Tensor, entries: List[List[Dict[str, Any]]]) -> torch.Tensor:
        y = Fn.quantize_(x.detach().float().clone())
        stages = max((len(e) for e in entries), default=0)
        for stage in range(stages):
            by_op = defaultdict(list)
            for i, ops in enumerate(entries):
                if stage < len(ops):
                    by_op[ops[stage]["op"]].append(i)
            for name, idx in by_op.items():
                op = OPS[name]
                sel = [entries[i][stage] for i in idx]
                if len(idx) == y.shape[0]:
                    y = op.apply_torch(y, sel)
                else:
                    t = torch.as_tensor(idx, device=y.device)
                    y.index_copy_(0, t, op.apply_torch(y.index_select(0, t), sel))
        return y.to(x.dtype)

    # -- per-image CPU path ------------------------------------------------------------------
    def apply_numpy(self, img: np.ndarray, rng_or_seed: Union[int, torch.Generator, np.random.Generator, None] = None
                    ) -> Tuple[np.ndarray, Dict[str, Any]]:
        """Degrade one uint8 ``[H, W, 3]`` image with OpenCV (for data-loader workers).
        ``rng_or_seed``: an int seed, a ``torch.Generator`` or a ``numpy.random.Generator``.
        The same seed gives the same record as ``pipe(x, torch.Generator().manual_seed(seed))``
        for the first image of a batch."""
        record = self.sample(1, _as_generator(rng_or_seed))[0]
        return self.replay_numpy(img, record), record

    def replay_numpy(self, img: np.ndarray, record: Dict[str, Any]) -> np.ndarray:
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"apply_numpy expects uint8 [H, W, 3], got {img.dtype} {img.shape}")
        out = img
        for e in _record_ops(record):
            op = get_op(e.get("op"), "record")
            op.check_entry(e)
            out = op.apply_cv2(np.ascontiguousarray(out), e)
        return np.ascontiguousarray(out)


_POOLS: Dict[int, Any] = {}


def _thread_pool(workers: int):
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="degrade")
    return _POOLS[workers]


def _record_ops(record: Dict[str, Any]) -> List[Dict[str, Any]]:
    if not isinstance(record, dict) or not isinstance(record.get("ops"), list):
        raise UserError(f"a record must be a dict with an 'ops' list, got {record!r}")
    for e in record["ops"]:
        if not isinstance(e, dict) or "op" not in e:
            raise UserError(f"bad record entry {e!r}")
    return record["ops"]


def _default_generator() -> torch.Generator:
    return torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, (1,)).item()))


def _as_generator(rng_or_seed) -> torch.Generator:
    if rng_or_seed is None:
        return _default_generator()
    if isinstance(rng_or_seed, torch.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, np.random.Generator):
        return torch.Generator().manual_seed(int(rng_or_seed.integers(0, 2 ** 62)))
    if isinstance(rng_or_seed, (int, np.integer)) and not isinstance(rng_or_seed, bool):
        return torch.Generator().manual_seed(int(rng_or_seed))
    raise TypeError(f"expected a seed or a generator, got {type(rng_or_seed).__name__}")


# ---------------------------------------------------------------------------------------------
# Building.

def load_spec(name_or_spec: Union[str, Dict[str, Any]]) -> Dict[str, Any]:
    """A preset name, a dict spec, or the path of a JSON spec file -> spec dict."""
    if isinstance(name_or_spec, dict):
        return copy.deepcopy(name_or_spec)
    name = os.fspath(name_or_spec)
    if name in PRESETS:
        return preset_spec(name)
    if name.endswith(".json") or os.path.isfile(name):
        if not os.path.isfile(name):
            raise UserError(f"pipeline spec file not found: {name}")
        try:
            with open(name, "r", encoding="utf-8") as f:
                return json.load(f)
        except json.JSONDecodeError as exc:
            raise UserError(f"{name}: not valid JSON ({exc})") from None
    raise UserError(f"unknown pipeline '{name}' (presets: {', '.join(PRESETS)}; or a .json spec)")


def build_pipeline(name_or_spec: Union[str, Dict[str, Any]], resolution: int, mode: Optional[str] = None,
                   impl: str = "auto", workers: int = 1) -> Pipeline:
    """Build a pipeline from a preset name, a dict spec or a JSON spec path.

    ``mode``: None -> 'relative' below 256 and 'absolute' at 256 and above; relative scales
    kernel sizes by R/256 (odd, at least 3) and raises the downscale floor to
    min(0.9, 0.1 * 256 / R); noise and JPEG ranges stay.
    """
    return Pipeline(load_spec(name_or_spec), resolution, mode=mode, impl=impl, workers=workers)


def list_pipelines() -> List[str]:
    return list(PRESETS)
