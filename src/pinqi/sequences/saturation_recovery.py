"""The paper's saturation-recovery sequence (Sec. 3.1.2) as a Pulseq file (needs pypulseq).

Per saturation time: an adiabatic (hyperbolic-secant) saturation pulse with a spoiler, the
delay tau, then a spoiled gradient-echo readout of the frame's phase-encoding lines in
centre-out order (the centre is acquired at tau). The lines of every frame come from
:func:`pinqi.physics.variable_density_mask` with a seeded generator, the same generator as in
training. Axes: readout along the sequence's x (pinqi's H), phase encoding along y (pinqi's W).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pinqi.physics import variable_density_mask


@dataclass(frozen=True)
class SequenceSettings:
    """Parameters of the sequence (defaults: the paper's phantom and in-vivo scans).

    Attributes
    ----------
    tau
        Saturation times in s.
    size
        Matrix (size x size).
    fov_mm, slice_mm
        In-plane field of view and slice thickness in mm (1 x 1 x 8 mm voxels at 192).
    flip_deg
        Readout flip angle in degrees.
    acceleration
        Undersampling factor of the line masks.
    seed
        Seed of the masks.
    """

    tau: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 8.0)
    size: int = 192
    fov_mm: float = 192.0
    slice_mm: float = 8.0
    flip_deg: float = 6.0
    acceleration: float = 8.0
    seed: int = 0


def centre_out(lines: np.ndarray, size: int) -> list[int]:
    """Line indices sorted by distance from the k-space centre ``size // 2`` (ties: lower first)."""
    return sorted((int(k) for k in lines), key=lambda k: (abs(k - size // 2), k))


def build_sequence(settings: SequenceSettings = SequenceSettings()) -> tuple[object, list]:
    """The Pulseq sequence (``pypulseq.Sequence``) and the per-frame line orders."""
    import pypulseq as pp

    system = pp.Opts(
        max_grad=28,
        grad_unit="mT/m",
        max_slew=150,
        slew_unit="T/m/s",
        rf_ringdown_time=20e-6,
        rf_dead_time=100e-6,
        adc_dead_time=10e-6,
    )
    seq = pp.Sequence(system)
    n = settings.size
    fov, thickness = settings.fov_mm * 1e-3, settings.slice_mm * 1e-3
    delta_k = 1 / fov
    rf, gz, _ = pp.make_sinc_pulse(
        flip_angle=math.radians(settings.flip_deg),
        duration=1e-3,
        slice_thickness=thickness,
        apodization=0.5,
        time_bw_product=4,
        system=system,
        return_gz=True,
        delay=system.rf_dead_time,
    )
    dwell = 10e-6  # on every raster; 1/(n dwell) = 521 Hz per pixel at 192
    gx = pp.make_trapezoid(channel="x", flat_area=n * delta_k, flat_time=n * dwell, system=system)
    adc = pp.make_adc(num_samples=n, duration=gx.flat_time, delay=gx.rise_time, system=system)
    gx_pre = pp.make_trapezoid(channel="x", area=-gx.area / 2, duration=1e-3, system=system)
    gz_reph = pp.make_trapezoid(channel="z", area=-gz.area / 2, duration=1e-3, system=system)
    gx_spoil = pp.make_trapezoid(channel="x", area=2 * n * delta_k, system=system)
    gz_spoil = pp.make_trapezoid(channel="z", area=4 / thickness, system=system)
    saturation = pp.make_adiabatic_pulse(
        pulse_type="hypsec",
        duration=10e-3,
        system=system,
        use="saturation",
        delay=system.rf_dead_time,
    )
    sat_spoil = pp.make_trapezoid(channel="z", area=8 / thickness, system=system)
    generator = torch.Generator().manual_seed(settings.seed)
    masks = variable_density_mask(
        1, len(settings.tau), n, acceleration=settings.acceleration, generator=generator
    )[0, :, 0].numpy()
    orders = []
    for tau, mask in zip(settings.tau, masks, strict=True):
        seq.add_block(saturation)
        seq.add_block(sat_spoil)
        # tau runs from the saturation to the centre line's excitation
        delay = tau - pp.calc_duration(sat_spoil) - pp.calc_duration(saturation) / 2
        if delay < 0:
            raise ValueError(f"saturation time {tau} s is shorter than the saturation module")
        seq.add_block(
            pp.make_delay(
                round(delay / system.block_duration_raster) * system.block_duration_raster
            )
        )
        order = centre_out(np.flatnonzero(mask), n)
        orders.append(order)
        for line in order:
            area = (line - n // 2) * delta_k
            seq.add_block(rf, gz)
            gy_pre = pp.make_trapezoid(channel="y", area=area, duration=1e-3, system=system)
            seq.add_block(gx_pre, gy_pre, gz_reph)
            seq.add_block(gx, adc)
            gy_rew = pp.make_trapezoid(channel="y", area=-area, duration=1e-3, system=system)
            seq.add_block(gx_spoil, gy_rew, gz_spoil)
    seq.set_definition("FOV", [fov, fov, thickness])
    seq.set_definition("Name", "pinqi_saturation_recovery")
    return seq, orders


def write_sequence(out: str | Path, settings: SequenceSettings = SequenceSettings()) -> Path:
    """Write the sequence and its masks; raise if Pulseq's timing check fails.

    Files: ``out/saturation_recovery.seq``, ``out/masks.npy`` (bool ``(n_tau, size)``) and
    ``out/sequence.json`` (settings and the line order of every frame).
    """
    seq, orders = build_sequence(settings)
    ok, errors = seq.check_timing()
    if not ok:
        raise RuntimeError(f"the sequence fails Pulseq's timing check: {errors[:3]}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seq.write(str(out / "saturation_recovery.seq"))
    masks = np.zeros((len(settings.tau), settings.size), bool)
    for frame, order in enumerate(orders):
        masks[frame, order] = True
    np.save(out / "masks.npy", masks)
    (out / "sequence.json").write_text(
        json.dumps({"settings": settings.__dict__, "line_order": orders}, indent=1)
    )
    return out / "saturation_recovery.seq"
