"""Simulated data sets: on-the-fly training samples and fixed HDF5 validation/test sets.

Reproducibility: sample ``i`` of a split is generated from its own ``torch.Generator`` seeded
by ``(seed, split, epoch, i)`` through NumPy's ``SeedSequence``. It is therefore the same on
every machine, in every run and with any number of DataLoader workers. A training set
generates fresh samples every epoch (call :meth:`SimulatedDataset.set_epoch`); the validation
and test sets are written once to HDF5 (:func:`write_h5`) and read back with :class:`H5Dataset`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from pinqi import __version__
from pinqi.data.brainweb import BrainWebSubject, one_hot, split_subjects
from pinqi.data.geometry import SliceTransform, resample_fractions
from pinqi.data.phantom import PHANTOM_SPACING, phantom_labels, uniform_object_labels
from pinqi.data.simulation import ORIENTATION_AXES, SimulationConfig, simulate
from pinqi.data.strips import readout_strip, strip_start
from pinqi.io.grid import SourceGrid
from pinqi.io.hdf5 import open_data_file
from pinqi.io.nifti import simulation_grid
from pinqi.io.staging import staged_file

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def sample_generator(seed: int, split: str, epoch: int, index: int) -> torch.Generator:
    """The generator of sample ``index`` of ``split`` in ``epoch`` for a data set ``seed``."""
    if split not in SPLIT_CODES:
        raise ValueError(f"split must be one of {sorted(SPLIT_CODES)}, got {split!r}")
    if min(seed, epoch, index) < 0:
        raise ValueError(f"seed, epoch and index must be >= 0, got {seed}, {epoch}, {index}")
    entropy = [seed, SPLIT_CODES[split], epoch, index]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


class BuiltinAnatomy:
    """Slices of the procedural phantom (:func:`~pinqi.data.phantom.phantom_labels`)."""

    def draw(self, generator: torch.Generator) -> tuple[torch.Tensor, tuple[float, float], dict]:
        """Fractions ``(12, Y, X)``, their pixel spacing in mm and the slice's origin."""
        labels = phantom_labels(generator)
        return (
            torch.from_numpy(one_hot(labels)),
            (PHANTOM_SPACING,) * 2,
            {"subject": -1, "slice": -1},
        )


class BrainWebAnatomy:
    """Slices of the BrainWeb subjects of one split; subjects are loaded on first use.

    Parameters
    ----------
    folder
        Folder of BrainWeb files.
    split
        ``"train"``, ``"val"`` or ``"test"`` (:data:`~pinqi.data.brainweb.SPLITS`).
    orientation, min_brain_fraction
        Slice selection, see :class:`~pinqi.data.simulation.SimulationConfig`.
    subjects
        Explicit subjects of this split (e.g. ``["20", "49"]``), all of which must be in
        ``folder``; None (default): the paper's split (see
        :func:`~pinqi.data.brainweb.split_subjects`).
    """

    def __init__(
        self,
        folder: str | Path,
        split: str,
        orientation: str,
        min_brain_fraction: float,
        subjects: Sequence[str | int] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.subjects = split_subjects(self.folder, split, subjects)
        self.axis = ORIENTATION_AXES[orientation]
        self.min_brain_fraction = min_brain_fraction
        self._loaded: dict[str, BrainWebSubject] = {}

    def _subject(self, subject: str) -> BrainWebSubject:
        if subject not in self._loaded:
            self._loaded[subject] = BrainWebSubject(
                self.folder, subject, self.axis, self.min_brain_fraction
            )
        return self._loaded[subject]

    def preload(self) -> None:
        """Load every subject now (before DataLoader workers fork, they then share it)."""
        for subject in self.subjects:
            self._subject(subject)

    def draw(self, generator: torch.Generator) -> tuple[torch.Tensor, tuple[float, float], dict]:
        """A random slice of a random subject: fractions, spacing in mm and its origin."""
        pick = int(torch.randint(len(self.subjects), (), generator=generator))
        subject = self._subject(self.subjects[pick])
        index = int(torch.randint(len(subject), (), generator=generator))
        origin = {"subject": int(subject.subject), "slice": int(subject.slices[index])}
        return subject.fractions(index), subject.spacing, origin


class SimulatedDataset(torch.utils.data.Dataset):
    """Samples simulated on the fly from BrainWeb or the built-in phantom.

    Each item is a dict with ``kspace`` complex64 ``(n_tau, n_coils, H, W)``, ``mask`` bool
    ``(n_tau, 1, W)``, ``coil_maps`` complex64 ``(n_coils, H, W)``, ``params`` float32
    ``(3, H, W)`` = [Re M0, Im M0, R1 in 1/s], ``brain_mask`` bool ``(H, W)``, ``tissue`` int8
    ``(H, W)`` (:func:`~pinqi.data.simulation.simulate`), ``tau`` float32
    ``(n_tau,)`` in s, ``noise_sigma`` ``()`` and the anatomy's ``subject`` and ``slice``
    (-1 for the phantom). The training split is geometrically augmented; validation and test
    are not.

    Parameters
    ----------
    config
        What to simulate.
    split
        ``"train"``, ``"val"`` or ``"test"``: selects the BrainWeb subjects and the seeds.
    n_samples
        Length of the data set (samples per epoch for training).
    seed
        Data set seed.
    epoch
        Epoch; training sets get fresh samples with :meth:`set_epoch`.
    subjects
        Explicit BrainWeb subjects of this split (anatomy ``"brainweb"`` only), e.g.
        ``["20", "49"]``; None (default): the paper's split.
    strip_rows
        If > 0, every sample is a random readout strip of this many rows around the brain
        (:func:`~pinqi.data.strips.readout_strip`): an exact, smaller problem for training.
    """

    def __init__(
        self,
        config: SimulationConfig,
        split: str,
        n_samples: int,
        seed: int = 0,
        epoch: int = 0,
        subjects: Sequence[str | int] | None = None,
        strip_rows: int = 0,
    ) -> None:
        if split not in SPLIT_CODES:
            raise ValueError(f"split must be one of {sorted(SPLIT_CODES)}, got {split!r}")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        subjects = subjects if subjects is not None else config.split_subjects(split)
        if subjects is not None and config.anatomy != "brainweb":
            raise ValueError(
                f"subjects {list(subjects)} need anatomy 'brainweb', got {config.anatomy!r}"
            )
        if not 0 <= strip_rows <= config.size:
            raise ValueError(f"strip_rows must be in [0, size = {config.size}], got {strip_rows}")
        self.config, self.split, self.n_samples = config, split, n_samples
        self.strip_rows = strip_rows
        self.seed, self.epoch = seed, epoch
        if config.anatomy == "brainweb":
            self.anatomy: BuiltinAnatomy | BrainWebAnatomy = BrainWebAnatomy(
                config.brainweb_dir,
                split,
                config.orientation,
                config.min_brain_fraction,
                subjects,
            )
        else:
            self.anatomy = BuiltinAnatomy()

    def preload(self) -> None:
        """Load all anatomy now (BrainWeb subjects are otherwise loaded on first use)."""
        if isinstance(self.anatomy, BrainWebAnatomy):
            self.anatomy.preload()

    def set_epoch(self, epoch: int) -> None:
        """Draw the samples of ``epoch`` from now on."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_samples

    @property
    def tau(self) -> torch.Tensor:
        """The delays in s ``(n_tau,)``, as :class:`H5Dataset` has them."""
        return torch.tensor(self.config.tau, dtype=torch.float32)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.sample(index, self.epoch)

    def sample(self, index: int, epoch: int) -> dict[str, torch.Tensor]:
        """Sample ``index`` of ``epoch`` (what ``self[index]`` gives after ``set_epoch(epoch)``)."""
        if not 0 <= index < self.n_samples:
            raise IndexError(f"index {index} out of range for {self.n_samples} samples")
        config = self.config
        generator = sample_generator(self.seed, self.split, epoch, index)
        fractions, spacing, origin = self.anatomy.draw(generator)
        uniform_objects = config.uniform_probability > 0 and bool(
            torch.rand((), generator=generator) < config.uniform_probability
        )
        if uniform_objects:
            fractions = torch.from_numpy(one_hot(uniform_object_labels(generator)))
            spacing, origin = (PHANTOM_SPACING,) * 2, {"subject": -1, "slice": -1}
        transform = SliceTransform()
        if self.split == "train":
            transform = SliceTransform.random(
                generator,
                config.max_rotation_deg,
                config.scale_range,
                config.max_shift_mm,
                config.flips,
            )
        fractions = resample_fractions(fractions, spacing, config.size, config.fov_mm, transform)
        sample = simulate(fractions, config, generator, uniform_objects)
        if self.strip_rows:
            start = strip_start(sample["brain_mask"], self.strip_rows, generator)
            sample = readout_strip(sample, start, self.strip_rows)
        sample["subject"] = torch.tensor(origin["subject"])
        sample["slice"] = torch.tensor(origin["slice"])
        return sample


class EpochSampler(torch.utils.data.Sampler[int]):
    """Shuffled indices of one epoch's samples that carry the epoch: ``epoch * n + i``.

    With :class:`EpochIndexedDataset`, fresh samples every epoch reach persistent DataLoader
    workers (whose copy of the data set never sees ``set_epoch``); the epoch lives here, in the
    main process, and Lightning advances it with :meth:`set_epoch`.

    Parameters
    ----------
    n_samples
        Samples per epoch.
    seed
        Seed of the shuffling.
    shuffle
        Shuffle within an epoch.
    """

    def __init__(self, n_samples: int, seed: int, shuffle: bool = True) -> None:
        self.n_samples, self.seed, self.shuffle = n_samples, seed, shuffle
        self.epoch = 0
        self.rank, self.world_size = 0, 1
        self._resume: tuple[int, int] | None = None

    def distribute(self, rank: int, world_size: int) -> None:
        """Yield only process ``rank``'s share of every epoch, of ``world_size`` processes.

        Process r takes the epoch's samples r, r + W, r + 2W, ... (W = ``world_size``; a tail
        of fewer than W samples is dropped), so that with a batch of b per process the k-th
        steps of all processes together see the samples k b W ... (k + 1) b W - 1 of the
        epoch: the k-th batch of one process with the batch b W.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of {world_size} processes")
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        """Yield the samples of ``epoch`` from the next iteration on."""
        self.epoch = epoch

    def resume(self, epoch: int, done: int) -> None:
        """Start the next iteration over ``epoch`` after its first ``done`` samples.

        A run resumed mid-epoch then sees the samples of that epoch it has not seen, as an
        uninterrupted run would. Iterations over other epochs are not affected.
        """
        if not 0 <= done <= len(self):
            raise ValueError(f"cannot resume after {done} of {len(self)} samples")
        self._resume = (epoch, done)

    def __iter__(self) -> Iterator[int]:
        order = torch.arange(self.n_samples)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n_samples, generator=generator)
        order = order[self.rank :: self.world_size][: len(self)]
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = self._resume[1]
        self._resume = None
        yield from (self.epoch * self.n_samples + order[start:]).tolist()

    def __len__(self) -> int:
        """Samples per epoch of this process."""
        return self.n_samples // self.world_size


class EpochIndexedDataset(torch.utils.data.Dataset):
    """A :class:`SimulatedDataset` indexed by ``epoch * n + i`` (see :class:`EpochSampler`)."""

    def __init__(self, dataset: SimulatedDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        epoch, i = divmod(index, self.dataset.n_samples)
        return self.dataset.sample(i, epoch)


#: HDF5 datasets written per sample, with their dtypes in the file.
_H5_FIELDS = {
    "kspace": np.complex64,
    "mask": np.bool_,
    "coil_maps": np.complex64,
    "params": np.float32,
    "brain_mask": np.bool_,
    "tissue": np.int8,
    "noise_sigma": np.float32,
    "subject": np.int16,
    "slice": np.int16,
}


def write_h5(
    path: str | Path,
    dataset: SimulatedDataset,
    progress: bool = True,
    attributes: dict | None = None,
) -> Path:
    """Write every sample of ``dataset`` to an HDF5 file.

    Datasets: ``kspace (n, n_tau, n_coils, H, W)``, ``mask (n, n_tau, 1, W)``, ``coil_maps (n,
    n_coils, H, W)``, ``params (n, 3, H, W)``, ``brain_mask (n, H, W)``, ``tissue (n, H, W)``
    (tissue label per pixel), ``noise_sigma (n,)``, ``subject (n,)``, ``slice (n,)`` and ``tau
    (n_tau,)``, each where the samples have it (real data has no ``params`` or ``brain_mask``);
    attributes ``config`` (JSON), ``seed``, ``split``, ``epoch``, ``pinqi_version``,
    ``conventions`` and any ``attributes``. ``dataset`` is any sequence of samples with a
    ``config``. Samples are compressed (LZF) one per chunk. The file appears complete or not at
    all (:func:`~pinqi.io.staging.staged_file`).
    """
    from tqdm.auto import tqdm

    path = Path(path)
    n = len(dataset)
    with staged_file(path) as staging, h5py.File(staging, "w") as f:
        fields: list[str] = []
        for i in tqdm(range(n), desc=f"writing {path.name}", disable=not progress):
            sample = dataset[i]
            if i == 0:
                fields = [name for name in _H5_FIELDS if name in sample]
                for name in fields:
                    dtype = _H5_FIELDS[name]
                    shape = tuple(sample[name].shape)
                    f.create_dataset(
                        name,
                        shape=(n, *shape),
                        dtype=dtype,
                        chunks=(1, *shape) if shape else None,
                        compression="lzf" if shape else None,
                    )
                f.create_dataset("tau", data=sample["tau"].numpy())
            for name in fields:
                f[name][i] = sample[name].numpy()
        f.attrs.update(
            config=dataset.config.to_json(),
            seed=getattr(dataset, "seed", -1),
            split=getattr(dataset, "split", "none"),
            epoch=getattr(dataset, "epoch", 0),
            pinqi_version=__version__,
            conventions=json.dumps(
                {
                    "params": "[Re M0, Im M0, R1] with R1 = 1/T1 in 1/s",
                    "tau": "saturation times in s",
                    "mask": "1 = sampled phase-encoding line along W; k-space centre at W//2",
                    "noise_sigma": "std of the real and of the imaginary part per k-space sample",
                }
            ),
            **(attributes or {}),
        )
    return path


#: Datasets every file must have; the others (ground truth) are optional, e.g. for real data.
REQUIRED_FIELDS = ("kspace", "mask", "coil_maps", "tau")


class H5Dataset(torch.utils.data.Dataset):
    """Samples of an HDF5 file in the layout of :func:`write_h5` (same keys as the simulation).

    Files of real data (``pinqi undersample``) have no ground truth: their samples lack
    ``params`` and ``brain_mask`` (:attr:`has_ground_truth` is False); they may carry the
    scan's grid (:attr:`source_grid`, :class:`~pinqi.io.grid.SourceGrid`) and the factor
    their intensity was divided by (:attr:`intensity_scale`, 1 for simulated data). The file
    is opened lazily in each process, so the data set works with DataLoader workers.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open_data_file(self.path, REQUIRED_FIELDS) as f:
            if "config" not in f.attrs:
                raise ValueError(
                    f"{self.path} lacks the attribute 'config' (the simulation settings that "
                    "pinqi simulate, undersample and import-ismrmrd write)"
                )
            self.n_samples = f["kspace"].shape[0]
            self.tau = torch.from_numpy(f["tau"][()])
            self.config = SimulationConfig.from_json(f.attrs["config"])
            self.fields = [k for k in _H5_FIELDS if k in f]
            self.has_ground_truth = "params" in f and "brain_mask" in f
            self.source_grid = SourceGrid.from_attributes(f.attrs)
            self.intensity_scale = float(f.attrs.get("intensity_scale", 1.0))
        self._file: h5py.File | None = None

    def ground_truth(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The ground truth of every sample: true parameters, brain mask and tissue labels.

        ``params`` ``(n, P, H, W)``, ``brain_mask`` ``(n, H, W)`` and ``tissue``
        ``(n, H, W)`` (None for files without labels).

        Raises
        ------
        ValueError
            For a file without ground truth (measured data).
        """
        if not self.has_ground_truth:
            raise ValueError(f"{self.path} has no ground truth (params, brain_mask)")
        samples = [self[i] for i in range(len(self))]
        tissue = torch.stack([s["tissue"] for s in samples]) if "tissue" in self.fields else None
        return (
            torch.stack([s["params"] for s in samples]),
            torch.stack([s["brain_mask"] for s in samples]),
            tissue,
        )

    def output_grid(self) -> SourceGrid:
        """The grid of the maps reconstructed from this file.

        The scan's grid (resampled to the data's size) for real data that carry one, else
        the simulation's axis-aligned grid.
        """
        size = self.config.size
        if self.source_grid is None:
            return simulation_grid(self.config.fov_mm / size, size)
        if self.source_grid.shape == (size, size):
            return self.source_grid
        return self.source_grid.resampled(size)

    def __len__(self) -> int:
        return self.n_samples

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        sample = {
            name: torch.from_numpy(np.asarray(self._file[name][index])) for name in self.fields
        }
        sample["tau"] = self.tau
        return sample
