import math
from dataclasses import replace
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from pinqi.nets import PINQI, PINQIConfig, UNet
from pinqi.nets.blocks import FiLM, ResidualBlock
from pinqi.nets.pinqi import LAMBDA_BETA, complex_to_channels, inverse_softplus
from pinqi.physics import (
    CartesianAcquisition,
    SaturationRecovery,
    birdcage_maps,
    variable_density_mask,
)
from pinqi.solvers.signal_fit import signal_fit

from conftest import TAU

TINY = PINQIConfig(
    iterations=2,
    image_features=(8, 16),
    parameter_features=(8, 16),
    cg_iterations=3,
    fit_iterations=3,
)


def tiny_problem(batch=2, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = SaturationRecovery((0.5, 1.0, 2.0))
    coils = birdcage_maps(4, (size, size), batch_size=batch, generator=gen)
    mask = variable_density_mask(batch, 3, size, acceleration=2, generator=gen)
    truth = torch.stack(
        [
            0.5 + 0.5 * torch.rand(batch, size, size, generator=gen),
            0.1 * torch.randn(batch, size, size, generator=gen),
            0.3 + 2 * torch.rand(batch, size, size, generator=gen),
        ],
        1,
    )
    images = model(truth)
    kspace = torch.fft.fftshift(
        torch.fft.fft2(
            torch.fft.ifftshift(images.unsqueeze(2) * coils.unsqueeze(1), dim=(-2, -1)),
            norm="ortho",
        ),
        dim=(-2, -1),
    )
    kspace = kspace * mask.unsqueeze(2)
    return model, kspace, coils, mask, truth


def test_unrolled_shapes_and_iterates():
    model, kspace, coils, mask, _ = tiny_problem()
    net = PINQI(model, TINY)
    out = net(kspace, coils, mask)
    assert len(out.parameters) == len(out.images) == len(out.parameter_priors) == 3
    assert all(p.shape == (2, 3, 16, 16) for p in out.parameters)
    assert all(y.shape == (2, 3, 16, 16) and y.is_complex() for y in out.images)
    assert torch.isfinite(out.parameters[-1]).all()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gradients_reach_every_weight_and_strength(precision):
    model, kspace, coils, mask, truth = tiny_problem()
    net = PINQI(model, replace(TINY, unet_precision=precision))

    def backward():
        net.zero_grad()
        out = net(kspace, coils, mask)
        sum(((p - truth) ** 2).mean() for p in out.parameters).backward()

    # FiLM starts as the identity (zero weights), so the iteration embedding gets its first
    # gradient after one step
    backward()
    torch.optim.Adam(net.parameters(), lr=1e-3).step()
    backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_strengths_initialised_as_in_the_paper():
    net = PINQI(SaturationRecovery((0.5, 1.0)), PINQIConfig(iterations=3))
    lam = net.strengths()
    torch.testing.assert_close(lam["lambda_p"], torch.full((3,), 3.0))
    torch.testing.assert_close(lam["lambda_y"], torch.full((3,), 0.1))
    torch.testing.assert_close(lam["lambda_q"], torch.tensor([0.15, 0.2, 0.25]))
    assert LAMBDA_BETA == 5.0

    # the stored raw values: softplus_5(x) = v  <=>  x = v + log(1 - exp(-5 v)) / 5, written
    # here independently of inverse_softplus
    def raw(v):
        return v + math.log1p(-math.exp(-5 * v)) / 5

    torch.testing.assert_close(net.raw_lambda_p.detach(), torch.full((3,), raw(3.0)))
    torch.testing.assert_close(net.raw_lambda_y.detach(), torch.full((3,), raw(0.1)))
    expected_q = torch.tensor([raw(0.15), raw(0.2), raw(0.25)])
    torch.testing.assert_close(net.raw_lambda_q.detach(), expected_q)


@pytest.mark.parametrize("value", [1e-3, 0.1, 1.0, 3.0, 10.0])
def test_inverse_softplus_inverts_the_strength_softplus(value):
    raw = torch.tensor(inverse_softplus(value), dtype=torch.float64)
    assert float(F.softplus(raw, beta=LAMBDA_BETA)) == pytest.approx(value, rel=1e-12)


def final_parameters(net, kspace, coils, mask):
    with torch.no_grad():
        return net(kspace, coils, mask).parameters[-1]


def randomise(module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in module.parameters():
            weight.copy_(0.3 * torch.randn(weight.shape, generator=gen))


def test_zero_lambda_y_makes_the_output_independent_of_the_image_regulariser():
    model, kspace, coils, mask, _ = tiny_problem()
    net = PINQI(model, TINY)
    # at the default lambda_y, Y_theta's weights change the result...
    randomise(net.image_net, 0)
    first = final_parameters(net, kspace, coils, mask)
    randomise(net.image_net, 1)
    assert not torch.allclose(final_parameters(net, kspace, coils, mask), first)
    # ...at lambda_y = 0 exactly (softplus(-inf) = 0) they cannot
    with torch.no_grad():
        net.raw_lambda_y.fill_(-float("inf"))
    assert torch.equal(net.strengths()["lambda_y"], torch.zeros(TINY.iterations))
    randomise(net.image_net, 0)
    first = final_parameters(net, kspace, coils, mask)
    randomise(net.image_net, 1)
    second = final_parameters(net, kspace, coils, mask)
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)


def test_without_signal_fit_the_parameters_are_p_theta_outputs():
    model, kspace, coils, mask, _ = tiny_problem()
    full = PINQI(model, TINY)
    ablated = PINQI(model, replace(TINY, use_signal_fit=False))
    ablated.load_state_dict(full.state_dict())
    with torch.no_grad():
        out = ablated(kspace, coils, mask)
        with_fit = full(kspace, coils, mask)
    assert out.fit_infos == []
    assert len(out.cg_infos) == TINY.iterations
    assert len(out.parameters) == len(out.parameter_priors) == TINY.iterations + 1
    for parameters, prior in zip(out.parameters, out.parameter_priors, strict=True):
        assert torch.equal(parameters, prior)
    # with the fit layer, the prediction is not P_theta's output
    assert len(with_fit.fit_infos) == TINY.iterations
    difference = (with_fit.parameters[-1] - with_fit.parameter_priors[-1]).abs().amax()
    assert float(difference) > 1e-3


@pytest.mark.parametrize(
    ("iterate", "expected_calls"),
    [(False, {"parameter_net": 1, "image_net": 1}), (True, {"parameter_net": 3, "image_net": 2})],
)
def test_iterate_networks_sets_how_often_each_unet_runs(iterate, expected_calls):
    model, kspace, coils, mask, _ = tiny_problem()
    net = PINQI(model, replace(TINY, iterate_networks=iterate))
    inputs = {"parameter_net": [], "image_net": []}
    for name, calls in inputs.items():
        getattr(net, name).register_forward_hook(
            lambda module, args, output, calls=calls: calls.append(args)
        )
    with torch.no_grad():
        out = net(kspace, coils, mask)
    assert {name: len(calls) for name, calls in inputs.items()} == expected_calls
    priors = out.parameter_priors
    assert len(priors) == TINY.iterations + 1
    same_prior = [torch.equal(prior, priors[0]) for prior in priors[1:]]
    assert all(same_prior) if not iterate else not any(same_prior)
    if not iterate:
        # both UNets see the initial images y0 only, at iterations 0 (P) and 1 (Y)
        (p_input, p_iteration), (y_input, y_iteration) = (
            inputs["parameter_net"][0],
            inputs["image_net"][0],
        )
        y0 = complex_to_channels(out.images[0])
        assert torch.equal(p_input, y0.flatten(1, 2))
        assert torch.equal(y_input, y0)
        assert p_iteration.tolist() == [0.0, 0.0]
        assert y_iteration.tolist() == [1.0, 1.0]


def test_without_parameter_regulariser_the_fit_is_unregularised():
    # no P_theta: p_0 is a learned constant (the same in every pixel and sample), and every
    # fit has lambda_p = 0: the last one equals an unregularised fit from the same start,
    # whatever p_reg
    model, kspace, coils, mask, _ = tiny_problem()
    net = PINQI(model, replace(TINY, use_parameter_regulariser=False))
    assert net.parameter_net is None
    with torch.no_grad():
        out = net(kspace, coils, mask)
        start = out.parameters[0]
        assert torch.equal(start, start[:1, :, :1, :1].expand_as(start))
        images, start = out.images[-1], out.parameters[-2]
        fit = partial(signal_fit, model, images, p0=start, max_iter=TINY.fit_iterations, warn=False)
        anything = torch.randn(start.shape, generator=torch.Generator().manual_seed(5))
        unregularised = fit(anything, 0.0)
        lam_p = net.strengths()["lambda_p"][-1].expand(2)
        regularised = fit(out.parameter_priors[-1], lam_p)
    assert torch.equal(out.parameters[-1], unregularised)
    # the check can tell: the regularised fit (the full network's) lands elsewhere
    assert float((regularised - unregularised).abs().amax()) > 1e-3


def test_relative_per_parameter_strength_follows_the_intensity_of_the_data():
    """With lambda_p relative, data scaled by c give M0 scaled by c and the same R1."""
    model = SaturationRecovery(TAU)
    config = replace(TINY, lambda_p_per_parameter=True, lambda_p_relative=True)
    net = PINQI(model, config).double()
    assert net.raw_lambda_p.shape == (TINY.iterations, model.n_params)
    with torch.no_grad():
        net.raw_lambda_p[0] = torch.tensor([0.2, 0.5, 1.0])
    lambda_p = net.strengths()["lambda_p"][0]
    gen = torch.Generator().manual_seed(3)
    truth = torch.stack(
        [
            0.5 + 0.5 * torch.rand(2, 4, 4, generator=gen, dtype=torch.float64),
            0.2 * torch.rand(2, 4, 4, generator=gen, dtype=torch.float64),
            0.3 + 2 * torch.rand(2, 4, 4, generator=gen, dtype=torch.float64),
        ],
        1,
    )
    images = model(truth) + 0.05 * torch.randn(
        2, len(TAU), 4, 4, generator=gen, dtype=torch.complex128
    )
    p_reg = truth * torch.tensor([1.1, 0.9, 1.3], dtype=torch.float64).reshape(1, 3, 1, 1)
    scale = torch.tensor([0.1, 0.1, 1.0], dtype=torch.float64).reshape(1, 3, 1, 1)

    def fit(net, images, p_reg):
        strength = net.parameter_strength(lambda_p, p_reg)
        return signal_fit(model, images, p_reg, strength, tol=1e-12, max_iter=100)

    bright, dim = fit(net, images, p_reg), fit(net, 0.1 * images, scale * p_reg)
    torch.testing.assert_close(dim, scale * bright)
    # the strengths are lambda_p times the mean data curvature per sample and parameter
    curvature = model.jacobian(p_reg).abs().square().sum(1).mean((2, 3))
    torch.testing.assert_close(net.parameter_strength(lambda_p, p_reg), lambda_p * curvature)
    # the paper's absolute lambda_p does not have this property
    absolute = PINQI(model, replace(config, lambda_p_relative=False)).double()
    bright, dim = fit(absolute, images, p_reg), fit(absolute, 0.1 * images, scale * p_reg)
    assert float((dim[:, 2] - bright[:, 2]).abs().amax()) > 1e-2


def test_without_image_regulariser_equals_full_network_at_zero_lambda_y():
    model, kspace, coils, mask, _ = tiny_problem()
    full = PINQI(model, TINY)
    ablated = PINQI(model, replace(TINY, use_image_regulariser=False))
    assert ablated.image_net is None
    shared = {k: v for k, v in full.state_dict().items() if not k.startswith("image_net.")}
    ablated.load_state_dict(shared)
    with torch.no_grad():
        reference = ablated(kspace, coils, mask)
        with_y_theta = full(kspace, coils, mask)
        full.raw_lambda_y.fill_(-float("inf"))
        at_zero_lambda_y = full(kspace, coils, mask)
    for ours, theirs in zip(reference.parameters, at_zero_lambda_y.parameters, strict=True):
        assert torch.equal(ours, theirs)
    for ours, theirs in zip(reference.images, at_zero_lambda_y.images, strict=True):
        assert torch.equal(ours, theirs)
    # the comparison can tell: with lambda_y > 0, Y_theta changes the result
    assert not torch.allclose(with_y_theta.parameters[-1], reference.parameters[-1])


def test_output_reports_each_solve_of_each_iteration():
    # float64, so that the reports can be recomputed closely from the iterates
    model, kspace, coils, mask, _ = tiny_problem()
    net = PINQI(model, replace(TINY, use_image_regulariser=False)).double()
    kspace, coils = kspace.to(torch.complex128), coils.to(torch.complex128)
    with torch.no_grad():
        out = net(kspace, coils, mask)
    assert len(out.cg_infos) == len(out.fit_infos) == TINY.iterations
    for info in out.cg_infos + out.fit_infos:
        assert info.residual.shape == info.converged.shape == (2,)
    assert all(1 <= info.iterations <= TINY.cg_iterations for info in out.cg_infos)
    assert all(1 <= info.iterations <= TINY.fit_iterations for info in out.fit_infos)
    lam = net.strengths()
    acquisition = CartesianAcquisition(coils, mask)
    for i in range(TINY.iterations):
        # CG: relative residual of (A^H A + lambda_q I) y_i = A^H k + lambda_q q(p_{i-1})
        y, lam_q = out.images[i + 1], lam["lambda_q"][i]
        rhs = acquisition.adjoint(kspace) + lam_q * model(out.parameters[i])
        residual = acquisition.gram(y) + lam_q * y - rhs
        relative = residual.flatten(1).norm(dim=1) / rhs.flatten(1).norm(dim=1)
        torch.testing.assert_close(out.cg_infos[i].residual, relative, rtol=1e-6, atol=1e-12)
        # fit: worst per-pixel gradient norm of ||q(p) - y_i||^2 + lambda_p ||p - p_reg||^2
        p = out.parameters[i + 1].clone().requires_grad_(True)
        objective = (model(p) - y).abs() ** 2
        penalty = lam["lambda_p"][i] * (p - out.parameter_priors[i + 1]) ** 2
        (gradient,) = torch.autograd.grad(objective.sum() + penalty.sum(), p)
        worst = gradient.norm(dim=1).flatten(1).amax(1)
        torch.testing.assert_close(out.fit_infos[i].residual, worst, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize(
    "changes",
    [
        {"use_image_regulariser": False},
        {"use_parameter_regulariser": False},
        {"use_signal_fit": False},
        {"iterate_networks": False},
    ],
)
def test_ablations_run(changes):
    model, kspace, coils, mask, truth = tiny_problem()
    config = PINQIConfig(**{**TINY.__dict__, **changes})
    net = PINQI(model, config)
    out = net(kspace, coils, mask)
    ((out.parameters[-1] - truth) ** 2).mean().backward()
    if changes.get("use_image_regulariser") is False:
        assert net.image_net is None
    if changes.get("use_parameter_regulariser") is False:
        assert net.raw_start.grad is not None  # the constant start is learned


def test_an_ablation_without_any_parameter_estimate_is_refused():
    with pytest.raises(ValueError, match="cannot both be off"):
        replace(TINY, use_parameter_regulariser=False, use_signal_fit=False)


def test_parameter_counts_match_the_paper():
    net = PINQI(SaturationRecovery((0.5, 1.0, 1.5, 2.0, 8.0)), PINQIConfig())
    parameter = sum(p.numel() for p in net.parameter_net.parameters())
    image = sum(p.numel() for p in net.image_net.parameters())
    assert abs(parameter - 2_235_308) / 2_235_308 < 0.001
    film = sum(
        p.numel() for n, p in net.image_net.named_parameters() if "film" in n or "embedding" in n
    )
    assert abs(image - film - 597_323) / 597_323 < 0.001  # the paper's count without FiLM


def test_unet_blocks_start_pixelwise():
    block = ResidualBlock(4, 4, pseudo3d=False, embedding_dim=8)
    x = torch.randn(2, 4, 8, 8)
    out = block(x, torch.zeros(2, 8))
    torch.testing.assert_close(out, torch.nn.functional.silu(x), atol=0.05, rtol=0)
    film = FiLM(8, 4)
    torch.testing.assert_close(film(x, torch.randn(2, 8)), x)


def test_unet_rejects_indivisible_size():
    net = UNet(2, 3, (8, 16, 24))
    with pytest.raises(ValueError, match="divisible by 2\\*\\*3"):
        net(torch.randn(1, 2, 12, 12), torch.zeros(1))


def test_pseudo3d_unet_shape():
    net = UNet(2, 2, (8, 16), pseudo3d=True)
    assert net(torch.randn(2, 2, 5, 16, 16), torch.ones(2)).shape == (2, 2, 5, 16, 16)
