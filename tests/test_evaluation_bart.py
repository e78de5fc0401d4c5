import csv
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pinqi.cli import REFERENCE_NAMES, main
from pinqi.config import ExperimentConfig
from pinqi.data.datasets import SimulatedDataset, write_h5
from pinqi.data.simulation import SimulationConfig
from pinqi.evaluation.bart import BartConfig, bart_pics, bart_pics_fit, to_bart
from pinqi.evaluation.baseline import BaselineConfig, cg_sense_fit, fit_flat_prior
from pinqi.evaluation.evaluate import REFERENCES
from pinqi.external import bart as bart_module
from pinqi.external.bart import BartNotFoundError, find_bart, run_bart
from pinqi.external.cfl import read_cfl, write_cfl
from pinqi.metrics import parameter_metrics
from pinqi.nets import PINQI
from pinqi.physics import CartesianAcquisition, SaturationRecovery, birdcage_maps
from pinqi.physics.fft import fft2c

from conftest import assert_accurate
from test_training import TINY

needs_bart = pytest.mark.skipif(shutil.which("bart") is None, reason="BART is not installed")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bart_tune.py"

MISSING = "BART not found: install it (Debian/Ubuntu: apt-get install -y bart)"


def phase_images(n_tau: int, height: int, width: int) -> torch.Tensor:
    """Smooth complex images ``(1, n_tau, H, W)`` with a non-trivial, frame-dependent phase."""
    y, x = torch.meshgrid(
        torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij"
    )
    frames = [
        (0.4 + 0.2 * t) * torch.exp(-2 * (x**2 + (y - 0.1) ** 2)) * torch.exp(1j * (2 * x + y + t))
        for t in range(n_tau)
    ]
    return torch.stack(frames)[None].to(torch.complex64)


def test_cfl_roundtrip_is_column_major(tmp_path):
    array = (np.arange(24) + 1j * np.arange(24)[::-1]).reshape(2, 3, 4).astype(np.complex64)
    write_cfl(tmp_path / "a.b", array)  # a dot in the name is kept
    header = (tmp_path / "a.b.hdr").read_text().splitlines()
    assert header == ["# Dimensions", "2 3 4" + " 1" * 13]
    raw = np.fromfile(tmp_path / "a.b.cfl", dtype=np.complex64)
    np.testing.assert_array_equal(raw[:3], [*array[:, 0, 0], array[0, 1, 0]])
    back = read_cfl(tmp_path / "a.b")
    assert back.shape == (2, 3, 4) + (1,) * 13
    np.testing.assert_array_equal(back.reshape(2, 3, 4), array)


def test_cfl_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"none\.hdr"):
        read_cfl(tmp_path / "none")
    write_cfl(tmp_path / "x", np.ones((2, 2)))
    (tmp_path / "x.cfl").write_bytes(b"\0" * 8)
    with pytest.raises(ValueError, match="holds 1 complex64 values but its header"):
        read_cfl(tmp_path / "x")
    (tmp_path / "x.hdr").write_text("2 2\n")
    with pytest.raises(ValueError, match="no '# Dimensions'"):
        read_cfl(tmp_path / "x")
    with pytest.raises(ValueError, match="at most 16 dims"):
        write_cfl(tmp_path / "y", np.ones((1,) * 17))


def test_to_bart_places_axes_at_bart_dims():
    kspace = np.arange(5 * 3 * 4 * 6).reshape(5, 3, 4, 6)  # (n_tau, n_coils, H, W)
    placed = to_bart(kspace, (10, 3, 0, 1))
    assert placed.shape == (4, 6, 1, 3, 1, 1, 1, 1, 1, 1, 5)
    assert placed[2, 5, 0, 1, 0, 0, 0, 0, 0, 0, 4] == kspace[4, 1, 2, 5]
    with pytest.raises(ValueError, match="one distinct BART dim per axis"):
        to_bart(kspace, (0, 0, 1, 3))


def test_missing_bart_is_named_with_the_install_hint(monkeypatch):
    monkeypatch.setattr(bart_module.shutil, "which", lambda name: None)
    with pytest.raises(BartNotFoundError) as error:
        find_bart()
    assert str(error.value) == MISSING
    coils = birdcage_maps(2, (8, 8), rotation=0.0, batch_size=1)
    mask = torch.ones(1, 2, 1, 8)
    kspace = CartesianAcquisition(coils, mask).forward(phase_images(2, 8, 8))
    with pytest.raises(BartNotFoundError, match="apt-get install -y bart"):
        bart_pics(kspace, coils, mask)


def test_config_validation_and_regularizer():
    assert BartConfig(0.01, 5).regularizer() == "T:3:0:0.01"  # TV over H and W (dims 0, 1)
    assert BartConfig(0.01, 5, joint_frames=True).regularizer() == "T:3:1024:0.01"  # + TIME
    assert BartConfig().lambda_fit == BaselineConfig().lambda_fit
    with pytest.raises(ValueError, match="tv_weight"):
        BartConfig(-1.0, 5)
    with pytest.raises(ValueError, match="tv_weight"):
        BartConfig(math.nan, 5)
    with pytest.raises(ValueError, match="iterations"):
        BartConfig(0.01, 0)
    with pytest.raises(ValueError, match="iterations"):
        BartConfig(0.01, 2.5)


@needs_bart
@pytest.mark.parametrize("shape", [(8, 6), (7, 9)])
def test_bart_fft_is_pinqis_centred_fft_times_sqrt_n(tmp_path, shape):
    """``bart fft 3`` = sqrt(H W) fft2c and ``bart fft -u 3`` = fft2c, even and odd sizes."""
    images = phase_images(2, *shape)[0]  # (n_tau, H, W)
    write_cfl(tmp_path / "images", to_bart(images.numpy(), (10, 0, 1)))
    run_bart("fft", "3", "images", "plain", cwd=tmp_path)
    run_bart("fft", "-u", "3", "images", "unitary", cwd=tmp_path)
    expected = fft2c(images)
    for name, scale in (("plain", math.sqrt(shape[0] * shape[1])), ("unitary", 1.0)):
        result = read_cfl(tmp_path / name).reshape(*shape, 2, order="F").transpose(2, 0, 1)
        torch.testing.assert_close(
            torch.from_numpy(result), expected * scale, atol=1e-5 * scale, rtol=1e-5
        )


@needs_bart
@pytest.mark.parametrize("shape", [(32, 32), (30, 34)])
def test_fully_sampled_pics_round_trip_returns_pinqis_images(shape):
    """pinqi's forward operator -> k-space -> bart pics with the true coils -> the images."""
    truth = phase_images(3, *shape)
    coils = birdcage_maps(4, shape, batch_size=1, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(1, 3, 1, shape[1], dtype=torch.bool)
    kspace = CartesianAcquisition(coils, mask).forward(truth)
    images = bart_pics(kspace, coils, mask, BartConfig(tv_weight=1e-7, iterations=50))
    assert images.shape == truth.shape and images.dtype == truth.dtype
    error = torch.linalg.vector_norm(images - truth) / torch.linalg.vector_norm(truth)
    assert float(error) < 1e-4


def test_odd_image_sizes_are_refused():
    coils = birdcage_maps(2, (9, 8), rotation=0.0, batch_size=1)
    mask = torch.ones(1, 2, 1, 8)
    kspace = CartesianAcquisition(coils, mask).forward(phase_images(2, 9, 8))
    with pytest.raises(ValueError, match=r"even image sizes.*9 x 8"):
        bart_pics(kspace, coils, mask)


def test_shape_errors_name_the_argument():
    coils = birdcage_maps(2, (8, 8), rotation=0.0, batch_size=1)
    mask = torch.ones(1, 2, 1, 8)
    with pytest.raises(ValueError, match="kspace"):
        bart_pics(torch.zeros(1, 2, 3, 8, 8, dtype=torch.complex64), coils, mask)


@pytest.fixture(scope="module")
def undersampled():
    """Two 32x32 test-split samples (built-in phantom, 4 coils, 4x)."""
    config = SimulationConfig(size=32, n_coils=4, acceleration=4.0, noise_sigma=(0.005, 0.005))
    dataset = SimulatedDataset(config, "test", 2, seed=0)
    return config, dataset, {k: torch.stack([dataset[i][k] for i in range(2)]) for k in dataset[0]}


@needs_bart
def test_pics_fit_is_the_baselines_fit_of_the_pics_images(undersampled):
    _, _, batch = undersampled
    model = SaturationRecovery(batch["tau"][0])
    inputs = (batch["kspace"], batch["coil_maps"], batch["mask"])
    config = BartConfig(tv_weight=0.003, iterations=20)
    params = bart_pics_fit(model, *inputs, config)
    expected, _ = fit_flat_prior(model, bart_pics(*inputs, config), config.lambda_fit)
    torch.testing.assert_close(params, expected)
    assert params.shape == (2, 3, 32, 32) and bool(torch.isfinite(params).all())
    pics = parameter_metrics(params, batch["params"], batch["brain_mask"])["t1_nrmse"]
    baseline = parameter_metrics(cg_sense_fit(model, *inputs), batch["params"], batch["brain_mask"])
    assert float(pics.mean()) < 1.5 * float(baseline["t1_nrmse"].mean())
    # T1 nRMSE ~0.15, where a constant, transposed or rescaled map is >= 0.2 off (the phantom
    # is nearly symmetric: flipped maps are not a control here)
    t1 = 1 / params[:, -1].clamp(min=0.1)
    assert_accurate(t1, 1 / batch["params"][:, -1], batch["brain_mask"], 0.19, flips=False)


def untrained_model(path):
    """An exported PINQI model file with the tiny test network's random weights."""
    config = ExperimentConfig.from_dict({"name": "tiny", "model": TINY["model"]})
    model = PINQI.from_config(config.model, config.data.signal_model, config.data.tau)
    torch.save({"config": config.to_dict(), "state_dict": model.state_dict()}, path)
    return path


def evaluate_args(data, out, *extra, checkpoint="default"):
    return [
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(data),
        "--out",
        str(out),
        "--device",
        "cpu",
        *extra,
    ]


def test_evaluate_without_bart_exits_with_one_line_and_writes_nothing(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(bart_module.shutil, "which", lambda name: None)
    out = tmp_path / "ev"
    with pytest.raises(SystemExit) as exit_info:
        main(evaluate_args(tmp_path / "missing.h5", out, "--reference", "bart"))
    assert str(exit_info.value.code) == f"pinqi evaluate: {MISSING}"
    assert "\n" not in str(exit_info.value.code)
    assert not out.exists()


def test_evaluate_rejects_unknown_references(tmp_path, capsys):
    assert set(REFERENCE_NAMES) == set(REFERENCES)  # the CLI's list stays import-light
    with pytest.raises(SystemExit):
        main(evaluate_args(tmp_path / "d.h5", tmp_path / "ev", "--reference", "bart,moba"))
    assert "unknown ['moba']" in capsys.readouterr().err


@needs_bart
def test_evaluate_adds_bart_pics_rows(undersampled, tmp_path, capsys):
    _, dataset, _ = undersampled
    data = write_h5(tmp_path / "test.h5", dataset, progress=False)
    out = tmp_path / "ev"
    options = ("--reference", "bart", "--reference", "bart", "--bart-tv", "0.002")
    checkpoint = untrained_model(tmp_path / "tiny.pt")
    main(evaluate_args(data, out, *options, "--bart-iterations", "10", checkpoint=checkpoint))
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    methods = [r["method"] for r in rows]
    assert methods == ["PINQI"] * 2 + ["CG-SENSE + fit"] * 2 + ["bart-pics"] * 2
    assert all(np.isfinite(float(r["t1_nrmse"])) for r in rows)
    assert "| bart-pics |" in (out / "summary.md").read_text()
    assert ", bart-pics " in capsys.readouterr().out


@pytest.mark.slow
@needs_bart
def test_tuning_script_runs_on_a_tiny_grid():
    options = ["--size", "32", "--n-samples", "1", "--tv", "0.01", "--iterations", "5"]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *options],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert "data: validation split" in result.stdout
    assert "| CG-SENSE + fit |" in result.stdout
    assert "| bart-pics | per-frame | 0.01 | 5 |" in result.stdout
    assert "lowest mean T1 nRMSE" in result.stdout
