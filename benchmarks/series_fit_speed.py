"""Speed of ``pinqi fit --images`` on a 256 x 256 series of 9 delays (issue 11, part 2).

Synthetic series, T1 log-spaced 0.2-4 s over the image, SNR 100 at full recovery: complex
saturation recovery, magnitude inversion recovery (polarity restored, RD-NLS-PR) and a
MOLLI-like Look-Locker series. Times :func:`pinqi.evaluation.series_fit.fit_series` over all
65,536 voxels (no mask), best of ``--repeats``.

    python benchmarks/series_fit_speed.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pinqi.evaluation.series_fit import fit_series
from pinqi.io.series import series_from_arrays

from _measure import machine

TI = np.array([0.05, 0.15, 0.3, 0.5, 0.8, 1.2, 1.8, 2.6, 4.0])
MOLLI = np.array([0.1, 0.18, 0.26, 1.1, 1.18, 2.1, 2.18, 3.1, 4.1])


def series(kind: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    t1 = np.geomspace(0.2, 4.0, size * size).reshape(size, size)
    delays = MOLLI if kind == "look-locker" else TI
    if kind == "saturation":
        signal = 1000 * np.exp(0.7j) * (1 - np.exp(-delays / t1[..., None]))
    elif kind == "look-locker":  # a + b exp(-TI / T1*), T1* = T1 / (-b/a - 1) with -b/a = 1.9
        signal = 1000 * (1 - 1.9 * np.exp(-delays * 0.9 / t1[..., None]))
    else:
        signal = 1000 * (1 - 1.95 * np.exp(-delays / t1[..., None]))
    noise = 10 * (rng.standard_normal(signal.shape) + 1j * rng.standard_normal(signal.shape))
    data = signal + noise
    images = data if kind == "saturation" else np.abs(data)
    return np.moveaxis(images, -1, 0), delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    rng = np.random.default_rng(0)
    for kind, model in (
        ("saturation", "saturation"),
        ("inversion", "inversion"),
        ("look-locker", "look-locker"),
    ):
        images, delays = series(kind, args.size, rng)
        data = series_from_arrays(images, delays)
        mask = np.ones(data.grid, dtype=bool)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fit_series(data, model, mask, progress=False)
            times.append(time.perf_counter() - start)
        print(
            f"{model:12s} {args.size}x{args.size} x {len(delays)} delays "
            f"({'complex' if kind == 'saturation' else 'magnitude'}): best {min(times):.2f} s"
        )


if __name__ == "__main__":
    main()
