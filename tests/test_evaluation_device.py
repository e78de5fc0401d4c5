from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from pinqi.cli import build_parser, main
from pinqi.evaluation.baseline import cg_sense_fit
from pinqi.evaluation.evaluate import resolve_device
from pinqi.evaluation.fit import combine, fit_images
from pinqi.physics import CartesianAcquisition, SaturationRecovery

from conftest import random_parameters, small_acquisition

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@contextmanager
def default_device(device: str) -> Iterator[None]:
    """Tensors created without an explicit device land on ``device`` inside the block."""
    previous = torch.get_default_device()
    torch.set_default_device(device)
    try:
        yield
    finally:
        torch.set_default_device(previous)


def small_problem(
    acceleration: float, device: str = "cpu"
) -> tuple[SaturationRecovery, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Signal model, k-space ``(1, 3, 4, 8, 8)``, coil maps and mask of a small problem."""
    coils, mask = small_acquisition(batch=1, acceleration=acceleration)
    model = SaturationRecovery((0.5, 1.0, 2.0))
    truth = random_parameters(1, (8, 8), torch.Generator().manual_seed(0))
    kspace = CartesianAcquisition(coils, mask).forward(model(truth))
    return model.to(device), kspace.to(device), coils.to(device), mask.to(device)


@pytest.mark.parametrize("acceleration", [1.0, 2.0])
def test_baseline_and_fit_create_no_tensor_off_the_inputs_device(acceleration):
    # a tensor created without the inputs' device would land on "meta" and fail to mix
    model, kspace, coils, mask = small_problem(acceleration)
    with default_device("meta"):
        baseline = cg_sense_fit(model, kspace, coils, mask)
        images = combine(kspace, coils, mask)
        fitted = fit_images(model, images)
    for result in (baseline, images, fitted):
        assert result.device.type == "cpu" and torch.isfinite(result).all()
    assert baseline.dtype == fitted.dtype == torch.float64 and images.dtype == kspace.dtype


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match="CUDA is not available") as error:
            resolve_device(name)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("command", ["evaluate", "reconstruct", "fit"])
def test_device_option(command, capsys):
    parser = build_parser()
    args = parser.parse_args([command, "--data", "x.h5", "--out", "out"])
    assert args.device == "auto"
    args = parser.parse_args([command, "--data", "x.h5", "--out", "out", "--device", "cpu"])
    assert args.device == "cpu"
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    assert "default: auto = cuda when available, else cpu" in " ".join(
        capsys.readouterr().out.split()
    )


@pytest.mark.parametrize("command", ["evaluate", "reconstruct", "fit"])
def test_cuda_without_a_gpu_is_a_one_line_error(command, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = [command, "--data", str(tmp_path / "x.h5"), "--out", str(tmp_path), "--device", "cuda"]
    with pytest.raises(SystemExit, match=f"pinqi {command}: .*CUDA is not available") as error:
        main(argv)
    assert "\n" not in str(error.value)


@CUDA
@pytest.mark.parametrize("acceleration", [1.0, 2.0])
def test_baseline_and_fit_on_cuda_match_cpu(acceleration):
    cpu = small_problem(acceleration)
    cuda = small_problem(acceleration, "cuda")
    torch.testing.assert_close(cg_sense_fit(*cuda).cpu(), cg_sense_fit(*cpu), rtol=1e-6, atol=1e-8)
    images = combine(*cuda[1:])
    assert images.device.type == "cuda"
    torch.testing.assert_close(images.cpu(), combine(*cpu[1:]), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(
        fit_images(cuda[0], images).cpu(), fit_images(cpu[0], combine(*cpu[1:]))
    )
