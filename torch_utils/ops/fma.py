"""Fused multiply-add ``a * b + c`` with broadcasting (one kernel, autograd of any order)."""
import torch


def fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Return ``a * b + c``; shapes broadcast as in ``torch.addcmul``.

    Without autograd, when ``a`` has the output's shape and dtype, the result keeps ``a``'s memory
    format (``addcmul`` would follow ``c``, e.g. NCHW noise turning channels_last activations
    into NCHW and costing a reorder in the next convolution).
    """
    needs_grad = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad or c.requires_grad)
    if (not needs_grad and a.dtype == b.dtype == c.dtype
            and torch.broadcast_shapes(a.shape, b.shape, c.shape) == a.shape):
        return torch.addcmul(c, a, b, out=torch.empty_like(a))
    return torch.addcmul(c, a, b)
