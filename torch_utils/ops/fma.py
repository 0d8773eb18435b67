"""Fused multiply-add ``a * b + c`` with broadcasting (one kernel, autograd of any order)."""
import torch


def fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Return ``a * b + c``; shapes broadcast as in ``torch.addcmul``."""
    return torch.addcmul(c, a, b)
