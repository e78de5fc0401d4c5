import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import least_squares

from pinqi.physics import InversionRecovery, InversionRecoveryAB, SaturationRecovery
from pinqi.solvers import ConvergenceWarning, signal_fit
from pinqi.solvers.bounds import TrigBounds

from conftest import TAU, random_ab_parameters, random_parameters

MODELS = [SaturationRecovery, InversionRecovery]


def fit_problem(model, shape=(4, 5), noise=0.01, prior_noise=0.1, seed=0, lam=0.3):
    """Noisy images of random parameters and a perturbed prior, float64."""
    gen = torch.Generator().manual_seed(seed)
    truth = random_parameters(2, shape, gen)
    clean = model(truth)
    images = clean + noise * torch.randn(clean.shape, dtype=clean.dtype, generator=gen)
    p_reg = truth + prior_noise * torch.randn(truth.shape, dtype=truth.dtype, generator=gen)
    return images, p_reg, torch.tensor([lam, lam / 3], dtype=torch.float64), truth


def scipy_fit(model, images, p_reg, lam):
    """Independent reference: scipy's bounded least squares, one pixel at a time."""
    lower = np.array([lo for lo, _ in model.bounds])
    upper = np.array([hi for _, hi in model.bounds])
    batch = images.shape[0]
    y = images.reshape(batch, model.n_tau, -1).numpy()
    prior = p_reg.reshape(batch, model.n_params, -1).numpy()
    lam = (lam.reshape(-1, 1) if lam.ndim < 2 else lam).expand(batch, model.n_params).numpy()
    out = np.empty_like(prior)
    for b in range(batch):
        for i in range(y.shape[-1]):

            def residuals(x, b=b, i=i):
                q = model(torch.from_numpy(x).reshape(1, -1, 1))[0, :, 0].numpy()
                r = q - y[b, :, i]
                penalty = np.sqrt(lam[b]) * (x - prior[b, :, i])
                return np.concatenate([r.real, r.imag, penalty])

            start = np.clip(prior[b, :, i], lower + 1e-9, upper - 1e-9)
            result = least_squares(
                residuals, start, bounds=(lower, upper), xtol=1e-15, ftol=1e-15, gtol=1e-15
            )
            out[b, :, i] = result.x
    return torch.from_numpy(out).reshape(p_reg.shape)


def objective(model, p, images, p_reg, lam):
    data = (model(p) - images).abs().pow(2).sum(1)
    lam = lam.reshape(-1, 1, 1, 1) if lam.ndim < 2 else lam[..., None, None]
    return data + (lam * (p - p_reg).pow(2)).sum(1)


CASES = {
    "normal": {"noise": 0.01, "lam": 0.3},
    "low_snr": {"noise": 0.2, "lam": 0.05},
    "weak_prior": {"noise": 0.02, "lam": 1e-3},
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("model_cls", MODELS)
def test_newton_matches_scipy(model_cls, case):
    model = model_cls(TAU)
    images, p_reg, lam, _ = fit_problem(model, **CASES[case])
    reference = scipy_fit(model, images, p_reg, lam)
    p, info = signal_fit(model, images, p_reg, lam, tol=1e-11, return_info=True)
    assert info.not_converged == 0
    f_newton = objective(model, p, images, p_reg, lam)
    f_scipy = objective(model, reference, images, p_reg, lam)
    assert torch.all(f_newton <= f_scipy + 1e-12)
    torch.testing.assert_close(p, reference, atol=1e-6, rtol=0)


@pytest.mark.parametrize("model_cls", MODELS)
def test_lbfgs_matches_scipy(model_cls):
    model = model_cls(TAU)
    images, p_reg, lam, _ = fit_problem(model, noise=0.05)
    reference = scipy_fit(model, images, p_reg, lam)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        p = signal_fit(model, images, p_reg, lam, solver="lbfgs", tol=1e-10, max_iter=2000)
    torch.testing.assert_close(p, reference, atol=1e-5, rtol=0)


def test_t1_near_and_beyond_bounds():
    """Short delays resolve T1 down to 30 ms: R1 beyond the upper bound 20 1/s, near it, and a
    very long T1 (R1 = 0.05 1/s)."""
    model = SaturationRecovery((0.01, 0.05, 0.1, 0.5, 2.0))
    truth = torch.tensor([[0.9, 0.1, 30.0], [0.8, -0.1, 19.5], [0.7, 0.0, 0.05]])
    truth = truth.double().T.reshape(1, 3, 1, 3)
    images = model(truth)
    gen = torch.Generator().manual_seed(1)
    images = images + 1e-3 * torch.randn(images.shape, dtype=images.dtype, generator=gen)
    p_reg = truth.clone()
    p_reg[:, 2] = torch.tensor([15.0, 15.0, 0.5], dtype=torch.float64)
    lam = torch.tensor(1e-4, dtype=torch.float64)
    reference = scipy_fit(model, images, p_reg, lam)
    p = signal_fit(model, images, p_reg, lam, tol=1e-11)
    torch.testing.assert_close(p, reference, atol=1e-6, rtol=0)
    assert float(p[0, 2, 0, 0]) == 20.0  # held by the upper bound of R1
    assert 17.0 < float(p[0, 2, 0, 1]) < 20.0  # near, not on, the bound
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        p_lbfgs = signal_fit(model, images, p_reg, lam, solver="lbfgs", max_iter=3000)
    # the transform's bounds are open: L-BFGS approaches 20 asymptotically (to rounding)
    assert 19.9 < float(p_lbfgs[0, 2, 0, 0]) <= 20.0
    torch.testing.assert_close(p_lbfgs[..., 1:], reference[..., 1:], atol=1e-4, rtol=0)


def test_solution_never_nan_for_extreme_data():
    model = SaturationRecovery(TAU)
    images = torch.zeros(1, 5, 2, 2, dtype=torch.complex64)
    images[0, :, 0, 0] = 1e4
    images[0, :, 1, 1] = -1e4j
    p_reg = torch.zeros(1, 3, 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for solver in ("newton", "lbfgs"):
            p = signal_fit(model, images, p_reg, 0.0, solver=solver)
            assert torch.isfinite(p).all()
            assert torch.all(p[:, :2].abs() <= 2) and torch.all(p[:, 2] <= 20)


def gradcheck_inputs(model, seed=3, shape=(2, 3)):
    images, p_reg, lam, _ = fit_problem(model, shape=shape, seed=seed, noise=0.02)
    return images.requires_grad_(), p_reg.requires_grad_(), lam.requires_grad_()


@pytest.mark.parametrize("model_cls", MODELS)
def test_gradcheck_newton(model_cls):
    model = model_cls(TAU)

    def f(images, p_reg, lam):
        return signal_fit(model, images, p_reg, lam, tol=1e-13, max_iter=100)

    assert torch.autograd.gradcheck(f, gradcheck_inputs(model))


@pytest.mark.parametrize("model_cls", MODELS)
def test_gradcheck_lbfgs(model_cls):
    model = model_cls(TAU)

    def f(images, p_reg, lam):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return signal_fit(model, images, p_reg, lam, solver="lbfgs", tol=1e-12, max_iter=3000)

    inputs = gradcheck_inputs(model, shape=(1, 2))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-4, atol=1e-4, rtol=1e-3)


def per_parameter_strengths(n_params):
    """``(2, P)`` strengths that differ by parameter and batch element, float64."""
    return torch.linspace(0.02, 0.6, 2 * n_params, dtype=torch.float64).reshape(2, n_params)


@pytest.mark.parametrize("model_cls", MODELS)
def test_per_parameter_strength_matches_scipy(model_cls):
    model = model_cls(TAU)
    images, p_reg, _, _ = fit_problem(model, noise=0.05)
    lam = per_parameter_strengths(model.n_params)
    reference = scipy_fit(model, images, p_reg, lam)
    p = signal_fit(model, images, p_reg, lam, tol=1e-11)
    torch.testing.assert_close(p, reference, atol=1e-7, rtol=1e-6)
    # a scalar-per-batch strength is the special case of equal strengths
    shared = signal_fit(model, images, p_reg, lam[:, :1].expand(-1, model.n_params), tol=1e-11)
    torch.testing.assert_close(shared, signal_fit(model, images, p_reg, lam[:, 0], tol=1e-11))


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_gradcheck_per_parameter_strength(solver):
    model = SaturationRecovery(TAU)
    images, p_reg, _ = gradcheck_inputs(model, shape=(1, 2))
    lam = per_parameter_strengths(model.n_params).requires_grad_()

    def f(images, p_reg, lam):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return signal_fit(model, images, p_reg, lam, solver=solver, tol=1e-12, max_iter=3000)

    tolerances = {"newton": {}, "lbfgs": {"eps": 1e-4, "atol": 1e-4, "rtol": 1e-3}}[solver]
    assert torch.autograd.gradcheck(f, (images, p_reg, lam), **tolerances)


def test_strength_of_wrong_shape_is_named():
    model = SaturationRecovery(TAU)
    images, p_reg, _, _ = fit_problem(model)
    with pytest.raises(ValueError, match=r"lam must be .*\(batch, P\) = \(2, 3\), got \(2, 2\)"):
        signal_fit(model, images, p_reg, torch.ones(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="lam must be non-negative"):
        signal_fit(model, images, p_reg, -torch.ones(2, 3, dtype=torch.float64))


def test_gradcheck_scalar_lambda_and_pixel_on_bound():
    """A pixel held by the R1 bound: zero gradient through R1, correct gradient elsewhere."""
    model = SaturationRecovery(TAU)
    truth = torch.tensor([[0.9, 0.1, 30.0], [0.7, 0.0, 1.0]], dtype=torch.float64)
    truth = truth.T.reshape(1, 3, 1, 2)
    images = model(truth).requires_grad_()
    p_reg = (truth * 0.9).requires_grad_()
    lam = torch.tensor(0.01, dtype=torch.float64, requires_grad=True)

    def f(images, p_reg, lam):
        return signal_fit(model, images, p_reg, lam, tol=1e-13, max_iter=100)

    p = f(images, p_reg, lam)
    assert float(p[0, 2, 0, 0].detach()) == 20.0
    (grad_images,) = torch.autograd.grad(p[0, 2, 0, 0], images)
    assert torch.all(grad_images == 0)
    assert torch.autograd.gradcheck(f, (images, p_reg, lam))


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_implicit_gradient_matches_finite_differences_of_solution(solver):
    """Directional derivative of p*(images, p_reg, lam) by a 4th-order central stencil."""
    model = SaturationRecovery(TAU)
    images, p_reg, lam, _ = fit_problem(model, shape=(3, 3), seed=7)
    gen = torch.Generator().manual_seed(8)
    d_images = torch.randn(images.shape, dtype=images.dtype, generator=gen)
    d_p_reg = torch.randn(p_reg.shape, dtype=p_reg.dtype, generator=gen)
    d_lam = torch.rand(lam.shape, dtype=lam.dtype, generator=gen)
    weight = torch.randn(p_reg.shape, dtype=p_reg.dtype, generator=gen)
    settings = {"solver": solver, "tol": 1e-12, "max_iter": 3000}

    def loss(t):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            p = signal_fit(
                model, images + t * d_images, p_reg + t * d_p_reg, lam + t * d_lam, **settings
            )
        return float((weight * p).sum())

    h = 1e-3
    fd = (-loss(2 * h) + 8 * loss(h) - 8 * loss(-h) + loss(-2 * h)) / (12 * h)
    inputs = [x.clone().requires_grad_() for x in (images, p_reg, lam)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        p = signal_fit(model, *inputs, **settings)
    grads = torch.autograd.grad((weight * p).sum(), inputs)
    analytic = sum(
        float((g.conj() * d).real.sum()) if g.is_complex() else float((g * d).sum())
        for g, d in zip(grads, (d_images, d_p_reg, d_lam), strict=True)
    )
    assert analytic == pytest.approx(fd, rel=1e-5)


def solutions_and_gradients(model, images, p_reg, lam, weight):
    """Per solver: p* and the gradients of sum(weight p*) w.r.t. (images, p_reg, lam)."""
    results = {}
    for solver in ("newton", "lbfgs"):
        inputs = [x.clone().requires_grad_() for x in (images, p_reg, lam)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            p = signal_fit(model, *inputs, solver=solver, tol=1e-12, max_iter=3000)
        results[solver] = (p.detach(), torch.autograd.grad((weight * p).sum(), inputs))
    return results


def test_newton_and_lbfgs_gradients_agree():
    model = SaturationRecovery(TAU)
    images, p_reg, lam, _ = fit_problem(model, shape=(3, 4), seed=11)
    weight = torch.randn(p_reg.shape, dtype=p_reg.dtype, generator=torch.Generator().manual_seed(2))
    results = solutions_and_gradients(model, images, p_reg, lam, weight)
    for a, b in zip(results["newton"][1], results["lbfgs"][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_float32_solvers_agree_with_float64():
    model = SaturationRecovery(TAU)
    images, p_reg, lam, _ = fit_problem(model, shape=(8, 8), seed=4)
    reference = signal_fit(model, images, p_reg, lam, tol=1e-12)
    p32, info = signal_fit(
        model, images.to(torch.complex64), p_reg.float(), lam.float(), return_info=True
    )
    assert p32.dtype == torch.float32
    assert info.not_converged == 0
    torch.testing.assert_close(p32.double(), reference, atol=2e-4, rtol=0)


def test_convergence_report_and_warning():
    model = SaturationRecovery(TAU)
    images, p_reg, lam, _ = fit_problem(model, noise=0.1)
    with pytest.warns(ConvergenceWarning, match="signal_fit"):
        _, info = signal_fit(model, images, p_reg, lam, max_iter=1, return_info=True)
    assert info.iterations == 1
    assert info.residual.shape == (2,) and info.not_converged > 0
    assert not bool(info.converged.any())
    _, info = signal_fit(model, images, p_reg, lam, return_info=True)
    assert bool(info.converged.all()) and float(info.residual.max()) <= 1e-9


def test_start_point_p0_is_used():
    model = SaturationRecovery(TAU)
    images, p_reg, lam, _ = fit_problem(model)
    p = signal_fit(model, images, p_reg, lam, tol=1e-12)
    _, info = signal_fit(model, images, p_reg, lam, p0=p, tol=1e-10, return_info=True)
    assert info.iterations == 0


def test_bad_inputs_raise_clear_errors():
    model = SaturationRecovery(TAU)
    images, p_reg, lam, _ = fit_problem(model)
    with pytest.raises(ValueError, match="images has 4 frames"):
        signal_fit(model, images[:, :4], p_reg, lam)
    with pytest.raises(ValueError, match="p_reg has shape"):
        signal_fit(model, images, p_reg[..., :3], lam)
    with pytest.raises(ValueError, match="p_reg must have shape"):
        signal_fit(model, images, p_reg[:, :2], lam)
    with pytest.raises(ValueError, match="matching precision"):
        signal_fit(model, images, p_reg.float(), lam)
    with pytest.raises(ValueError, match="lam must be non-negative"):
        signal_fit(model, images, p_reg, -lam)
    with pytest.raises(ValueError, match="images contains NaN"):
        signal_fit(model, images * float("nan"), p_reg, lam)
    with pytest.raises(ValueError, match="solver must be"):
        signal_fit(model, images, p_reg, lam, solver="bfgs")
    with pytest.raises(TypeError, match="SignalModel"):
        signal_fit(lambda p: p, images, p_reg, lam)


def test_trig_bounds_round_trip():
    bounds = TrigBounds(SaturationRecovery.bounds)
    x = torch.tensor(
        [[-1.99, 1.5, 19.9], [0.0, -0.3, -0.99], [1.0, 1.999, 0.0]], dtype=torch.float64
    ).T.unsqueeze(0)
    torch.testing.assert_close(bounds.constrain(bounds.unconstrain(x)), x)
    z = torch.randn(1, 3, 100, dtype=torch.float64) * 10
    p = bounds.constrain(z)
    assert torch.all(p[:, :2] > -2) and torch.all(p[:, :2] < 2)
    assert torch.all(p[:, 2] >= -1) and torch.all(p[:, 2] <= 20)
    with pytest.raises(ValueError, match="lower < upper"):
        TrigBounds([(1.0, 0.0)])


def ab_problem(shape=(3, 4), noise=0.01, seed=0):
    """Incomplete inversion recovery: 5 real unknowns per pixel."""
    gen = torch.Generator().manual_seed(seed)
    model = InversionRecoveryAB((0.1, 0.3, 0.6, 1.0, 1.8, 3.0))
    truth = random_ab_parameters(2, shape, gen)
    clean = model(truth)
    images = clean + noise * torch.randn(clean.shape, dtype=clean.dtype, generator=gen)
    p_reg = truth + 0.05 * torch.randn(truth.shape, dtype=truth.dtype, generator=gen)
    return model, images, p_reg, torch.tensor([0.1, 0.03], dtype=torch.float64)


def test_newton_with_five_parameters_matches_scipy():
    model, images, p_reg, lam = ab_problem()
    reference = scipy_fit(model, images, p_reg, lam)
    p, info = signal_fit(model, images, p_reg, lam, tol=1e-11, return_info=True)
    assert p.shape == (2, 5, 3, 4) and info.not_converged == 0
    f_newton = objective(model, p, images, p_reg, lam)
    assert torch.all(f_newton <= objective(model, reference, images, p_reg, lam) + 1e-12)
    torch.testing.assert_close(p, reference, atol=1e-6, rtol=0)


def test_gradcheck_five_parameters_newton():
    model, images, p_reg, lam = ab_problem(shape=(1, 2), seed=3)

    def f(images, p_reg, lam):
        return signal_fit(model, images, p_reg, lam, tol=1e-13, max_iter=200)

    inputs = (images.requires_grad_(), p_reg.requires_grad_(), lam.requires_grad_())
    assert torch.autograd.gradcheck(f, inputs)


def test_lbfgs_gradients_with_five_parameters_match_newton():
    """The whole-batch L-BFGS converges too loosely on this ill-conditioned model for finite
    differences of its solution map; its implicit backward is checked against newton's."""
    model, images, p_reg, lam = ab_problem(shape=(2, 2), seed=4)
    weight = torch.randn(p_reg.shape, dtype=p_reg.dtype, generator=torch.Generator().manual_seed(1))
    grads = {}
    for solver in ("newton", "lbfgs"):
        inputs = [x.clone().requires_grad_() for x in (images, p_reg, lam)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            p = signal_fit(model, *inputs, solver=solver, tol=1e-12, max_iter=5000)
        grads[solver] = torch.autograd.grad((weight * p).sum(), inputs)
    for a, b in zip(grads["newton"], grads["lbfgs"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_lbfgs_gradients_near_the_trigonometric_bounds_match_newton():
    """A pixel pressed against the R1 bound: the lbfgs backward works in the solver's variables.

    L-BFGS stops where dF/dz = dF/dp h cos(z) vanishes, which near a bound is not dF/dp = 0; a
    p-space Hessian there gives a gradient through R1 that newton (and gradcheck, above)
    show to be zero.
    """
    model = SaturationRecovery(TAU)
    truth = torch.tensor([[0.9, 0.1, 30.0], [0.7, 0.0, 1.0]], dtype=torch.float64)
    truth = truth.T.reshape(1, 3, 1, 2)
    images = model(truth)
    p_reg = truth * 0.9
    lam = torch.tensor(0.01, dtype=torch.float64)
    weight = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64).reshape(1, 3, 1, 1)
    results = solutions_and_gradients(model, images, p_reg, lam, weight)
    for p, _ in results.values():
        assert float(p[0, 2, 0, 0]) == pytest.approx(20.0, abs=1e-5)
    for a, b in zip(results["newton"][1], results["lbfgs"][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
