"""The StyleGAN mapping network (Karras et al. 2019, Sec. 2; StyleGAN2-ADA's form): z (+ label) -> w.

Shared by the generator (``training/networks.py``: z -> ws, w_avg for truncation) and the
discriminator (``training/discriminator.py``: the label embedding of a conditional D).
Parameter and buffer names are the official ones (``fc{i}``, ``embed``, ``w_avg``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from torch_utils.misc import assert_shape

from .layers import FullyConnectedLayer, normalize_2nd_moment


class MappingNetwork(nn.Module):
    """z (+ class embedding) -> w, broadcast to ``num_ws`` copies; tracks ``w_avg`` for truncation."""

    def __init__(self,
                 z_dim: int,                           # latent size; 0 = no latent
                 c_dim: int,                           # conditioning label size; 0 = none
                 w_dim: int,                           # intermediate latent size
                 num_ws: Optional[int],                # copies of w to output; None = no broadcast
                 num_layers: int = 8,                  # fully connected layers
                 embed_features: Optional[int] = None, # label embedding size; None = w_dim
                 layer_features: Optional[int] = None, # hidden width; None = w_dim
                 activation: str = "lrelu",
                 lr_multiplier: float = 0.01,          # StyleGAN's 100x lower mapping learning rate
                 w_avg_beta: Optional[float] = 0.995): # decay of the w_avg moving average; None = off
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1],
                                                          activation=activation, lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: Optional[torch.Tensor], c: Optional[torch.Tensor], truncation_psi: float = 1,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False) -> torch.Tensor:
        x = None
        if self.z_dim > 0:
            assert_shape(z, [None, self.z_dim])                          # z: [N, z_dim]
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            assert_shape(c, [None, self.c_dim])                          # c: [N, c_dim]
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas and self.w_avg_beta is not None and self.num_ws is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])              # [N, num_ws, w_dim]
        if truncation_psi != 1:
            if self.num_ws is None or self.w_avg_beta is None:
                raise ValueError("truncation needs w_avg (num_ws and w_avg_beta set)")
            cutoff = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
            x = x.clone()
            x[:, :cutoff] = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
        return x
