import shutil
import warnings

import h5py
import ismrmrd
import nibabel as nib
import numpy as np
import pytest
import torch

from pinqi.data.datasets import SimulatedDataset
from pinqi.data.simulation import SimulationConfig
from pinqi.io.ismrmrd import read_ismrmrd
from pinqi.physics import CartesianAcquisition, SaturationRecovery, fft2c

from conftest import assert_accurate

HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
<experimentalConditions><H1resonanceFrequency_Hz>123000000</H1resonanceFrequency_Hz></experimentalConditions>
<encoding>
<encodedSpace><matrixSize><x>{nx}</x><y>{ny}</y><z>1</z></matrixSize>
<fieldOfView_mm><x>440</x><y>220</y><z>8</z></fieldOfView_mm></encodedSpace>
<reconSpace><matrixSize><x>{rx}</x><y>{ny}</y><z>1</z></matrixSize>
<fieldOfView_mm><x>220</x><y>220</y><z>8</z></fieldOfView_mm></reconSpace>
<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>{ymax}</maximum>
<center>{centre}</center></kspace_encoding_step_1></encodingLimits>
<trajectory>cartesian</trajectory>
</encoding>
<sequenceParameters>{ti}</sequenceParameters>
</ismrmrdHeader>"""


def write_file(path, sample, noise=None, centre_offset=0):
    """An ISMRMRD file of a simulated sample: 2x readout oversampling, lines in random order."""
    coils, mask, tau = sample["coil_maps"], sample["mask"], sample["tau"]
    images = SaturationRecovery(tau)(sample["params"][None])[0]
    n = images.shape[-1]
    coil_images = images[:, None] * coils[None]
    padded = torch.zeros(*coil_images.shape[:2], 2 * n, n, dtype=coil_images.dtype)
    padded[:, :, n // 2 : n // 2 + n] = coil_images
    kspace = fft2c(padded)
    ti = "".join(f"<TI>{1000 * float(t):g}</TI>" for t in tau)
    centre = n // 2 - centre_offset
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    dataset.write_xml_header(HEADER.format(nx=2 * n, ny=n, rx=n, ymax=n - 1, centre=centre, ti=ti))
    rng = np.random.default_rng(0)
    if noise is not None:
        for _ in range(300):  # enough samples for a covariance estimate within ~1%
            white = rng.standard_normal((coils.shape[0], 2 * n, 2)).view(np.complex128)[..., 0]
            scan = ismrmrd.Acquisition.from_array((noise @ white).astype(np.complex64))
            scan.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
            dataset.append_acquisition(scan)
    lines = [(t, int(y)) for t in range(len(tau)) for y in np.flatnonzero(mask[t, 0].numpy())]
    for t, y in rng.permutation(np.array(lines)):
        acquisition = ismrmrd.Acquisition.from_array(
            kspace[t, :, :, y].numpy().astype(np.complex64)
        )
        acquisition.idx.contrast = int(t)
        acquisition.idx.kspace_encode_step_1 = int(y) - centre_offset
        dataset.append_acquisition(acquisition)
    dataset.close()


@pytest.fixture
def sample():
    config = SimulationConfig(size=16, n_coils=4, acceleration=2.0, noise_sigma=(0.0, 0.0))
    return SimulatedDataset(config, "test", 1, seed=2)[0]


def test_read_back_same_kspace_masks_and_delays(tmp_path, sample):
    write_file(tmp_path / "raw.h5", sample, centre_offset=-1)
    raw = read_ismrmrd(tmp_path / "raw.h5")
    assert raw.kspace.shape == (1, 5, 4, 16, 16) and not raw.prewhitened
    assert torch.equal(raw.mask, sample["mask"][None])
    torch.testing.assert_close(raw.tau, sample["tau"])
    torch.testing.assert_close(raw.kspace[0], sample["kspace"], atol=2e-5, rtol=0)
    acquisition = CartesianAcquisition(sample["coil_maps"][None], raw.mask)
    assert acquisition.check_kspace("kspace", raw.kspace) is raw.kspace


def test_prewhitening_with_noise_scans(tmp_path, sample):
    noise = np.array([[1.0, 0, 0, 0], [0.5, 1.0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0.3, 0.5]])
    write_file(tmp_path / "raw.h5", sample, noise=noise)
    raw = read_ismrmrd(tmp_path / "raw.h5", tau=[0.5, 1.0, 1.5, 2.0, 8.0])
    assert raw.prewhitened
    plain = read_ismrmrd(tmp_path / "raw.h5", tau=[0.5, 1.0, 1.5, 2.0, 8.0], whiten=False)
    # whitening W (lower triangular, W Psi W^H = I) mixes the coils of the plain data; the
    # scans are noise @ (a + ib) with a, b standard normal, so Psi = E[n n^H] = 2 noise noise^T
    psi = 2 * noise @ noise.T
    w = np.linalg.inv(np.linalg.cholesky(psi))

    def error(whitening: np.ndarray) -> float:
        expected = np.einsum("ij,tjxy->tixy", whitening, plain.kspace[0].numpy())
        return float(np.linalg.norm(raw.kspace[0].numpy() - expected) / np.linalg.norm(expected))

    # 300 noise scans estimate Psi to ~1 %; a covariance off by 2 (W off by sqrt(2)) fails
    assert error(w) < 0.05
    assert error(np.sqrt(2) * w) > 0.05 and error(w / np.sqrt(2)) > 0.05
    np.testing.assert_allclose(raw.whitening, w, atol=0.03 * np.abs(w).max())


def test_errors(tmp_path, sample):
    with pytest.raises(FileNotFoundError):
        read_ismrmrd(tmp_path / "none.h5")
    write_file(tmp_path / "raw.h5", sample)
    with pytest.raises(ValueError, match="delays given"):
        read_ismrmrd(tmp_path / "raw.h5", tau=[1.0])
    with pytest.raises(ValueError, match="no imaging acquisitions of slice 3"):
        read_ismrmrd(tmp_path / "raw.h5", slice_index=3)


def test_import_and_reconstruct_raw_data(tmp_path, sample):
    from pinqi.cli import main
    from pinqi.data.datasets import H5Dataset
    from pinqi.data.raw import prepare_raw

    write_file(tmp_path / "raw.h5", sample)
    raw = read_ismrmrd(tmp_path / "raw.h5")
    cropped = prepare_raw(raw, size=8)
    assert cropped["kspace"].shape == (5, 4, 8, 8) and cropped["mask"].shape == (5, 1, 8)
    with pytest.raises(ValueError, match="size must be even"):
        prepare_raw(raw, size=32)
    main(["import-ismrmrd", "--raw", str(tmp_path / "raw.h5"), "--out", str(tmp_path / "k.h5")])
    stored = H5Dataset(tmp_path / "k.h5")
    assert not stored.has_ground_truth and stored[0]["kspace"].shape == (5, 4, 16, 16)


def imported_maps(tmp_path, sample, command, name):
    """The T1 map (model orientation) of ``pinqi <command>`` on the sample's ISMRMRD file."""
    from pinqi.cli import main

    write_file(tmp_path / f"{name}.h5", sample)
    stored = tmp_path / f"{name}-k.h5"
    main(["import-ismrmrd", "--raw", str(tmp_path / f"{name}.h5"), "--out", str(stored)])
    out = tmp_path / f"{name}-{command}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the shipped model's out-of-distribution warning
        main([command, "--data", str(stored), "--out", str(out)])
    with h5py.File(out / "params.h5") as f:
        t1 = f["t1"][()][0]
    # the NIfTI holds the same map with x along the columns and y up the rows
    nifti = nib.load(out / "t1.nii.gz").get_fdata()[..., 0]
    np.testing.assert_allclose(nifti, t1[::-1].T, rtol=1e-6)
    return t1


def test_raw_data_to_maps_matches_the_ground_truth(tmp_path):
    """ISMRMRD -> import-ismrmrd -> fit / reconstruct gives the simulated T1, in place."""
    from pinqi.cli import main
    from pinqi.data.datasets import write_h5

    config = SimulationConfig(size=32, n_coils=4, acceleration=1.0, noise_sigma=(0.0, 0.0))
    full = SimulatedDataset(config, "test", 1, seed=2)[0]
    inside, truth = full["brain_mask"], 1 / full["params"][-1]
    # fully sampled and noise-free: the fit is exact, and a flipped, transposed or rescaled
    # import (or the coil maps' phase ignored) is far off
    fitted = imported_maps(tmp_path, full, "fit", "full")
    assert assert_accurate(fitted, truth, inside, 0.01) < 1e-3

    # 2x undersampled: PINQI on the imported file (Walsh coil maps from the data) agrees with
    # PINQI on the sample stored directly (true coil maps) ...
    config = SimulationConfig(size=32, n_coils=4, acceleration=2.0, noise_sigma=(0.0, 0.0))
    dataset = SimulatedDataset(config, "test", 1, seed=2)
    sample = dataset[0]
    pinqi = imported_maps(tmp_path, sample, "reconstruct", "under")
    write_h5(tmp_path / "direct.h5", dataset, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(["reconstruct", "--data", str(tmp_path / "direct.h5"), "--out", str(tmp_path / "d")])
    with h5py.File(tmp_path / "d" / "params.h5") as f:
        direct = f["t1"][()][0]
    assert_accurate(pinqi, direct, inside, 0.07)
    # ... and is nearer the truth than the data ignored, transposed or rescaled (the anatomy
    # is close to symmetric: flips are caught above)
    assert_accurate(pinqi, truth, inside, 0.2, flips=False)


def maps_agreement(estimate: torch.Tensor, truth: torch.Tensor, inside: torch.Tensor) -> float:
    """Median over ``inside`` of |<c_est, c_true>| / (|c_est| |c_true|) (1 = same up to phase)."""
    num = (estimate.conj() * truth).sum(-3).abs()
    den = estimate.abs().square().sum(-3).sqrt() * truth.abs().square().sum(-3).sqrt()
    return float((num / den.clamp(min=1e-12))[inside].median())


def calibration_scan(sample):
    """The sample as a fully sampled single-frame scan (the longest delay), e.g. a GRE."""
    full = torch.ones_like(sample["mask"][-1:])
    return {**sample, "mask": full, "tau": sample["tau"][-1:]}


def test_calibration_scan_is_whitened_like_the_data(tmp_path, sample):
    from pinqi.io.ismrmrd import read_calibration

    noise = np.array([[1.0, 0, 0, 0], [0.5, 1.0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0.3, 0.5]])
    write_file(tmp_path / "raw.h5", sample, noise=noise)
    write_file(tmp_path / "cal.h5", calibration_scan(sample))  # no noise scans of its own
    raw = read_ismrmrd(tmp_path / "raw.h5")
    calibration = read_calibration(tmp_path / "cal.h5", raw)
    assert calibration.prewhitened and calibration.whitening is raw.whitening
    plain = read_ismrmrd(tmp_path / "cal.h5", whiten=False)
    expected = np.einsum("ij,tjxy->tixy", raw.whitening, plain.kspace[0].numpy())
    np.testing.assert_allclose(calibration.kspace[0].numpy(), expected, rtol=1e-5, atol=1e-5)
    unwhitened = read_calibration(
        tmp_path / "cal.h5", read_ismrmrd(tmp_path / "raw.h5", whiten=False)
    )
    assert not unwhitened.prewhitened
    torch.testing.assert_close(unwhitened.kspace, plain.kspace)


def test_coil_maps_from_a_calibration_scan(tmp_path, sample):
    from pinqi.cli import main
    from pinqi.data.datasets import H5Dataset
    from pinqi.data.raw import _fit_matrix, prepare_raw
    from pinqi.io.ismrmrd import read_calibration

    write_file(tmp_path / "raw.h5", sample)
    write_file(tmp_path / "cal.h5", calibration_scan(sample))
    raw = read_ismrmrd(tmp_path / "raw.h5")
    calibration = read_calibration(tmp_path / "cal.h5", raw)
    inside = sample["brain_mask"]
    truth = sample["coil_maps"]
    from_scan = prepare_raw(raw, calibration=calibration)["coil_maps"]
    from_data = prepare_raw(raw)["coil_maps"]
    assert maps_agreement(from_scan, truth, inside) > 0.99
    assert maps_agreement(from_scan, truth, inside) >= maps_agreement(from_data, truth, inside)
    # a calibration scan at another matrix: cropped or zero-filled over the same field of view
    constant = torch.zeros(1, 16, 16, dtype=torch.complex64)
    constant[0, 8, 8] = 16.0  # the k-space of an image that is 1 everywhere
    small = _fit_matrix(constant, (8, 8))
    assert float(small[0, 4, 4].real) == pytest.approx(8.0) and int((small != 0).sum()) == 1
    torch.testing.assert_close(_fit_matrix(small, (16, 16)), constant)
    with pytest.raises(ValueError, match="coil_method must be one of"):
        prepare_raw(raw, coil_method="sense")
    main(
        [
            "import-ismrmrd",
            "--raw",
            str(tmp_path / "raw.h5"),
            "--calibration",
            str(tmp_path / "cal.h5"),
            "--out",
            str(tmp_path / "k.h5"),
        ]
    )
    stored = H5Dataset(tmp_path / "k.h5")[0]["coil_maps"]
    assert stored.shape == (4, 16, 16)
    # the CLI's coil maps are the calibration scan's, not the data's own
    torch.testing.assert_close(stored, from_scan.to(stored.dtype), rtol=1e-4, atol=1e-4)
    assert float((stored - from_data.to(stored.dtype)).abs().max()) > 1e-2


def test_import_ismrmrd_coils_ratio(tmp_path, sample, capsys):
    """--coils ratio: smoothed coil images over their root sum of squares."""
    from pinqi.cli import main
    from pinqi.data.datasets import H5Dataset
    from pinqi.data.raw import prepare_raw

    write_file(tmp_path / "raw.h5", sample)
    argv = ["import-ismrmrd", "--raw", str(tmp_path / "raw.h5"), "--coils", "ratio"]
    main([*argv, "--out", str(tmp_path / "k.h5")])
    assert "coil maps by ratio from the data" in capsys.readouterr().out
    stored = H5Dataset(tmp_path / "k.h5")[0]["coil_maps"]
    raw = read_ismrmrd(tmp_path / "raw.h5")
    ratio = prepare_raw(raw, coil_method="ratio")["coil_maps"].to(stored.dtype)
    walsh = prepare_raw(raw)["coil_maps"].to(stored.dtype)
    torch.testing.assert_close(stored, ratio)
    assert float((stored - walsh).abs().max()) > 1e-2  # not the default method's maps
    inside = sample["brain_mask"]
    assert maps_agreement(stored, sample["coil_maps"], inside) > 0.99
    rss = stored.abs().square().sum(0).sqrt()[inside]
    torch.testing.assert_close(rss, torch.ones_like(rss), rtol=0, atol=1e-3)


def test_espirit_maps_from_a_calibration_scan(tmp_path, sample):
    from pinqi.data.raw import prepare_raw
    from pinqi.io.ismrmrd import read_calibration

    if shutil.which("bart") is None:
        pytest.skip("BART is not installed (apt-get install -y bart)")
    write_file(tmp_path / "raw.h5", sample)
    write_file(tmp_path / "cal.h5", calibration_scan(sample))
    raw = read_ismrmrd(tmp_path / "raw.h5")
    calibration = read_calibration(tmp_path / "cal.h5", raw)
    inside = sample["brain_mask"]
    maps = prepare_raw(raw, coil_method="espirit", calibration=calibration)["coil_maps"]
    assert maps_agreement(maps, sample["coil_maps"], inside) > 0.99
    # the data's own centre is too narrow for ESPIRiT: a clear error, not BART's assertion
    with pytest.raises(ValueError, match=r"fully sampled centre of \d+ lines; ESPIRiT needs"):
        prepare_raw(raw, coil_method="espirit")
