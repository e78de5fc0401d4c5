"""A built-in procedural brain-like phantom: the embedded default anatomy (no download)."""

from __future__ import annotations

import math

import numpy as np
import torch

#: Resolution (mm) and field of view (mm) of the phantom's label maps.
PHANTOM_SPACING = 0.5
PHANTOM_FOV = 220.0


def _uniform(generator: torch.Generator, low: float, high: float, n: int = 1) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _ellipse(
    y: torch.Tensor,
    x: torch.Tensor,
    centre: tuple[float, float],
    axes: tuple[float, float],
    angle: float = 0.0,
) -> torch.Tensor:
    """Bool mask of an ellipse with semi-axes ``(ay, ax)`` mm, rotated by ``angle``."""
    dy, dx = y - centre[0], x - centre[1]
    cos, sin = math.cos(angle), math.sin(angle)
    ry, rx = cos * dy - sin * dx, sin * dy + cos * dx
    return (ry / axes[0]) ** 2 + (rx / axes[1]) ** 2 <= 1


def phantom_labels(generator: torch.Generator) -> np.ndarray:
    """An axial head slice with the 12 BrainWeb labels, randomly shaped and smoothly deformed.

    Structures from the outside in: skin/muscle, fat with muscle patches and a thin
    around-fat layer, skull with marrow, dura, CSF, a folded cortex (grey matter with CSF
    sulci), white matter, deep grey nuclei, two lateral ventricles and a few vessels. The head
    outline, layer thicknesses, folding and inner structures are drawn from ``generator``, and
    the whole slice is warped by a smooth random displacement of a few mm.

    Returns
    -------
    np.ndarray
        ``uint8 (440, 440)`` labels on a 0.5 mm grid (220 mm field of view).
    """
    n = round(PHANTOM_FOV / PHANTOM_SPACING)
    axis = (torch.arange(n, dtype=torch.float64) + 0.5) * PHANTOM_SPACING - PHANTOM_FOV / 2
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    for _ in range(3):  # smooth displacement: three random plane waves of a few mm
        amplitude, wavelength, direction, phase = (
            float(_uniform(generator, 0.0, 4.0)),
            float(_uniform(generator, 60.0, 160.0)),
            float(_uniform(generator, 0.0, 2 * math.pi)),
            float(_uniform(generator, 0.0, 2 * math.pi)),
        )
        wave = torch.sin(
            2 * math.pi * (math.cos(direction) * y + math.sin(direction) * x) / wavelength + phase
        )
        y, x = (
            y + amplitude * wave * math.sin(direction),
            x + amplitude * wave * math.cos(direction),
        )

    half_y, half_x = float(_uniform(generator, 86, 100)), float(_uniform(generator, 68, 80))
    theta = torch.atan2(y / half_y, x / half_x)
    harmonics = _uniform(generator, -0.03, 0.03, 3)
    outline = 1 + sum(h * torch.cos((k + 2) * theta) for k, h in enumerate(harmonics))
    rho = torch.sqrt((y / half_y) ** 2 + (x / half_x) ** 2) / outline
    depth = (1 - rho) * (half_y + half_x) / 2  # approximate distance from the surface, mm

    labels = torch.zeros(n, n, dtype=torch.uint8)
    skin, fat, skull = (float(_uniform(generator, *r)) for r in ((2, 3.5), (2, 4), (5, 8)))
    layers = [  # (label, depth where the layer starts), applied outside-in
        (6, 0.0),
        (4, skin),
        (9, skin + fat),
        (7, skin + fat + 0.75),
        (10, skin + fat + 0.75 + skull),
        (1, skin + fat + 1.75 + skull),
    ]
    for label, start in layers:
        labels[depth >= start] = label
    marrow_centre = skin + fat + 0.75 + skull / 2
    labels[(depth - marrow_centre).abs() < skull / 5] = 11
    lateral = (theta.abs() < math.radians(25)) | (theta.abs() > math.radians(155))
    labels[lateral & (depth >= skin) & (depth < skin + fat * 0.8)] = 5

    cortex_start = skin + fat + skull + 1.75 + float(_uniform(generator, 1.5, 3))
    folds = float(_uniform(generator, 20, 30))
    wobble = float(_uniform(generator, 0, 2 * math.pi))
    warped = theta + 0.12 * torch.sin(3 * theta + wobble)
    # 0 in a sulcus, 1 midway between two sulci (~15 mm apart)
    between_sulci = torch.sin(folds * warped / 2 + float(_uniform(generator, 0, 6.3))).abs()
    gyrus_depth = float(_uniform(generator, 12, 18))
    cortex_depth = depth - cortex_start
    in_band = (cortex_depth >= 0) & (cortex_depth < gyrus_depth)
    labels[cortex_depth >= 0] = 3
    labels[in_band & ((cortex_depth < 3) | (between_sulci < 0.6))] = 2
    labels[in_band & (between_sulci < 0.07) & (cortex_depth < gyrus_depth - 3)] = 1

    spread = float(_uniform(generator, 5, 9))
    nuclei = float(_uniform(generator, 17, 24))
    for side in (-1, 1):
        tilt = side * float(_uniform(generator, 0.0, 0.3))
        labels[
            _ellipse(y, x, (2.0, side * nuclei), (float(_uniform(generator, 9, 13)), 7.0), tilt)
        ] = 2
        labels[
            _ellipse(y, x, (-3.0, side * spread), (float(_uniform(generator, 14, 22)), 4.5), tilt)
        ] = 1
    for _ in range(int(_uniform(generator, 3, 7))):
        centre = (float(_uniform(generator, -50, 50)), float(_uniform(generator, -40, 40)))
        vessel = _ellipse(y, x, centre, (1.5, 1.5)) & (labels >= 2) & (labels <= 3)
        labels[vessel] = 8
    labels[rho > 1] = 0
    return labels.numpy()


#: Most objects of :func:`uniform_object_labels` (labels 1..MAX_UNIFORM_OBJECTS).
MAX_UNIFORM_OBJECTS = 6


def uniform_object_labels(generator: torch.Generator) -> np.ndarray:
    """A test-object phantom: a large disk or bottle with up to five tubes inside.

    The kind of object a user scans to check a T1 map: regions of uniform tissue, unlike any
    anatomy. Object ``j`` gets label ``j`` (1 = the container, 2.. = tubes, later objects
    drawn over earlier ones); the simulation gives every label its own uniform T1 and M0.

    Returns
    -------
    np.ndarray
        ``uint8 (440, 440)`` labels on the grid of :func:`phantom_labels`.
    """
    n = round(PHANTOM_FOV / PHANTOM_SPACING)
    axis = (torch.arange(n, dtype=torch.float64) + 0.5) * PHANTOM_SPACING - PHANTOM_FOV / 2
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    labels = torch.zeros(n, n, dtype=torch.uint8)
    radius = float(_uniform(generator, 0.2, 0.42)) * PHANTOM_FOV
    aspect = float(_uniform(generator, 0.7, 1.0))
    angle = float(_uniform(generator, 0.0, math.pi))
    labels[_ellipse(y, x, (0.0, 0.0), (radius, aspect * radius), angle)] = 1
    n_tubes = int(torch.randint(MAX_UNIFORM_OBJECTS, (), generator=generator))
    for label in range(2, n_tubes + 2):
        tube = float(_uniform(generator, 0.05, 0.25)) * radius
        distance = float(_uniform(generator, 0.0, aspect * radius - tube))
        direction = float(_uniform(generator, 0.0, 2 * math.pi))
        centre = (distance * math.sin(direction), distance * math.cos(direction))
        labels[_ellipse(y, x, centre, (tube, tube))] = label
    return labels.numpy()
