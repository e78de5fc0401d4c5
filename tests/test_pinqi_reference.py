"""PINQI checked against references that do not go through its own forward pass (float64).

1. Finite differences of the whole unrolled network: with inner solvers that converge, the
   implicit gradients of the two layers, chained through the UNets, must be the derivative of
   the network's output.
2. A hand-written unroll of the paper's Fig. 2 algorithm (own CG, dense per-frame normal
   equations, scipy per-pixel fits) for a network whose UNets output zero, so that
   P_theta = parameter_init and Y_theta = identity.
"""

import numpy as np
import pytest
import scipy.optimize
import torch

from pinqi.nets import PINQI, PINQIConfig
from pinqi.nets.pinqi import inverse_softplus
from pinqi.physics import (
    CartesianAcquisition,
    SaturationRecovery,
    birdcage_maps,
    variable_density_mask,
)

TAU = (0.5, 1.0, 2.0)
SIZE = 16

#: Inner solvers that converge: CG stops at a relative residual of 1e-10 (complex128) after
#: ~20 iterations, far below the limit of 200; the Newton fit stops at a projected gradient of
#: 1e-9 per pixel after ~15 iterations, far below 60.
CONVERGING = PINQIConfig(
    iterations=2,
    image_features=(8, 16),
    parameter_features=(8, 16),
    cg_iterations=200,
    fit_iterations=60,
)


def problem(batch: int = 1, seed: int = 0):
    """Signal model, noisy undersampled complex128 k-space, coil maps and line mask."""
    gen = torch.Generator().manual_seed(seed)
    model = SaturationRecovery(torch.tensor(TAU, dtype=torch.float64))
    coils = birdcage_maps(3, (SIZE, SIZE), batch_size=batch, generator=gen, dtype=torch.float64)
    mask = variable_density_mask(batch, len(TAU), SIZE, acceleration=2, generator=gen)
    shape = (batch, SIZE, SIZE)
    truth = torch.stack(
        [
            0.5 + 0.5 * torch.rand(shape, generator=gen, dtype=torch.float64),
            0.1 * torch.randn(shape, generator=gen, dtype=torch.float64),
            0.3 + 2 * torch.rand(shape, generator=gen, dtype=torch.float64),
        ],
        1,
    )
    acquisition = CartesianAcquisition(coils, mask)
    kspace = acquisition(model(truth))
    noise = torch.randn(kspace.shape, generator=gen, dtype=torch.complex128)
    return model, kspace + 0.01 * noise * mask.unsqueeze(2), coils, mask


def perturbed_network(model, seed: int = 1) -> PINQI:
    """The converging float64 network with weights that matter.

    The UNet heads start small, the ReZero alphas at 1e-3 and FiLM at zero, so at
    initialisation most weights barely change the output; here alpha = 0.5, the heads are
    N(0, 0.1) and FiLM N(0, 0.05).
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = PINQI(model, CONVERGING).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, weight in net.named_parameters():
            if name.endswith(".alpha"):
                weight.fill_(0.5)
            elif ".head." in name or ".film." in name:
                std = 0.1 if ".head." in name else 0.05
                weight.copy_(std * torch.randn(weight.shape, generator=gen, dtype=weight.dtype))
    return net


def weighted_sum(out, weights: torch.Tensor) -> torch.Tensor:
    return (out.parameters[-1] * weights).sum()


def directional_difference(loss, step: float = 1e-7) -> float:
    """Central difference (L(+h) - L(-h)) / 2h; ``loss(h)`` evaluates L at offset h."""
    with torch.no_grad():
        return float(loss(step) - loss(-step)) / (2 * step)


# Step and tolerance of the finite-difference checks. Between +-h, the network is smooth
# unless a discrete event happens: a max-pooling window of a UNet picks another maximum, a
# solver stops after a different number of iterations, a fitted parameter reaches a bound.
# Such an event spoils the quotient by O(1), and its chance grows with h: with h = 1e-6 a
# pooling switch happened for 1 of 20 random weight draws, with h = 1e-7 for none of 20 (the
# draws here are seeded, so the tests are deterministic). Without one, the quotient differs
# from the derivative by the truncation O(h^2) ~ 1e-14, rounding ~1e-16 |L| / h ~ 1e-8, and the
# difference between the derivative of the truncated solvers and the implicit one, of the
# order of their tolerances (CG relative residual 1e-10, fit gradient 1e-9): ~1e-9 relative.
# Observed: 1e-10 to 1e-7. rtol = 1e-4 leaves three orders of margin, while a wrong or
# missing gradient term (a sign, a factor 2, a dropped path) shows up at 1e-2 and more.
FD_RTOL = 1e-4


def kspace_gradient_check(net, kspace, coils, mask):
    """(autograd, finite difference) directional derivatives of L(kspace) along a random d."""
    gen = torch.Generator().manual_seed(2)
    weights = torch.randn((1, 3, SIZE, SIZE), generator=gen, dtype=torch.float64)
    direction = torch.randn(kspace.shape, generator=gen, dtype=kspace.dtype)
    leaf = kspace.clone().requires_grad_(True)
    out = net(leaf, coils, mask)
    assert all(bool(info.converged.all()) for info in out.cg_infos + out.fit_infos)
    weighted_sum(out, weights).backward()
    # PyTorch's complex gradient is dL/dRe + i dL/dIm, so dL = Re <grad, d>
    analytic = float((leaf.grad.conj() * direction).sum().real)
    numeric = directional_difference(
        lambda h: weighted_sum(net(kspace + h * direction, coils, mask), weights)
    )
    return analytic, numeric


def test_kspace_gradient_of_the_network_equals_finite_differences():
    model, kspace, coils, mask = problem()
    net = perturbed_network(model)
    analytic, numeric = kspace_gradient_check(net, kspace, coils, mask)
    assert abs(numeric) > 1.0
    assert analytic == pytest.approx(numeric, rel=FD_RTOL)


def test_kspace_gradient_equals_finite_differences_with_initial_images_held_fixed(monkeypatch):
    # Everything after the initial images (both implicit layers, the UNets, the parameter map)
    # carries the right k-space gradient: with y0 a constant, autograd and finite differences
    # agree; with the test above, this also covers the path through y0.
    model, kspace, coils, mask = problem()
    net = perturbed_network(model)
    y0 = net.initial_images(CartesianAcquisition(coils, mask), kspace).detach()
    monkeypatch.setattr(net, "initial_images", lambda acquisition, kspace, adjoint=None: y0)
    analytic, numeric = kspace_gradient_check(net, kspace, coils, mask)
    assert abs(numeric) > 1.0
    assert analytic == pytest.approx(numeric, rel=FD_RTOL)


@pytest.mark.parametrize(
    "names",
    [
        ["parameter_net.encoder.0.conv1.weight"],
        ["image_net.encoder.0.conv1.weight"],
        ["raw_lambda_y", "raw_lambda_q", "raw_lambda_p"],
    ],
    ids=["P_theta conv", "Y_theta conv", "strengths"],
)
def test_weight_gradient_of_the_network_equals_finite_differences(names):
    model, kspace, coils, mask = problem()
    net = perturbed_network(model)
    weights_of = dict(net.named_parameters())
    gen = torch.Generator().manual_seed(3)
    loss_weights = torch.randn((1, 3, SIZE, SIZE), generator=gen, dtype=torch.float64)
    directions = {
        name: torch.randn(weights_of[name].shape, generator=gen, dtype=torch.float64)
        for name in names
    }
    weighted_sum(net(kspace, coils, mask), loss_weights).backward()
    # a weight the backward does not reach has no .grad: its analytic derivative is zero
    analytic = sum(
        float((weights_of[n].grad * d).sum()) if weights_of[n].grad is not None else 0.0
        for n, d in directions.items()
    )
    originals = {name: weights_of[name].detach().clone() for name in names}

    def loss(h):
        for name, d in directions.items():
            weights_of[name].copy_(originals[name] + h * d)
        return weighted_sum(net(kspace, coils, mask), loss_weights)

    numeric = directional_difference(loss)
    assert abs(numeric) > 0.1  # the weights matter (typically |dL| ~ 1-300)
    assert analytic == pytest.approx(numeric, rel=FD_RTOL)


# --- the hand-written unroll of Fig. 2 ---------------------------------------------------


def dense_gram(coils: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A^H A of every frame as a dense matrix ``(batch, n_tau, N, N)``, N = H W.

    Column j is ``gram`` applied to the unit image e_j; the N unit images are passed as N
    "frames" that all use the mask of the frame in question.
    """
    n = SIZE * SIZE
    unit = torch.eye(n, dtype=torch.complex128).reshape(1, n, SIZE, SIZE)
    per_sample = []
    for b in range(coils.shape[0]):
        frames = []
        for t in range(mask.shape[1]):
            frame_mask = mask[b : b + 1, t : t + 1].expand(1, n, *mask.shape[2:])
            columns = CartesianAcquisition(coils[b : b + 1], frame_mask).gram(unit)[0]
            frames.append(columns.reshape(n, n).T)
        per_sample.append(torch.stack(frames))
    return torch.stack(per_sample)


def conjugate_gradient(matrices: torch.Tensor, rhs: torch.Tensor, x: torch.Tensor, steps: int):
    """Plain CG on the block-diagonal system of one sample: ``matrices`` ``(T, N, N)``."""

    def apply(v):
        return torch.einsum("tij,tj->ti", matrices, v)

    r = rhs - apply(x)
    p = r
    rs = torch.vdot(r.flatten(), r.flatten()).real
    for _ in range(steps):
        ap = apply(p)
        alpha = rs / torch.vdot(p.flatten(), ap.flatten()).real
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = torch.vdot(r.flatten(), r.flatten()).real
        p = r + (rs_new / rs) * p
        rs = rs_new
    return x


def saturation_recovery(p: np.ndarray) -> np.ndarray:
    """q_t = (Re M0 + i Im M0)(1 - exp(-tau_t R1)) for ``p`` ``(3, N)`` -> ``(n_tau, N)``."""
    tau = np.asarray(TAU)[:, None]
    return (p[0] + 1j * p[1]) * (1 - np.exp(-tau * p[2]))


def fit_pixel(y, p_reg, lam, start, bounds):
    """argmin_p ||q(p) - y||^2 + lam ||p - p_reg||^2 for one pixel, by scipy."""
    tau = np.asarray(TAU)
    n = len(TAU)
    root = np.sqrt(lam)

    def residual(p):
        f = 1 - np.exp(-tau * p[2])
        return np.concatenate([p[0] * f - y.real, p[1] * f - y.imag, root * (p - p_reg)])

    def jacobian(p):
        e = np.exp(-tau * p[2])
        jac = np.zeros((2 * n + 3, 3))
        jac[:n, 0] = jac[n : 2 * n, 1] = 1 - e
        jac[:n, 2] = p[0] * tau * e
        jac[n : 2 * n, 2] = p[1] * tau * e
        jac[2 * n :] = root * np.eye(3)
        return jac

    result = scipy.optimize.least_squares(
        residual, start, jac=jacobian, bounds=bounds, xtol=1e-15, ftol=1e-15, gtol=1e-15
    )
    assert result.success
    # scipy stops once the decrease of the cost drops below its rounding, at a gradient of
    # ~1e-9; three Gauss-Newton steps (no cost comparison; the minimum is inside the bounds
    # and its residual is small) take the gradient down to rounding.
    p = result.x
    for _ in range(3):
        p = p + np.linalg.lstsq(jacobian(p), -residual(p), rcond=None)[0]
    assert np.all((np.asarray(bounds[0]) < p) & (p < np.asarray(bounds[1])))
    return p


def reference_unroll(net: PINQI, kspace, coils, mask):
    """Fig. 2 with P_theta = parameter_init and Y_theta = identity, without PINQI.forward.

    Returns the images ``(batch, n_tau, N)`` and parameters ``(batch, 3, N)`` of every
    iteration 0..T.
    """
    lam = {name: value.detach().tolist() for name, value in net.strengths().items()}
    init = np.array(net.parameter_init)
    lower, upper = zip(*net.signal_model.bounds, strict=True)
    gram = dense_gram(coils, mask)
    adjoint = CartesianAcquisition(coils, mask).adjoint(kspace).flatten(2)
    n_tau, n = adjoint.shape[1:]
    eye = torch.eye(n, dtype=torch.complex128)
    images, parameters = [], []
    for b in range(len(kspace)):
        y = conjugate_gradient(gram[b], adjoint[b], adjoint[b], steps=2)
        p = np.repeat(init[:, None], n, axis=1)
        sample_images, sample_parameters = [y], [p]
        for i in range(net.config.iterations):
            lam_q, lam_y, lam_p = lam["lambda_q"][i], lam["lambda_y"][i], lam["lambda_p"][i]
            y_reg = y
            rhs = adjoint[b] + lam_q * torch.from_numpy(saturation_recovery(p)) + lam_y * y_reg
            y = torch.stack(
                [
                    torch.linalg.solve(gram[b, t] + (lam_q + lam_y) * eye, rhs[t])
                    for t in range(n_tau)
                ]
            )
            data = y.numpy()
            p = np.stack(
                [fit_pixel(data[:, j], init, lam_p, p[:, j], (lower, upper)) for j in range(n)],
                axis=1,
            )
            sample_images.append(y)
            sample_parameters.append(p)
        images.append(torch.stack(sample_images))
        parameters.append(torch.from_numpy(np.stack(sample_parameters)))
    return torch.stack(images, 1), torch.stack(parameters, 1)


def zeroed_network(model) -> PINQI:
    """A float64 network whose UNet heads are zero; strengths differ per iteration."""
    net = PINQI(model, CONVERGING).double()
    strengths = {
        "lambda_y": (0.3, 0.05),
        "lambda_q": (0.2, 0.6),
        "lambda_p": (1.5, 0.4),
    }
    with torch.no_grad():
        for head in (net.parameter_net.head, net.image_net.head):
            head.weight.zero_()
            head.bias.zero_()
        for name, values in strengths.items():
            raw = torch.tensor([inverse_softplus(v) for v in values], dtype=torch.float64)
            getattr(net, f"raw_{name}").copy_(raw)
    return net


def test_zeroed_unets_are_parameter_init_and_the_identity():
    model, _, _, _ = problem()
    net = zeroed_network(model)
    images = torch.randn((2, 3, SIZE, SIZE), dtype=torch.complex128)
    init = (
        torch.tensor(net.parameter_init, dtype=torch.float64)
        .reshape(1, -1, 1, 1)
        .expand(2, -1, SIZE, SIZE)
    )
    with torch.no_grad():
        for iteration in range(3):
            # sigmoid(logit(s)) rounds: "exactly" up to a few ulp
            torch.testing.assert_close(
                net.predict_parameters(images, iteration), init, rtol=0, atol=1e-15
            )
            assert torch.equal(net.regularise_images(images, iteration), images)


def test_zeroed_network_equals_hand_written_unroll_of_fig2():
    model, kspace, coils, mask = problem(batch=2)
    net = zeroed_network(model)
    with torch.no_grad():
        out = net(kspace, coils, mask)
    images, parameters = reference_unroll(net, kspace, coils, mask)
    assert all(bool(info.converged.all()) for info in out.cg_infos + out.fit_infos)
    init = (
        torch.tensor(net.parameter_init, dtype=torch.float64)
        .reshape(1, -1, 1, 1)
        .expand_as(out.parameters[0])
    )
    for prior in out.parameter_priors:
        torch.testing.assert_close(prior, init, rtol=0, atol=1e-15)
    # The reference is converged to rounding (dense solves; scipy plus Gauss-Newton polish).
    # The network's solvers stop at a CG relative residual of 1e-10 and a per-pixel gradient
    # norm of 1e-9 (over a fit Hessian >= 2 lambda_p = 0.8), which leaves errors of up to
    # ~1e-9 (observed: 4e-10 in the images, 1e-9 in the parameters). atol = 1e-8 is ten times
    # that, and six orders below what a wrong strength, a missing prior or a wrong start cause
    # (e.g. lambda_p of the two iterations swapped: 7e-2).
    for i in range(CONVERGING.iterations + 1):
        torch.testing.assert_close(out.images[i].flatten(2), images[i], rtol=0, atol=1e-8)
        torch.testing.assert_close(out.parameters[i].flatten(2), parameters[i], rtol=0, atol=1e-8)
    # the check is not vacuous: the iterations move the parameters far from the start
    assert float((parameters[-1] - parameters[0]).abs().amax()) > 0.1


def test_float64_network_keeps_parameter_init_to_float64_precision():
    model = SaturationRecovery(torch.tensor(TAU, dtype=torch.float64))
    net = PINQI(model, CONVERGING).double()
    expected = torch.tensor([v for v, _ in model.typical], dtype=torch.float64)
    start = net.parameters_from_output(torch.zeros(1, 3, 1, 1, dtype=torch.float64))
    torch.testing.assert_close(start.flatten(), expected, rtol=0, atol=1e-15)
