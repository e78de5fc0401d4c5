"""Memory format and torch.compile for the UNets of a `cpu`-scale step (issue 9, part 3).

Forward + backward of P_theta (2D, 10 -> 3 channels, 16-64 features) and Y_theta (pseudo-3D,
5 frames, 8-32 features) at batch 4, 96 x 96, best of 5 after 2 warm-up calls: the default
(contiguous) layout against channels-last, and P_theta under ``torch.compile``.

    python benchmarks/unet_formats.py
"""

from __future__ import annotations

import time

import torch

from pinqi.nets.unet import UNet

from _measure import machine


def seconds(net, x, iteration, memory_format=None, compiled=False, repeats=5) -> float:
    if memory_format is not None:
        net = net.to(memory_format=memory_format)
        x = x.contiguous(memory_format=memory_format)
    call = torch.compile(net) if compiled else net
    times = []
    for i in range(2 + repeats):
        start = time.perf_counter()
        call(x, iteration).square().mean().backward()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    print(machine())
    torch.manual_seed(0)
    iteration = torch.zeros(4)
    p_x, y_x = torch.randn(4, 10, 96, 96), torch.randn(4, 2, 5, 96, 96)

    def p_net():
        return UNet(10, 3, (16, 32, 48, 64), norm_groups=16)

    def y_net():
        return UNet(2, 2, (8, 16, 24, 32), pseudo3d=True, norm_groups=8)

    rows = [
        ("P_theta", "default", seconds(p_net(), p_x, iteration)),
        ("P_theta", "channels_last", seconds(p_net(), p_x, iteration, torch.channels_last)),
        ("P_theta", "torch.compile", seconds(p_net(), p_x, iteration, compiled=True)),
        ("Y_theta", "default", seconds(y_net(), y_x, iteration)),
        ("Y_theta", "channels_last_3d", seconds(y_net(), y_x, iteration, torch.channels_last_3d)),
    ]
    for net, variant, value in rows:
        print(f"{net} {variant:18s} {value:.3f} s")


if __name__ == "__main__":
    main()
