"""The residual UNet used for both regularisers of PINQI (paper Sec. 3.2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pinqi.nets.blocks import IterationEmbedding, ResidualBlock, pointwise_conv, spatial_conv


class UNet(nn.Module):
    """Residual UNet with FiLM conditioning on the unrolled iteration.

    Encoder levels of ``features`` channels, each a residual block followed by 2x2 max pooling
    (spatial only), a bottleneck block of ``features[-1]`` channels, and decoder levels of
    bilinear 2x upsampling + 3x3 convolution, concatenation with the skip connection and a
    residual block. FiLM acts after the first convolution of every encoder and decoder block.
    The output layer is a 1x1 convolution initialised with small weights (std 0.05).

    Parameters
    ----------
    in_channels, out_channels
        Input and output channels.
    features
        Channels per level, e.g. (32, 64, 96, 128).
    pseudo3d
        Work on ``(batch, C, frames, H, W)`` with per-frame spatial convolutions and
        convolutions along the frames (for the image regulariser).
    embedding_dim
        Width of the iteration embedding.
    norm_groups
        GroupNorm groups of every block (the authors: 16 in P_theta, 8 in Y_theta).

    Notes
    -----
    H and W must be divisible by ``2 ** len(features)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        features: Sequence[int],
        pseudo3d: bool = False,
        embedding_dim: int = 64,
        norm_groups: int = 16,
    ) -> None:
        super().__init__()
        self.pseudo3d = pseudo3d
        self.depth = len(features)
        self.embedding = IterationEmbedding(embedding_dim)
        self.encoder = nn.ModuleList()
        c = in_channels
        for f in features:
            self.encoder.append(ResidualBlock(c, f, pseudo3d, embedding_dim, norm_groups))
            c = f
        self.bottleneck = ResidualBlock(c, c, pseudo3d, norm_groups=norm_groups)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for f, below in zip(
            reversed(features), reversed([*features[1:], features[-1]]), strict=True
        ):
            self.up.append(spatial_conv(below, below, pseudo3d, bias=False))
            self.decoder.append(ResidualBlock(f + below, f, pseudo3d, embedding_dim, norm_groups))
        self.head = pointwise_conv(features[0], out_channels, pseudo3d)
        nn.init.normal_(self.head.weight, std=0.05)
        nn.init.zeros_(self.head.bias)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """2x2 max pooling over (H, W); pseudo-3D volumes as 2D images of C * frames channels."""
        if self.pseudo3d:
            return F.max_pool2d(x.flatten(1, 2), 2).unflatten(1, x.shape[1:3])
        return F.max_pool2d(x, 2)

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        """Bilinear 2x upsampling over (H, W).

        For pseudo-3D volumes this is the trilinear interpolation with scale (1, 2, 2) (which
        leaves the frames as they are), computed as a 2D one: faster on CPUs.
        """
        images = x.flatten(1, 2) if self.pseudo3d else x
        up = F.interpolate(images, scale_factor=2, mode="bilinear", align_corners=False)
        return up.unflatten(1, x.shape[1:3]) if self.pseudo3d else up

    def forward(self, x: torch.Tensor, iteration: torch.Tensor) -> torch.Tensor:
        """Map ``x`` ``(batch, in_channels, [frames,] H, W)`` at ``iteration`` ``(batch,)``."""
        size = x.shape[-2:]
        if size[0] % 2**self.depth or size[1] % 2**self.depth:
            raise ValueError(
                f"image size {tuple(size)} must be divisible by 2**{self.depth} = "
                f"{2**self.depth} for this UNet"
            )
        embedding = self.embedding(iteration)
        skips = []
        for block in self.encoder:
            x = block(x, embedding)
            skips.append(x)
            x = self._pool(x)
        x = self.bottleneck(x)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips), strict=True):
            x = up(self._upsample(x))
            x = block(torch.cat([skip, x], dim=1), embedding)
        return self.head(x)
