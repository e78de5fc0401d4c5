"""PINQI follows its inputs' device, maps P_theta's output smoothly and validates once."""

import dataclasses

import pytest
import torch

import pinqi._checks
from pinqi.nets import PINQI, PINQIConfig
from pinqi.nets.blocks import group_norm
from pinqi.physics import SaturationRecovery
from pinqi.solvers import data_consistency, signal_fit

from test_nets import TINY, tiny_problem


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_forward_and_backward_create_no_tensor_off_the_inputs_device(solver):
    """With the default device set to meta, a tensor made without an explicit device fails."""
    model, kspace, coils, mask, truth = tiny_problem()
    net = PINQI(model, dataclasses.replace(TINY, fit_solver=solver))
    torch.set_default_device("meta")
    try:
        out = net(kspace, coils, mask)
        ((out.parameters[-1] - truth) ** 2).mean().backward()
    finally:
        torch.set_default_device("cpu")
    assert out.parameters[-1].device.type == "cpu"
    assert all(p.grad is not None and p.grad.device.type == "cpu" for p in net.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_smoke_forward_backward_of_pinqi_and_both_layers():
    model, kspace, coils, mask, truth = tiny_problem()
    cuda = torch.device("cuda")
    net = PINQI(model, TINY).to(cuda)
    kspace, coils, mask, truth = (x.to(cuda) for x in (kspace, coils, mask, truth))
    out = net(kspace, coils, mask)
    ((out.parameters[-1] - truth) ** 2).mean().backward()
    assert all(p.grad is not None and p.grad.is_cuda for p in net.parameters())
    prior = torch.zeros(kspace.shape[:2] + kspace.shape[3:], dtype=kspace.dtype, device=cuda)
    lam = torch.tensor(0.1, device=cuda, requires_grad=True)
    images = data_consistency(kspace, coils, mask, [lam], [prior], warn=False)
    p = signal_fit(net.signal_model, images, truth, lam, warn=False)
    p.sum().backward()
    assert lam.grad is not None and lam.grad.is_cuda and p.is_cuda


def test_parameter_net_output_is_smooth_and_inside_the_open_box():
    model = SaturationRecovery((0.5, 1.0, 2.0))
    net = PINQI(model, TINY)
    out = torch.linspace(-20, 20, 81).reshape(1, 1, 81, 1).expand(1, 3, 81, 1).clone()
    out.requires_grad_()
    p = net.parameters_from_output(out)
    lower = torch.tensor([lo for lo, _ in model.bounds]).reshape(1, 3, 1, 1)
    upper = torch.tensor([hi for _, hi in model.bounds]).reshape(1, 3, 1, 1)
    assert bool(((p >= lower) & (p <= upper)).all())
    moderate = out.detach().abs() <= 3
    assert bool(((p > lower) & (p < upper))[moderate].all()), "strictly inside the open box"
    (grad,) = torch.autograd.grad(p.sum(), out)
    assert bool((grad > 0).all()), "every output needs a non-zero gradient (no dead zone)"
    # at a zero output: the signal model's typical values, slope 10 x their spread
    zero = torch.zeros(1, 3, 1, 1, requires_grad=True)
    p0 = net.parameters_from_output(zero)
    torch.testing.assert_close(p0.flatten(), torch.tensor([v for v, _ in model.typical]))
    (slope,) = torch.autograd.grad(p0.sum(), zero)
    torch.testing.assert_close(slope.flatten(), torch.tensor([10 * s for _, s in model.typical]))


def test_parameter_init_outside_the_bounds_is_rejected():
    with pytest.raises(ValueError, match="inside the signal model's bounds"):
        PINQI(
            SaturationRecovery((0.5, 1.0)),
            dataclasses.replace(TINY, parameter_init=(0.9, 0.0, 25.0)),
        )


def test_group_norm_groups_are_preset_fields_with_the_authors_defaults():
    net = PINQI(SaturationRecovery((0.5, 1.0, 1.5, 2.0, 8.0)), PINQIConfig())
    y_norms = [m for m in net.image_net.modules() if isinstance(m, torch.nn.GroupNorm)]
    p_norms = [m for m in net.parameter_net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert {m.num_groups for m in y_norms} == {8}
    assert {m.num_groups for m in p_norms} == {16}
    # Y_theta's first level (16 channels) is not a LayerNorm over all channels
    assert y_norms[0].num_channels == 16 and y_norms[0].num_groups == 8
    custom = PINQI(
        SaturationRecovery((0.5, 1.0)),
        dataclasses.replace(TINY, image_norm_groups=2, parameter_norm_groups=4),
    )
    assert {m.num_groups for m in custom.image_net.modules() if hasattr(m, "num_groups")} == {2}
    assert group_norm(12, 8).num_groups == 4  # the greatest common divisor


def test_fit_solver_is_a_preset_field():
    model, kspace, coils, mask, truth = tiny_problem()
    net = PINQI(model, dataclasses.replace(TINY, fit_solver="lbfgs"))
    out = net(kspace, coils, mask)
    ((out.parameters[-1] - truth) ** 2).mean().backward()
    assert net.raw_lambda_p.grad is not None and bool(torch.isfinite(net.raw_lambda_p.grad).all())
    with pytest.raises(ValueError, match="fit_solver must be one of"):
        dataclasses.replace(TINY, fit_solver="bfgs")


def test_inputs_are_validated_once_per_forward_not_per_iteration(monkeypatch):
    """The layers inside the network run unchecked: the number of checks does not grow with T."""
    model, kspace, coils, mask, _ = tiny_problem()
    calls = []
    original = pinqi._checks.check_finite

    def counting(name, x):
        calls.append(name)
        original(name, x)

    monkeypatch.setattr(pinqi._checks, "check_finite", counting)
    counts = {}
    for iterations in (1, 4):
        calls.clear()
        net = PINQI(model, dataclasses.replace(TINY, iterations=iterations))
        with torch.no_grad():
            net(kspace, coils, mask)
        counts[iterations] = len(calls)
    assert counts[1] == counts[4] > 0


def test_wrong_number_of_frames_is_a_clear_error():
    _, kspace, coils, mask, _ = tiny_problem()
    net = PINQI(SaturationRecovery((0.5, 1.0)), TINY)
    with pytest.raises(ValueError, match="3 frames but the network was built for n_tau=2"):
        net(kspace, coils, mask)
