"""Fused bias + activation + gain + clamp (StyleGAN2, Karras et al. 2020, Sec. 2 / App. B).

``bias_act(x, b, act='lrelu', gain=sqrt(2), clamp=256)`` computes
``clamp(act(x + b) * gain, -clamp, clamp)``. The reference path is plain PyTorch (autograd,
including second-order gradients, comes for free); on CUDA an optional kernel is used when it
builds (``impl='auto'``), see ``torch_utils/ops/cuda_kernels.py``.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, NamedTuple, Optional

import torch
import torch.nn.functional as F

from . import cuda_kernels


# act(k x) = k act(x) for k > 0: a gain can be applied before these activations.
POSITIVELY_HOMOGENEOUS = ("linear", "relu", "lrelu")


class ActSpec(NamedTuple):
    func: Callable[[torch.Tensor, float], torch.Tensor]  # f(x, alpha)
    def_alpha: float                                       # default alpha (0 when unused)
    def_gain: float                                        # default gain (keeps activations ~unit variance)


ACTIVATIONS: Dict[str, ActSpec] = {
    "linear":   ActSpec(lambda x, a: x,                                   0.0, 1.0),
    "relu":     ActSpec(lambda x, a: F.relu(x),                           0.0, math.sqrt(2)),
    "lrelu":    ActSpec(lambda x, a: F.leaky_relu(x, a),                  0.2, math.sqrt(2)),
    "tanh":     ActSpec(lambda x, a: torch.tanh(x),                       0.0, 1.0),
    "sigmoid":  ActSpec(lambda x, a: torch.sigmoid(x),                    0.0, 1.0),
    "elu":      ActSpec(lambda x, a: F.elu(x, alpha=a),                   1.0, 1.0),
    "selu":     ActSpec(lambda x, a: F.selu(x),                           0.0, 1.0),
    "softplus": ActSpec(lambda x, a: F.softplus(x),                       0.0, 1.0),
    "swish":    ActSpec(lambda x, a: torch.sigmoid(x) * x,                0.0, math.sqrt(2)),
}


def _resolve(act: str, alpha: Optional[float], gain: Optional[float]):
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{act}' (known: {', '.join(ACTIVATIONS)})")
    spec = ACTIVATIONS[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    return spec, alpha, gain


def bias_act_ref(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = "linear",
                 alpha: Optional[float] = None, gain: Optional[float] = None,
                 clamp: Optional[float] = None, overwrite: bool = False) -> torch.Tensor:
    """Reference implementation. x: any shape; b: [x.shape[dim]] or None.
    ``overwrite``: the caller's ``x`` is a temporary that may be overwritten."""
    spec, alpha, gain = _resolve(act, alpha, gain)
    fresh = overwrite                     # may we write into x?
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias shape {tuple(b.shape)} does not match x.shape[{dim}]={x.shape[dim]}")
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
        fresh = True                      # x is now our own tensor
    # Without autograd, work in place on our own intermediate (same values, less memory traffic).
    # Grad mode decides (the conservative rule: under autograd no in-place step can break a
    # backward pass, whatever x.requires_grad says).
    inplace = not torch.is_grad_enabled()
    if act == "lrelu" and inplace and fresh:
        x = F.leaky_relu_(x, alpha)
    elif act == "relu" and inplace and fresh:
        x = F.relu_(x)
    else:
        x = spec.func(x, alpha)
        fresh = act != "linear" or fresh
    if gain != 1:
        x = x.mul_(gain) if (inplace and fresh) else x * gain
        fresh = True
    if clamp is not None and clamp >= 0:
        x = x.clamp_(-clamp, clamp) if (inplace and fresh) else x.clamp(-clamp, clamp)
    return x


def bias_act(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = "linear",
             alpha: Optional[float] = None, gain: Optional[float] = None, clamp: Optional[float] = None,
             impl: str = "auto", overwrite: bool = False) -> torch.Tensor:
    """Bias, activation, gain and clamp in one call.

    Args:
        x:     input tensor of any shape.
        b:     bias of shape ``[x.shape[dim]]``, or None.
        dim:   the dimension of ``x`` the bias runs along.
        act:   one of ``ACTIVATIONS``.
        alpha: the activation's shape parameter (lrelu slope, elu alpha); None = its default.
        gain:  output scale; None = the activation's default (sqrt(2) for (l)relu/swish).
        clamp: clamp the output to [-clamp, clamp]; None = no clamping.
        impl:  'auto' (CUDA kernel when available on a CUDA tensor), 'ref'
               or 'cuda'.
        overwrite: ``x`` is a temporary of the caller; without autograd the reference path may
               then work in place on it.
    """
    if impl not in ("auto", "ref", "cuda"):
        raise ValueError(f"impl must be auto|ref|cuda, got {impl}")
    if impl != "ref" and x.is_cuda:
        fn = cuda_kernels.get_bias_act()
        if fn is not None and x.dtype in cuda_kernels.KERNEL_DTYPES:
            spec, alpha_v, gain_v = _resolve(act, alpha, gain)
            return fn(x, b, dim=dim, act=act, alpha=alpha_v, gain=gain_v,
                      clamp=(-1.0 if clamp is None else float(clamp)))
        if impl == "cuda" and fn is None:
            raise RuntimeError("bias_act: the CUDA kernel is not available (see the warning above)")
    return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, overwrite=overwrite)
