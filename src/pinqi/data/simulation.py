"""Simulation of one training sample: anatomy -> parameter maps -> undersampled k-space.

The pipeline of the paper's Sec. 3.1.1: per-class tissue fractions of a slice (BrainWeb or the
built-in phantom), geometric augmentation (training only), random T1 and M0 per tissue class,
mixing by the class fractions, smooth augmentation fields, bird-cage coils with a random
orientation, per-frame random variable-density masks and complex Gaussian noise.

Noise level: ``sigma`` is the standard deviation of the real and of the imaginary part of the
noise in every sampled k-space point, in the units of M0 (|M0| <= 1). Because the FFT is
orthonormal and the coil maps satisfy sum_c |c|^2 = 1, a fully sampled, coil-combined image has
the same noise sigma per pixel and component, so the image SNR of a voxel is |M0 (1 - e)| /
sigma: sigma = 0.01 means SNR 100 for fully relaxed CSF. Relating sigma to M0 (and not to the
k-space norm) keeps the noise level independent of the image size, the coil count and the
undersampling.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F

from pinqi.data.brainweb import normalise_subjects
from pinqi.data.fields import random_polynomial, smooth_noise
from pinqi.data.tissues import BRAIN_LABELS, N_CLASSES, TISSUES
from pinqi.physics import (
    SIGNAL_MODELS,
    CartesianAcquisition,
    birdcage_maps,
    signal_model,
    variable_density_mask,
)

#: Saturation times of the paper (Sec. 3.1.1) and of its ablation study, in s.
TAU_PAPER: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 8.0)
TAU_ABLATION: tuple[float, ...] = (0.5, 0.7, 0.9, 1.1, 1.3, 1.6, 2.0, 8.0)


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that defines a simulated data set (stored with every HDF5 file).

    Attributes
    ----------
    size
        Image size in pixels (even).
    fov_mm
        Field of view in mm (the whole BrainWeb head is 217 mm long).
    tau
        Delays in s (saturation or inversion times).
    signal_model
        ``"saturation"``, ``"inversion"`` or ``"inversion-ab"`` (incomplete inversion
        recovery a + b exp(-TI/T1); ground truth a = M0, b = -(1 + k) M0 with an inversion
        efficiency k ~ U(0.8, 1) per sample).
    n_coils, acceleration
        Receiver coils and undersampling factor.
    noise_sigma
        Range of the per-sample noise level (see the module docstring).
    anatomy
        ``"builtin"`` (procedural phantom) or ``"brainweb"``.
    brainweb_dir
        Folder with BrainWeb files (for ``anatomy="brainweb"``).
    orientation
        Slice orientation of BrainWeb volumes: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
    min_brain_fraction
        BrainWeb slices are used where the brain area is at least this fraction of the
        subject's largest brain area in that orientation.
    max_rotation_deg, scale_range, max_shift_mm, flips
        Geometric augmentation (applied to the training split only).
    subjects
        BrainWeb subjects per split, e.g. ``{"test": ("20", "49")}``; a split not named keeps
        the paper's subjects (:data:`~pinqi.data.brainweb.SPLITS`). The splits must not share
        a subject.
    t1_any_probability, t1_any_range
        Coverage beyond the brain (default off, the paper's): each tissue class of a sample
        draws its T1 log-uniformly from ``t1_any_range`` (s) with this probability, instead of
        from its tissue range.
    uniform_probability
        Probability that a sample is a test-object phantom (a container with tubes, see
        :func:`~pinqi.data.phantom.uniform_object_labels`) instead of the anatomy: uniform
        regions, each with T1 log-uniform in ``t1_any_range`` and |M0| ~ U(0.2, 1), without the
        smooth T1 field.
    phase_any_probability
        Probability that a sample gets the phase a scanner may deliver: a global phase
        ~ U(-pi, pi) and a smooth field of peak amplitude ~ U(0, pi) rad, instead of the
        paper's small phase (+-0.2 rad and a N(0, 0.2) offset).
    intensity_range
        |M0| of a sample is multiplied by a log-uniform factor in this range.
    t1_factor
        Every T1 is multiplied by this factor (for test sets shifted out of the training
        distribution; 1 for training).
    """

    size: int = 192
    fov_mm: float = 220.0
    tau: tuple[float, ...] = TAU_PAPER
    signal_model: str = "saturation"
    n_coils: int = 8
    acceleration: float = 8.0
    noise_sigma: tuple[float, float] = (0.001, 0.04)
    anatomy: str = "builtin"
    brainweb_dir: str | None = None
    orientation: str = "axial"
    min_brain_fraction: float = 0.5
    max_rotation_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_shift_mm: float = 5.0
    flips: bool = True
    subjects: dict[str, tuple[str, ...]] | None = None
    t1_any_probability: float = 0.0
    t1_any_range: tuple[float, float] = (0.1, 5.0)
    uniform_probability: float = 0.0
    phase_any_probability: float = 0.0
    intensity_range: tuple[float, float] = (1.0, 1.0)
    t1_factor: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 8 or self.size % 2:
            raise ValueError(f"size must be an even integer >= 8, got {self.size!r}")
        if not self.fov_mm > 0:
            raise ValueError(f"fov_mm must be positive, got {self.fov_mm}")
        if len(self.tau) == 0 or any(not (t >= 0 and math.isfinite(t)) for t in self.tau):
            raise ValueError(f"tau must be non-negative finite delays in s, got {self.tau}")
        if not isinstance(self.n_coils, int) or self.n_coils < 1:
            raise ValueError(f"n_coils must be a positive integer, got {self.n_coils!r}")
        if not 1 <= self.acceleration <= self.size / 2:
            raise ValueError(
                f"acceleration must be in [1, size/2] = [1, {self.size // 2}] so that at least "
                f"2 of the {self.size} lines are sampled, got {self.acceleration}"
            )
        low, high = self.noise_sigma
        if not 0 <= low <= high:
            raise ValueError(
                f"noise_sigma must be a range 0 <= low <= high, got {self.noise_sigma}"
            )
        if self.anatomy not in ("builtin", "brainweb"):
            raise ValueError(f"anatomy must be 'builtin' or 'brainweb', got {self.anatomy!r}")
        if self.anatomy == "brainweb" and not self.brainweb_dir:
            raise ValueError("anatomy 'brainweb' needs brainweb_dir (a folder of BrainWeb files)")
        if self.signal_model not in SIGNAL_MODELS:
            raise ValueError(
                f"signal_model must be one of {sorted(SIGNAL_MODELS)}, got {self.signal_model!r}"
            )
        if self.orientation not in ORIENTATION_AXES:
            raise ValueError(
                f"orientation must be one of {sorted(ORIENTATION_AXES)}, got {self.orientation!r}"
            )
        if self.subjects is not None:
            object.__setattr__(self, "subjects", _check_subjects(self.subjects, self.anatomy))
        for name in ("t1_any_probability", "uniform_probability", "phase_any_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(
                    f"{name} must be a probability in [0, 1], got {getattr(self, name)}"
                )
        for name in ("t1_any_range", "intensity_range"):
            low, high = getattr(self, name)
            if not 0 < low <= high < math.inf:
                raise ValueError(
                    f"{name} must be a range 0 < low <= high, got {getattr(self, name)}"
                )
        if not 0 < self.t1_factor < math.inf:
            raise ValueError(f"t1_factor must be positive, got {self.t1_factor}")

    def without_coverage(self) -> SimulationConfig:
        """The configuration without the coverage options (the target data, for validation).

        ``t1_factor`` stays: it shifts the data rather than widening the training draws.
        """
        return replace(
            self,
            t1_any_probability=0.0,
            uniform_probability=0.0,
            phase_any_probability=0.0,
            intensity_range=(1.0, 1.0),
        )

    def split_subjects(self, split: str) -> tuple[str, ...] | None:
        """The explicit subjects of ``split``, or None for the paper's."""
        return (self.subjects or {}).get(split)

    def to_json(self) -> str:
        """The configuration as JSON (for HDF5 attributes)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SimulationConfig:
        """Inverse of :meth:`to_json`."""
        values = json.loads(text)
        known = {f.name for f in fields(cls)}
        for name in ("tau", "noise_sigma", "scale_range", "t1_any_range", "intensity_range"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**{k: v for k, v in values.items() if k in known})


#: Array axis of a (z, y, x) BrainWeb volume that indexes the slices of each orientation.
ORIENTATION_AXES = {"axial": 0, "coronal": 1, "sagittal": 2}


def brain_mask(fractions: torch.Tensor, labels: Sequence[int] = BRAIN_LABELS) -> torch.Tensor:
    """Pixels mostly of the classes ``labels`` (default: brain), eroded by one: bool ``(H, W)``."""
    brain = fractions[list(labels)].sum(0) >= 0.5
    eroded = -F.max_pool2d(-brain[None, None].float(), 3, stride=1, padding=1)
    return eroded[0, 0] > 0.5


def parameter_maps(
    fractions: torch.Tensor,
    generator: torch.Generator,
    config: SimulationConfig = SimulationConfig(),
    uniform_objects: bool = False,
) -> torch.Tensor:
    """Random tissue parameters mixed by class fractions, with smooth augmentation fields.

    Per class: T1 ~ U(range), |M0| ~ U(range), phase ~ U(-0.1, 0.1) rad. Per pixel: R1 and
    complex M0 are the fraction-weighted means over the classes. Then T1 is multiplied by
    1 + Q with Q a low-variance 2D polynomial (|Q| <= 0.1), |M0| by a smooth bias field
    1 + clip(S + P, -0.5, 0.3) (S: filtered noise, P: polynomial), and the phase gets a smooth
    polynomial field and a global offset ~ N(0, 0.2) rad. The coverage options of ``config``
    (``t1_any_probability``, ``phase_any_probability``, ``intensity_range``, ``t1_factor``)
    widen these draws; random values for an option are only drawn where it is on, so the
    paper's samples do not change.

    Parameters
    ----------
    fractions
        ``(12, H, W)`` class fractions.
    generator
        Source of every random value.
    config
        The coverage options (default: off).
    uniform_objects
        The classes are test objects (:func:`~pinqi.data.phantom.uniform_object_labels`):
        every class draws T1 from ``config.t1_any_range`` and |M0| from U(0.2, 1), and T1 gets
        no smooth field.

    Returns
    -------
    torch.Tensor
        ``(3, H, W)`` = [Re M0, Im M0, R1 in 1/s], float32.
    """
    shape = tuple(fractions.shape[-2:])
    u = torch.rand(3, N_CLASSES, generator=generator, dtype=torch.float64)
    t1_range = torch.tensor([t.t1 for t in TISSUES], dtype=torch.float64)
    m0_range = torch.tensor([t.m0 for t in TISSUES], dtype=torch.float64)
    if uniform_objects:
        m0_range = torch.tensor([[0.0, 0.0]] + [[0.2, 1.0]] * (N_CLASSES - 1), dtype=torch.float64)
    t1 = t1_range[:, 0] + (t1_range[:, 1] - t1_range[:, 0]) * u[0]
    if config.t1_any_probability > 0 or uniform_objects:
        low, high = (math.log(t) for t in config.t1_any_range)
        v = torch.rand(2, N_CLASSES, generator=generator, dtype=torch.float64)
        anywhere = torch.exp(low + (high - low) * v[0])
        wide = (v[1] < config.t1_any_probability) | uniform_objects
        t1 = torch.where(wide, anywhere, t1)
    t1 = t1 * config.t1_factor
    magnitude = m0_range[:, 0] + (m0_range[:, 1] - m0_range[:, 0]) * u[1]
    m0_class = torch.polar(magnitude, 0.2 * u[2] - 0.1)
    f = fractions.to(torch.float64)
    r1 = torch.einsum("k,khw->hw", 1 / t1, f)
    m0 = torch.einsum("k,khw->hw", m0_class, f.to(m0_class.dtype))

    q = random_polynomial(shape, (0.1, 0.2, 0.2), generator, torch.float64)
    q = q - q.mean()
    q = q * (0.1 / q.abs().max().clamp(min=1e-12))
    if not uniform_objects:
        r1 = r1 / (1 + q)
    bias = smooth_noise(shape, generator, dtype=torch.float64).mul(0.1).clamp(-0.1, 0.1)
    bias = bias + random_polynomial(shape, (0.3, 0.2, 0.2), generator, torch.float64)
    phase = random_polynomial(shape, (0.1, 0.1, 0.1), generator, torch.float64).clamp(-0.2, 0.2)
    phase = phase - phase.mean() + 0.2 * torch.randn((), generator=generator, dtype=torch.float64)
    if config.phase_any_probability > 0:
        phase = _scanner_phase(phase, shape, config.phase_any_probability, generator)
    m0 = m0 * (1 + bias.clamp(-0.5, 0.3)) * torch.polar(torch.ones_like(phase), phase)
    if config.intensity_range != (1.0, 1.0):
        low, high = (math.log(x) for x in config.intensity_range)
        m0 = m0 * math.exp(low + (high - low) * float(torch.rand((), generator=generator)))
    return torch.stack([m0.real, m0.imag, r1]).float()


def _scanner_phase(
    phase: torch.Tensor, shape: tuple[int, int], probability: float, generator: torch.Generator
) -> torch.Tensor:
    """With ``probability``, a global U(-pi, pi) plus a smooth field of peak U(0, pi) rad."""
    u = torch.rand(3, generator=generator, dtype=torch.float64)
    field = random_polynomial(shape, (0.3, 0.3, 0.3), generator, torch.float64)
    field = field - field.mean()
    field = field * (math.pi * float(u[1]) / field.abs().max().clamp(min=1e-12))
    return field + math.pi * (2 * float(u[2]) - 1) if u[0] < probability else phase


def acquire(
    params: torch.Tensor, config: SimulationConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Simulate the undersampled multi-coil k-space of one sample.

    Parameters
    ----------
    params
        ``(P, H, W)`` parameter maps of the configured signal model.
    config
        Acquisition settings.
    generator
        Source of the coil orientation, the masks, the noise level and the noise.

    Returns
    -------
    dict
        ``kspace`` complex64 ``(n_tau, n_coils, H, W)`` (zero where not sampled), ``mask`` bool
        ``(n_tau, 1, W)``, ``coil_maps`` complex64 ``(n_coils, H, W)``, ``noise_sigma`` ``()``.
    """
    size = params.shape[-1]
    n_tau = len(config.tau)
    coils = birdcage_maps(config.n_coils, (size, size), generator=generator)
    mask = variable_density_mask(
        1, n_tau, size, acceleration=config.acceleration, generator=generator
    )
    low, high = config.noise_sigma
    sigma = low + (high - low) * torch.rand((), generator=generator)
    model = signal_model(config.signal_model, torch.tensor(config.tau))
    clean = CartesianAcquisition(coils, mask).forward(model(params[None]))
    # torch's complex randn has variance 1/2 per part; scale to 1 per part
    noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype) * math.sqrt(2)
    kspace = clean + sigma * mask.unsqueeze(2) * noise
    return {"kspace": kspace[0], "mask": mask[0], "coil_maps": coils[0], "noise_sigma": sigma}


def simulate(
    fractions: torch.Tensor,
    config: SimulationConfig,
    generator: torch.Generator,
    uniform_objects: bool = False,
) -> dict[str, torch.Tensor]:
    """One sample from class fractions already on the image grid.

    Returns the :func:`acquire` outputs plus ``params`` float32 ``(P, H, W)`` (R1 last),
    ``brain_mask`` bool ``(H, W)`` (for ``uniform_objects``: the objects), ``tissue`` int8
    ``(H, W)`` (the class of the largest fraction of every pixel, labels of
    :data:`~pinqi.data.tissues.CLASS_NAMES`; -1 for ``uniform_objects``, whose classes are no
    tissues) and ``tau`` float32 ``(n_tau,)``.
    """
    params = parameter_maps(fractions, generator, config, uniform_objects)
    if config.signal_model == "inversion-ab":
        efficiency = 0.8 + 0.2 * torch.rand((), generator=generator)
        b = -(1 + efficiency) * params[:2]
        params = torch.cat([params[:2], b, params[2:]])
    sample = acquire(params, config, generator)
    sample.update(
        params=params,
        brain_mask=brain_mask(fractions, range(1, N_CLASSES) if uniform_objects else BRAIN_LABELS),
        tissue=torch.full(fractions.shape[-2:], -1, dtype=torch.int8)
        if uniform_objects
        else fractions.argmax(0).to(torch.int8),
        tau=torch.tensor(config.tau, dtype=torch.float32),
    )
    return sample


def _check_subjects(subjects: object, anatomy: str) -> dict[str, tuple[str, ...]]:
    """Validate ``SimulationConfig.subjects``: split -> two-digit BrainWeb subject names."""
    if anatomy != "brainweb":
        raise ValueError(f"subjects need anatomy 'brainweb', got {anatomy!r}")
    if not isinstance(subjects, dict):
        raise ValueError(f"subjects must map splits to subject lists, got {subjects!r}")
    unknown = sorted(set(subjects) - {"train", "val", "test"})
    if unknown:
        raise ValueError(f"subjects: unknown splits {unknown}; use train, val, test")
    checked = {split: normalise_subjects(names) for split, names in subjects.items()}
    shared = sorted(
        {s for a in checked for b in checked if a < b for s in set(checked[a]) & set(checked[b])}
    )
    if shared:
        raise ValueError(f"subjects {shared} are in more than one split")
    return checked
