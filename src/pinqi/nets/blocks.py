"""Building blocks of the regularising UNets (paper Sec. 3.2).

Residual blocks with GroupNorm, SiLU and FiLM conditioning on the unrolled iteration, in 2D or
pseudo-3D (frames x H x W).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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


class FactorisedConv3d(nn.Conv3d):
    """A Conv3d of kernel (1, k, k) or (k, 1, 1) computed by 2D convolutions.

    The weights and options are a :class:`torch.nn.Conv3d`'s (checkpoints keep their
    layout); the computation is a 2D convolution: (1, k, k) over the frames as batch, (k, 1, 1)
    over ``(frames, H * W)`` with a kernel (k, 1). The same result, faster on CPUs, and it
    avoids PyTorch's CPU Conv3d backward in bfloat16 (segmentation faults in torch 2.13).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        kernel = tuple(self.kernel_size)
        if not (kernel[0] == 1 or kernel[1:] == (1, 1)) or self.stride != (1, 1, 1):
            raise ValueError(f"FactorisedConv3d needs kernel (1, k, k) or (k, 1, 1), got {kernel}")
        if self.groups != 1 or self.dilation != (1, 1, 1):
            raise ValueError("FactorisedConv3d supports groups = 1 and dilation = 1 only")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` ``(batch, C, frames, H, W)``."""
        batch, _, frames, height, width = x.shape
        if self.kernel_size[1:] == (1, 1):
            x = x.reshape(batch, -1, frames, height * width)
            pad = self.padding[0]
            if pad and self.padding_mode == "replicate":
                x = torch.cat([x[:, :, :1]] * pad + [x] + [x[:, :, -1:]] * pad, dim=2)
                pad = 0
            elif pad and self.padding_mode != "zeros":
                x = F.pad(x, (0, 0, pad, pad), mode=self.padding_mode)
                pad = 0
            out = F.conv2d(x, self.weight[..., 0], self.bias, padding=(pad, 0))
            return out.reshape(batch, -1, out.shape[2], height, width)
        frames_as_batch = x.transpose(1, 2).reshape(batch * frames, -1, height, width)
        out = F.conv2d(
            frames_as_batch,
            self.weight[:, :, 0],
            self.bias,
            padding=self.padding[1:],
        )
        return out.reshape(batch, frames, -1, *out.shape[-2:]).transpose(1, 2)


def spatial_conv(c_in: int, c_out: int, pseudo3d: bool, bias: bool = True) -> nn.Module:
    """3x3 convolution over (H, W); on (frames, H, W) volumes with kernel (1, 3, 3)."""
    if pseudo3d:
        return FactorisedConv3d(c_in, c_out, (1, 3, 3), padding=(0, 1, 1), bias=bias)
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)


def pointwise_conv(c_in: int, c_out: int, pseudo3d: bool) -> nn.Module:
    """1x1 convolution."""
    return (FactorisedConv3d if pseudo3d else nn.Conv2d)(c_in, c_out, 1)


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
            FactorisedConv3d(
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
