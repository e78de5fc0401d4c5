"""BrainWeb's 20 normal anatomical models: files, subject split, reading and downloading.

Two kinds of model exist per subject (Aubert-Broche et al. 2006, the paper's ref. [43]):

- ``crisp``: one MINC1 volume of labels 0-11, ``subjectNN_crisp_v.mnc.gz``;
- ``fuzzy``: one MINC1 volume per tissue class holding its membership (what the paper used),
  ``subjectNN_CLASS_v.mnc.gz`` with CLASS in :data:`FUZZY_CLASSES`.

Both are 362 x 434 x 362 voxels (z, y, x) of 0.5 mm. :class:`BrainWebSubject` turns either into
per-class fractions ``(12, z, y, x)``: one-hot labels for crisp models (partial volumes then
come from area averaging when slices are resampled), normalised memberships for fuzzy ones
(see :class:`BrainWebSubject`).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from urllib.request import urlopen

import numpy as np
import torch

from pinqi.data.minc import MincError, read_minc
from pinqi.data.tissues import BRAIN_LABELS, N_CLASSES

#: The 20 subjects of the BrainWeb 20 normal models.
SUBJECTS: tuple[str, ...] = (
    "04", "05", "06", "18", "20", "38", "41", "42", "43", "44",
    "45", "46", "47", "48", "49", "50", "51", "52", "53", "54",
)  # fmt: skip

#: Subject-disjoint split (paper: 16/1/3). Subjects 20 and 49 are in ``train``; where they are
#: missing the training split has 14 subjects. Never changed, never mixed.
SPLITS: dict[str, tuple[str, ...]] = {
    "val": ("05",),
    "test": ("04", "06", "18"),
    "train": tuple(s for s in SUBJECTS if s not in ("05", "04", "06", "18")),
}

#: Fuzzy model class names (BrainWeb's download aliases) in the order of the crisp labels.
FUZZY_CLASSES: tuple[str, ...] = (
    "bck", "csf", "gry", "wht", "fat", "mus", "m-s", "skl", "ves", "fat2", "dura", "mrw",
)  # fmt: skip

#: SHA-256 of the crisp files as distributed by BrainWeb (18 subjects verified).
CRISP_SHA256: dict[str, str] = {
    "04": "745a1b09c718a56c72519c6c8e5b669372d88b9c30a99e9b264fa3b62053f7cb",
    "05": "1a1b55755dc4eb7e8319209d9c3b161101b9fdda882c434486468ab1254fb6bf",
    "06": "c03d81797e721d986cca644113a2801afe7b86bf83256a475829fc26aa17e890",
    "18": "543cad3f9a3697ad099ab37bc11529ee88191f291011a34d4c36fb42329027f6",
    "38": "971722d190555e55e29aba3b96a495d98d5d512255596838073f7c4ffbc84c89",
    "41": "2ca484deec4afee39ecaa2025dab8a02dc7a530f6a5f53e51be7ff20aec91f59",
    "42": "20325bbb7f0d76cd6e8f0e7a4cfc3918e4879fb5f713b17d20254c7ae356a919",
    "43": "2fdfb97e0842ba37ce51f0cbea5b93b31acca7818eb7145c4f8df239db52f758",
    "44": "3f820b30b1706bde801ef97f6a2e59ffad751fdd41a63627cd16dd7a04401d08",
    "45": "f471c997521163d2d783469c503cab82b811c4f42a21d2f0560544501e74f7ce",
    "46": "e380e9a069e8669bd368429c3d94ee56dc07f1c9f3b6295d7bd73d364f68eb42",
    "47": "e9c5b7a36eb97bdc48841a261985f9dcf836ee0c3d62919f9332219f648d509c",
    "48": "1cdf00e3d4f9aac567be450b48783fe99be1aa75d289f01d0eb2c5685cd56295",
    "50": "c178424a97f1238d38d97106225396c3be004dd7dac33fd264ba68c09ab16aab",
    "51": "77274eb52d1220ce1e62cfb0b35738d51c4f72ab2e5a144638857e8c6310c1d3",
    "52": "39bf27e9dbe7666348215fca1601754c7dfcbb74c1e075ac5275b3726c30fa77",
    "53": "a2e867505ac06017fa3717a551aa77d29ad19fc10fcf29933475fd4244315352",
    "54": "2d3644be22ee1d59690964b9ee508e29e88607f62381f13ecd0e2f399d9245d9",
}

_URL = (
    "http://brainweb.bic.mni.mcgill.ca/cgi/brainweb1?do_download_alias=subject{subject}_{alias}"
    "&format_value=minc&zip_value=gnuzip&download_for_real=%5BStart+download%21%5D"
)


def crisp_path(folder: Path, subject: str) -> Path:
    """Path of a subject's crisp model in ``folder``."""
    return Path(folder) / f"subject{subject}_crisp_v.mnc.gz"


def fuzzy_path(folder: Path, subject: str, cls: str) -> Path:
    """Path of one class of a subject's fuzzy model in ``folder``."""
    return Path(folder) / f"subject{subject}_{cls}_v.mnc.gz"


def available_subjects(folder: str | Path, subjects: Sequence[str] = SUBJECTS) -> list[str]:
    """Subjects of ``subjects`` with a complete fuzzy or crisp model in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"BrainWeb folder not found: {folder}")
    return [s for s in subjects if _has_fuzzy(folder, s) or crisp_path(folder, s).is_file()]


def _has_fuzzy(folder: Path, subject: str) -> bool:
    return all(fuzzy_path(folder, subject, c).is_file() for c in FUZZY_CLASSES)


def normalise_subjects(subjects: Sequence[str | int]) -> tuple[str, ...]:
    """Subject numbers as BrainWeb's two-digit names, e.g. ``[20, "4"]`` -> ``("20", "04")``.

    Raises
    ------
    ValueError
        If the list is empty (or a bare string), or holds a repeated subject or an entry
        that is not one of BrainWeb's :data:`SUBJECTS`; the message names the bad entries.
    """
    if isinstance(subjects, str | bytes) or len(subjects) == 0:
        raise ValueError(
            f"subjects must be a non-empty list such as ['20', '49'], got {subjects!r}"
        )
    names = []
    for subject in subjects:
        text = str(subject).strip()
        names.append(f"{int(text):02d}" if text.isdigit() else text)
    unknown = [name for name in names if name not in SUBJECTS]
    if unknown:
        raise ValueError(f"unknown BrainWeb subjects {unknown}; valid: {list(SUBJECTS)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"BrainWeb subjects {repeated} are listed more than once")
    return tuple(names)


def resolve_subjects(folder: str | Path, subjects: Sequence[str | int]) -> list[str]:
    """An explicit subject list (see :func:`normalise_subjects`), all present in ``folder``.

    Raises
    ------
    FileNotFoundError
        If ``folder`` does not exist, or if any subject lacks a complete crisp or fuzzy model
        there; the message names every missing subject and the folder.
    ValueError
        For a malformed list (:func:`normalise_subjects`).
    """
    names = normalise_subjects(subjects)
    present = available_subjects(folder, names)
    missing = [name for name in names if name not in present]
    if missing:
        raise FileNotFoundError(
            f"BrainWeb subjects {missing} not found in {folder} (expected "
            f"{crisp_path(Path(folder), missing[0]).name} or the {len(FUZZY_CLASSES)} fuzzy "
            f"files {fuzzy_path(Path(folder), missing[0], 'CLASS').name})"
        )
    return list(names)


def split_subjects(
    folder: str | Path, split: str, subjects: Sequence[str | int] | None = None
) -> list[str]:
    """The subjects of ``split`` present in ``folder``; warns about missing ones.

    Parameters
    ----------
    folder
        Folder of BrainWeb files.
    split
        ``"train"``, ``"val"`` or ``"test"``.
    subjects
        An explicit subject list for this split, used exactly as given
        (:func:`resolve_subjects`: every one must be present); None (default) takes the
        paper's split, :data:`SPLITS`, and uses those of its subjects that are present.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if subjects is not None:
        return resolve_subjects(folder, subjects)
    present = available_subjects(folder, SPLITS[split])
    missing = sorted(set(SPLITS[split]) - set(present))
    if not present:
        raise FileNotFoundError(
            f"no BrainWeb model of the {split} subjects {list(SPLITS[split])} in {folder} "
            f"(expected files like {crisp_path(Path(folder), SPLITS[split][0]).name})"
        )
    if missing:
        warnings.warn(
            f"BrainWeb subjects {missing} of the {split} split are not in {folder}; "
            f"using {len(present)} subjects",
            stacklevel=2,
        )
    return present


class BrainWebSubject:
    """The usable slices of one subject, kept in memory as compactly as the model allows.

    Crisp models keep their uint8 labels, fuzzy models their memberships quantised to uint8
    (about 0.35 GB per subject for axial slices). Slices whose brain area (CSF, grey and white
    matter, vessels) is below ``min_brain_fraction`` of the subject's largest one are dropped.

    Parameters
    ----------
    folder
        Folder with the subject's files; the fuzzy model is preferred where it is complete.
    subject
        Subject number, e.g. ``"04"``.
    axis
        Volume axis that indexes the slices (0: axial, 1: coronal, 2: sagittal).
    min_brain_fraction
        Threshold on the brain area relative to the largest slice.
    """

    def __init__(
        self, folder: str | Path, subject: str, axis: int = 0, min_brain_fraction: float = 0.5
    ) -> None:
        folder = Path(folder)
        self.subject = subject
        if _has_fuzzy(folder, subject):
            volumes = [read_minc(fuzzy_path(folder, subject, c)) for c in FUZZY_CLASSES]
            spacing = volumes[0][1]
            data = np.stack([np.clip(v, 0, None) for v, _ in volumes])
            data = data / np.maximum(data.sum(0, keepdims=True), 1e-12)
            brain = data[list(BRAIN_LABELS)].sum(0)
            self.fuzzy = True
        else:
            labels, spacing = read_minc(crisp_path(folder, subject), scaled=False)
            check_labels(labels, source=crisp_path(folder, subject))
            data = labels
            brain = np.isin(labels, BRAIN_LABELS).astype(np.float32)
            self.fuzzy = False
        data_axis = axis + 1 if self.fuzzy else axis
        area = brain.sum(axis=tuple(a for a in range(3) if a != axis))
        self.slices = np.flatnonzero(area >= min_brain_fraction * area.max())
        data = np.take(data, self.slices, axis=data_axis)
        data = np.moveaxis(data, data_axis, 1 if self.fuzzy else 0)
        self.data = np.round(data * 255).astype(np.uint8) if self.fuzzy else data
        self.spacing = tuple(s for a, s in enumerate(spacing) if a != axis)

    def __len__(self) -> int:
        return len(self.slices)

    def fractions(self, index: int) -> torch.Tensor:
        """Class fractions ``(12, rows, columns)`` of usable slice ``index``.

        Rows are reversed so that anterior (axial) or superior (coronal, sagittal) is at the
        top of the image, as scanners display them.
        """
        if self.fuzzy:
            values = torch.from_numpy(self.data[:, index].astype(np.float32))
            values = values / values.sum(0, keepdim=True).clamp(min=1)
        else:
            values = torch.from_numpy(one_hot(self.data[index]))
        return values.flip(-2)


def check_labels(labels: np.ndarray, source: Path | str = "labels") -> None:
    """Raise a :class:`MincError` unless ``labels`` are integers in 0-11."""
    if labels.dtype.kind not in "iu":
        raise MincError(f"{source}: labels must be integers, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
        unknown = sorted(set(np.unique(labels).tolist()) - set(range(N_CLASSES)))
        raise MincError(f"{source}: unknown tissue labels {unknown} (expected 0-{N_CLASSES - 1})")


def one_hot(labels: np.ndarray, source: Path | str = "labels") -> np.ndarray:
    """``(12, ...)`` float32 fractions of a label array; raises on unknown labels."""
    check_labels(labels, source)
    eye = np.eye(N_CLASSES, dtype=np.float32)
    return np.moveaxis(eye[labels.astype(np.int64)], -1, 0)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(
    folder: str | Path,
    subjects: Sequence[str] = SUBJECTS,
    kind: str = "crisp",
    progress: bool = True,
) -> list[Path]:
    """Download BrainWeb models into ``folder`` (a cache; existing verified files are kept).

    Each file is streamed to a temporary file and moved into place only when complete. Crisp
    files are checked against the SHA-256 sums BrainWeb's distribution has; for files without a
    known sum the sum is recorded beside the file (``.sha256``) and checked on later calls.

    Parameters
    ----------
    folder
        Cache folder, created if needed.
    subjects
        Subject numbers, e.g. ``("04", "05")``.
    kind
        ``"crisp"`` (one labels file per subject) or ``"fuzzy"`` (12 membership files).
    progress
        Show a progress bar per file.

    Returns
    -------
    list[Path]
        The files, in the order of ``subjects``.
    """
    if kind not in ("crisp", "fuzzy"):
        raise ValueError(f"kind must be 'crisp' or 'fuzzy', got {kind!r}")
    unknown = sorted(set(subjects) - set(SUBJECTS))
    if unknown:
        raise ValueError(f"unknown BrainWeb subjects {unknown}; valid: {list(SUBJECTS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for subject in subjects:
        if kind == "crisp":
            targets = [(crisp_path(folder, subject), "crisp", CRISP_SHA256.get(subject))]
        else:
            targets = [(fuzzy_path(folder, subject, c), c, None) for c in FUZZY_CLASSES]
        for path, alias, expected in targets:
            _fetch(_URL.format(subject=subject, alias=alias), path, expected, progress)
            files.append(path)
    return files


def _fetch(url: str, path: Path, expected: str | None, progress: bool) -> None:
    """Download ``url`` to ``path`` unless a verified copy exists; verify the checksum."""
    record = path.with_name(path.name + ".sha256")
    if expected is None and record.is_file():
        expected = record.read_text().split()[0]
    if path.is_file() and (expected is None or sha256(path) == expected):
        return
    from tqdm.auto import tqdm

    with (
        urlopen(url, timeout=60) as response,
        tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp,
    ):
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=path.name, disable=not progress
        ) as bar:
            for block in iter(lambda: response.read(1 << 16), b""):
                tmp.write(block)
                bar.update(len(block))
    digest = sha256(Path(tmp.name))
    if expected is not None and digest != expected:
        Path(tmp.name).unlink()
        raise OSError(f"checksum mismatch for {path.name} from {url}: {digest} != {expected}")
    shutil.move(tmp.name, path)
    record.write_text(f"{digest}  {path.name}\n")
