import gzip
import hashlib
import io
import warnings

import numpy as np
import pytest
import torch

from pinqi.data import brainweb
from pinqi.data.brainweb import (
    SPLITS,
    SUBJECTS,
    BrainWebSubject,
    available_subjects,
    crisp_path,
    download,
    split_subjects,
)
from pinqi.data.minc import MincError, read_minc

from brainweb_files import head_labels, write_crisp, write_fuzzy, write_minc


def test_read_minc_roundtrip(tmp_path):
    labels = head_labels()
    write_minc(tmp_path / "a.mnc.gz", labels)
    volume, spacing = read_minc(tmp_path / "a.mnc.gz", scaled=False)
    assert volume.dtype == np.uint8
    np.testing.assert_array_equal(volume, labels)
    assert spacing == (0.5, 0.5, 0.5)


def test_read_minc_unsigned_values_above_127_and_scaling(tmp_path):
    values = np.arange(0, 256, dtype=np.uint8).reshape(4, 8, 8)
    write_minc(tmp_path / "b.mnc.gz", values, image_max=2.0)
    raw, _ = read_minc(tmp_path / "b.mnc.gz", scaled=False)
    np.testing.assert_array_equal(raw, values)
    scaled, _ = read_minc(tmp_path / "b.mnc.gz")
    np.testing.assert_allclose(scaled, values / 255 * 2.0, rtol=1e-6)


def test_read_minc_errors(tmp_path):
    with pytest.raises(MincError, match="not found"):
        read_minc(tmp_path / "missing.mnc.gz")
    (tmp_path / "bad.mnc.gz").write_bytes(b"not gzip at all")
    with pytest.raises(MincError, match="gzip"):
        read_minc(tmp_path / "bad.mnc.gz")
    (tmp_path / "bad2.mnc.gz").write_bytes(gzip.compress(b"HDF5 something else"))
    with pytest.raises(MincError, match="signature"):
        read_minc(tmp_path / "bad2.mnc.gz")
    good = tmp_path / "good.mnc.gz"
    write_minc(good, head_labels())
    truncated = tmp_path / "trunc.mnc.gz"
    truncated.write_bytes(gzip.compress(gzip.decompress(good.read_bytes())[:200]))
    with pytest.raises(MincError):
        read_minc(truncated)


def test_crisp_subject_slices_and_fractions(tmp_path):
    write_crisp(tmp_path, "04")
    subject = BrainWebSubject(tmp_path, "04", axis=0, min_brain_fraction=0.5)
    assert not subject.fuzzy
    assert len(subject) == 4  # the two outer slices have less brain
    assert subject.spacing == (0.5, 0.5)
    fractions = subject.fractions(0)
    assert fractions.shape == (12, 40, 32)
    torch.testing.assert_close(fractions.sum(0), torch.ones(40, 32))
    labels = head_labels()[subject.slices[0]][::-1]  # rows reversed: anterior at the top
    np.testing.assert_array_equal(fractions.argmax(0).numpy(), labels)


def test_fuzzy_model_preferred_and_normalised(tmp_path):
    write_crisp(tmp_path, "05")
    write_fuzzy(tmp_path, "05")
    subject = BrainWebSubject(tmp_path, "05", axis=1)
    assert subject.fuzzy
    fractions = subject.fractions(0)
    assert fractions.shape == (12, 6, 32)  # coronal: (z, x)
    torch.testing.assert_close(fractions.sum(0), torch.ones(6, 32), atol=1e-2, rtol=0)
    inside = fractions[3] > 0
    torch.testing.assert_close(
        fractions[3][inside], torch.full_like(fractions[3][inside], 0.8), atol=1e-2, rtol=0
    )


def test_unknown_label_raises(tmp_path):
    labels = head_labels()
    labels[0, 0, 0] = 13
    write_crisp(tmp_path, "06", labels)
    with pytest.raises(MincError, match=r"unknown tissue labels \[13\]"):
        BrainWebSubject(tmp_path, "06")


def test_split_is_subject_disjoint_and_complete():
    sets = {name: set(subjects) for name, subjects in SPLITS.items()}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"])
    assert not (sets["val"] & sets["test"])
    assert set().union(*sets.values()) == set(SUBJECTS)
    assert (len(sets["train"]), len(sets["val"]), len(sets["test"])) == (16, 1, 3)


def test_split_subjects_uses_present_files_and_warns(tmp_path):
    for subject in SPLITS["test"][:2]:
        write_crisp(tmp_path, subject)
    with pytest.warns(UserWarning, match="not in"):
        assert split_subjects(tmp_path, "test") == list(SPLITS["test"][:2])
    with pytest.raises(FileNotFoundError, match="no BrainWeb model of the val subjects"):
        split_subjects(tmp_path, "val")
    with pytest.raises(FileNotFoundError, match="folder not found"):
        available_subjects(tmp_path / "nope")
    with pytest.raises(ValueError, match="split must be"):
        split_subjects(tmp_path, "training")


class FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes) -> None:
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.close()


def test_download_verifies_checksums_and_caches(tmp_path, monkeypatch):
    source = tmp_path / "source.mnc.gz"
    write_minc(source, head_labels())
    payload = source.read_bytes()
    calls = []

    def fake_urlopen(url, timeout):
        calls.append(url)
        return FakeResponse(payload)

    monkeypatch.setattr(brainweb, "urlopen", fake_urlopen)
    monkeypatch.setitem(brainweb.CRISP_SHA256, "04", hashlib.sha256(payload).hexdigest())
    cache = tmp_path / "cache"
    (path,) = download(cache, ["04"], progress=False)
    assert path == crisp_path(cache, "04") and path.read_bytes() == payload
    assert "subject04_crisp" in calls[0] and "format_value=minc" in calls[0]
    download(cache, ["04"], progress=False)
    assert len(calls) == 1  # verified copy kept, no second download
    read_minc(path)

    monkeypatch.setitem(brainweb.CRISP_SHA256, "05", "0" * 64)
    with pytest.raises(OSError, match="checksum mismatch"):
        download(cache, ["05"], progress=False)
    assert not crisp_path(cache, "05").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith("tmp")]


def test_download_fuzzy_records_checksums(tmp_path, monkeypatch):
    source = tmp_path / "source.mnc.gz"
    write_minc(source, head_labels())
    monkeypatch.setattr(brainweb, "urlopen", lambda url, timeout: FakeResponse(source.read_bytes()))
    files = download(tmp_path / "cache", ["20"], kind="fuzzy", progress=False)
    assert len(files) == 12
    assert all(f.with_name(f.name + ".sha256").is_file() for f in files)
    files[3].write_bytes(b"corrupted")  # a later call notices and downloads it again
    download(tmp_path / "cache", ["20"], kind="fuzzy", progress=False)
    read_minc(files[3])


def test_download_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown BrainWeb subjects"):
        download(tmp_path, ["99"])
    with pytest.raises(ValueError, match="kind"):
        download(tmp_path, ["04"], kind="soft")


def test_real_brainweb_files_if_present():
    """Development check on the real files (skipped where they are not available)."""
    folder = brainweb.Path(__file__).resolve().parents[2] / "shared" / "data" / "brainweb"
    if not crisp_path(folder, "04").is_file():
        pytest.skip("BrainWeb files not available")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        subject = BrainWebSubject(folder, "04")
    assert subject.data.shape[1:] == (434, 362)
    assert subject.data.max() == 11
