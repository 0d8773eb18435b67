"""Wall-clock time per named section of a training step (``benchmarks/bench_train.py --profile``).

Code that wants to be profiled holds a timer and wraps its sections::

    with self.timer("synthesis pair"):
        ...

``NULL_TIMER`` (the default everywhere) does nothing. ``PhaseTimer`` accumulates *exclusive*
time under the path of open sections (``"Gmain / synthesis pair"``): while a nested section
runs, the enclosing one is paused, so the sections of one step add up to the step's wall time
and nothing is counted twice. On CUDA it synchronises at every
boundary (profiling only: it serialises the GPU).
"""
from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from typing import Dict, List, Optional

import torch


class _NullTimer:
    """A timer that measures nothing (the cost of one ``with`` statement)."""

    @contextlib.contextmanager
    def __call__(self, name: str):
        yield


NULL_TIMER = _NullTimer()


class PhaseTimer:
    """Exclusive seconds and call counts per section name."""

    def __init__(self, device: Optional[torch.device] = None, clock: str = "wall"):
        """``clock``: 'wall' (perf_counter) or 'cpu' (this process's CPU seconds, all threads:
        steadier than wall time on a machine shared with other jobs)."""
        if clock not in ("wall", "cpu"):
            raise ValueError(f"clock must be 'wall' or 'cpu', got '{clock}'")
        self.clock = time.perf_counter if clock == "wall" else time.process_time
        self.cuda = device is not None and torch.device(device).type == "cuda"
        self.seconds: Dict[str, float] = OrderedDict()
        self.calls: Dict[str, int] = OrderedDict()
        self._stack: List[list] = []          # [name, start of the current running stretch]

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return self.clock()

    def _add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def __call__(self, name: str):
        now = self._now()
        if self._stack:                       # pause the enclosing section
            parent = self._stack[-1]
            self._add(parent[0], now - parent[1])
        path = f"{self._stack[-1][0]} / {name}" if self._stack else name
        self._stack.append([path, now])
        self.calls[path] = self.calls.get(path, 0) + 1
        try:
            yield
        finally:
            now = self._now()
            entry = self._stack.pop()
            self._add(entry[0], now - entry[1])
            if self._stack:                   # resume the enclosing section
                self._stack[-1][1] = now

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
