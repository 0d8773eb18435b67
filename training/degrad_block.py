"""The DegradBlock of QC-StyleGAN (Nguyen et al., NeurIPS 2022, Sec. 3.2, Fig. 2).

In a block that carries q, conv1 is widened to ``C + D_q * L`` output channels:

    [x_c, r_1] = conv1(x)                 x_c: [N, C, H, W],  r_1: [N, D_q, L, H, W]
    r_2 = sum_i q_i * r_1,i               (Eq. 8)  -> [N, L, H, W]
    r   = convq(r_2)                      P bias-free 1x1 convs, ReLU between, linear last
    out = x_c + r

Because ``convq`` has no biases and ReLU is positively homogeneous, the residual is exactly 0 at
q = 0 for any input, and DB(f, k q) = k DB(f, q) for every k >= 0.

The module is the ``convq`` stack itself (an ``nn.Sequential`` of ``Conv2dLayer``), so its
parameters keep the official names ``synthesis.b<res>.convq.<i>.weight``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from torch_utils.misc import assert_shape

from .layers import Conv2dLayer


class DegradBlock(nn.Sequential):
    """Projects q-weighted degradation features to a residual on the block's features."""

    def __init__(self,
                 out_channels: int,          # C: channels of the block (and of the residual)
                 q_dim: int,                 # D_q: size of the quality code
                 degrad_channels: int = 16,  # L: channels per q entry in the widened conv1
                 num_layers: int = 3):       # P: 1x1 convs in the projection stack
        layers = []
        for i in range(num_layers):
            last = i == num_layers - 1
            layers.append(Conv2dLayer(degrad_channels if i == 0 else out_channels, out_channels,
                                      kernel_size=1, bias=False, activation="linear" if last else "relu"))
        super().__init__(*layers)
        self.out_channels = out_channels
        self.q_dim = q_dim
        self.degrad_channels = degrad_channels

    @property
    def extra_channels(self) -> int:
        """Channels conv1 must add for this block: D_q * L."""
        return self.q_dim * self.degrad_channels

    def residual(self, r1: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """r1: [N, D_q*L, H, W] (conv1's extra channels); q: [N, D_q] -> residual [N, C, H, W]."""
        n, _, h, w = r1.shape
        assert_shape(r1, [n, self.extra_channels, h, w])
        assert_shape(q, [n, self.q_dim])
        q = q.to(r1.dtype)
        if r1.is_contiguous():
            r1 = r1.reshape(n, self.q_dim, self.degrad_channels * h * w)   # [N, D_q, L*H*W]
            r2 = torch.bmm(q.unsqueeze(1), r1)                              # Eq. 8: [N, 1, L*H*W]
            r2 = r2.reshape(n, self.degrad_channels, h, w)                 # [N, L, H, W]
        else:
            # channels_last (or a channel slice of it): the same sum as a matmul over channels,
            # [N, H*W, D_q*L] @ (q kron I_L) [N, D_q*L, L], reading r1 in place.
            eye = torch.eye(self.degrad_channels, dtype=r1.dtype, device=r1.device)
            qmat = (q[:, :, None, None] * eye).reshape(n, self.extra_channels, self.degrad_channels)
            r2 = torch.bmm(r1.permute(0, 2, 3, 1).reshape(n, h * w, self.extra_channels), qmat)
            r2 = r2.reshape(n, h, w, self.degrad_channels).permute(0, 3, 1, 2)   # [N, L, H, W]
        for layer in self:
            r2 = layer(r2)
        return r2

    def forward(self, y: torch.Tensor, q: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """y: conv1 output [N, C (+ D_q*L), H, W]; q: [N, D_q] or None (= zeros).

        Returns ``(out, x_c)``: the block features with the residual added, and the features
        before it (used by the distillation loss). With ``q=None`` the extra channels may be
        absent (the caller skipped computing them).
        """
        c = self.out_channels
        x_c = y[:, :c]
        if q is None:
            return x_c, x_c
        return x_c + self.residual(y[:, c:], q), x_c
