"""Building blocks of the regularising UNets (paper Sec. 3.2).

Residual blocks with GroupNorm, SiLU and FiLM conditioning on the unrolled iteration, in 2D or
pseudo-3D (frames x H x W).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with ``groups`` groups, or their greatest common divisor with ``channels``."""
    if groups < 1:
        raise ValueError(f"GroupNorm needs at least one group, got {groups}")
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class IterationEmbedding(nn.Module):
    """Sinusoidal embedding of the iteration index followed by a linear layer and SiLU.

    Parameters
    ----------
    dim
        Width of the embedding passed to every FiLM layer.
    frequencies
        Number of sine/cosine frequencies.
    """

    def __init__(self, dim: int = 64, frequencies: int = 16) -> None:
        super().__init__()
        self.register_buffer(
            "frequencies", torch.exp(-math.log(10.0) * torch.arange(frequencies) / frequencies)
        )
        self.project = nn.Sequential(nn.Linear(2 * frequencies, dim), nn.SiLU())
        self.dim = dim

    def forward(self, iteration: torch.Tensor) -> torch.Tensor:
        """``iteration`` ``(batch,)`` -> embedding ``(batch, dim)``."""
        angles = iteration.float()[:, None] * self.frequencies[None]
        return self.project(torch.cat([torch.sin(angles), torch.cos(angles)], -1))


class FiLM(nn.Module):
    """Feature-wise scale and shift from the iteration embedding: x (1 + s) + b.

    Zero-initialised, so it starts as the identity.
    """

    def __init__(self, embedding_dim: int, channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(embedding_dim, 2 * channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """Modulate ``x`` ``(batch, channels, ...)``."""
        scale, shift = self.linear(embedding).chunk(2, dim=1)
        shape = (*scale.shape, *(1,) * (x.ndim - 2))
        return x * (1 + scale.reshape(shape)) + shift.reshape(shape)


def spatial_conv(c_in: int, c_out: int, pseudo3d: bool, bias: bool = True) -> nn.Module:
    """3x3 convolution over (H, W); on (frames, H, W) volumes with kernel (1, 3, 3)."""
    if pseudo3d:
        return nn.Conv3d(c_in, c_out, (1, 3, 3), padding=(0, 1, 1), bias=bias)
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)


def pointwise_conv(c_in: int, c_out: int, pseudo3d: bool) -> nn.Module:
    """1x1 convolution."""
    return (nn.Conv3d if pseudo3d else nn.Conv2d)(c_in, c_out, 1)


class ResidualBlock(nn.Module):
    """out = SiLU(alpha Block(x) + R(x)), Block = conv-GN-[FiLM]-SiLU-conv-[frame conv]-GN.

    ``alpha`` is learnable and starts at 1e-3 (ReZero-like), so a fresh block acts almost as
    R, a 1x1 convolution (or the identity): pixel-wise, as the paper's initialisation. In the
    pseudo-3D version a convolution of kernel (3, 1, 1) along the frames follows the second
    spatial convolution (Qiu et al., the paper's ref. [48]).

    Parameters
    ----------
    c_in, c_out
        Channels.
    pseudo3d
        Operate on ``(batch, C, frames, H, W)`` instead of ``(batch, C, H, W)``.
    embedding_dim
        Width of the iteration embedding for FiLM; 0 disables FiLM.
    norm_groups
        Groups of both GroupNorms.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        pseudo3d: bool,
        embedding_dim: int = 0,
        norm_groups: int = 16,
    ) -> None:
        super().__init__()
        self.conv1 = spatial_conv(c_in, c_out, pseudo3d)
        self.norm1 = group_norm(c_out, norm_groups)
        self.film = FiLM(embedding_dim, c_out) if embedding_dim else None
        self.conv2 = spatial_conv(c_out, c_out, pseudo3d)
        self.frame_conv = (
            nn.Conv3d(
                c_out, c_out, (3, 1, 1), padding=(1, 0, 0), padding_mode="replicate", bias=False
            )
            if pseudo3d
            else None
        )
        self.norm2 = group_norm(c_out, norm_groups)
        self.skip = pointwise_conv(c_in, c_out, pseudo3d) if c_in != c_out else nn.Identity()
        self.alpha = nn.Parameter(torch.tensor(1e-3))
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the block; ``embedding`` ``(batch, embedding_dim)`` is required with FiLM."""
        h = self.norm1(self.conv1(x))
        if self.film is not None:
            h = self.film(h, embedding)
        h = self.conv2(self.act(h))
        if self.frame_conv is not None:
            h = self.frame_conv(h)
        return self.act(self.alpha * self.norm2(h) + self.skip(x))
