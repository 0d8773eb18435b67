"""Named running statistics for training logs, reduced over ranks at each tick.

``Collector.report(name, values)`` adds values (a tensor or number) to the current tick;
``Collector.reduce()`` sums counts, sums and squares over ranks and returns
``{name: {'num', 'mean', 'std'}}``, then starts a new tick.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch


class Collector:
    def __init__(self):
        self._moments: Dict[str, torch.Tensor] = {}

    def report(self, name: str, values) -> None:
        v = torch.as_tensor(values).detach().flatten().double().cpu()
        v = v[torch.isfinite(v)]
        m = torch.stack([torch.tensor(float(v.numel()), dtype=torch.float64), v.sum(), v.square().sum()])
        if name in self._moments:
            self._moments[name] += m
        else:
            self._moments[name] = m

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The current tick's partial moments (a snapshot taken mid-tick keeps them)."""
        return {k: v.clone() for k, v in self._moments.items()}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        self._moments = {k: torch.as_tensor(v, dtype=torch.float64).clone() for k, v in state.items()}

    def reduce(self, reduce_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Dict[str, dict]:
        """All ranks must call this with the same names reported (true for the training loop,
        which reports the same terms on every rank)."""
        names = sorted(self._moments)
        out: Dict[str, dict] = {}
        if names:
            stacked = torch.stack([self._moments[n] for n in names])
            if reduce_fn is not None:
                stacked = reduce_fn(stacked)
            for name, (num, total, sq) in zip(names, stacked.tolist()):
                mean = total / num if num else float("nan")
                var = max(sq / num - mean * mean, 0.0) if num else float("nan")
                out[name] = {"num": num, "mean": mean, "std": var ** 0.5}
        self._moments = {}
        return out
