import pytest
import torch

from pinqi.physics import CartesianAcquisition
from pinqi.solvers import ConvergenceWarning, conjugate_gradient, data_consistency
from pinqi.solvers.data_consistency import solve_data_consistency

from conftest import small_acquisition

TIGHT = {"max_iter": 400, "tol": 1e-13}


def problem(seed=0, batch=2, n_tau=2, n_coils=3, size=(6, 6)):
    gen = torch.Generator().manual_seed(seed)
    coils, mask = small_acquisition(batch, n_tau, n_coils, size, seed=seed)
    k = torch.randn(batch, n_tau, n_coils, *size, dtype=torch.complex128, generator=gen)
    k = k * mask.unsqueeze(2)
    priors = [
        torch.randn(batch, n_tau, *size, dtype=torch.complex128, generator=gen) for _ in range(2)
    ]
    lambdas = [
        torch.tensor([0.3, 0.7], dtype=torch.float64),
        torch.tensor(0.2, dtype=torch.float64),
    ]
    return k, coils, mask, lambdas, priors


def dense_solution(k, coils, mask, lambdas, priors):
    """Solve the normal equations with a dense matrix, independently of CG."""
    op = CartesianAcquisition(coils, mask)
    batch, n_tau, h, w = op.image_shape
    n = n_tau * h * w
    out = []
    for b in range(batch):

        def gram_b(v, b=b):
            x = torch.zeros(op.image_shape, dtype=torch.complex128)
            x[b] = v.reshape(n_tau, h, w)
            return op.gram(x)[b].reshape(-1)

        matrix = torch.stack([gram_b(e) for e in torch.eye(n, dtype=torch.complex128)], 1)
        total = sum(float(lam.expand(batch)[b]) for lam in lambdas)
        rhs = op.adjoint(k)[b].reshape(-1) + sum(
            lam.expand(batch)[b] * prior[b].reshape(-1)
            for lam, prior in zip(lambdas, priors, strict=True)
        )
        sol = torch.linalg.solve(matrix + total * torch.eye(n, dtype=torch.complex128), rhs)
        out.append(sol.reshape(n_tau, h, w))
    return torch.stack(out)


def test_solution_equals_dense_solve():
    k, coils, mask, lambdas, priors = problem()
    y = data_consistency(k, coils, mask, lambdas, priors, **TIGHT)
    torch.testing.assert_close(y, dense_solution(k, coils, mask, lambdas, priors))


def test_warm_start_gives_same_solution_in_fewer_iterations():
    k, coils, mask, lambdas, priors = problem()
    y, info = data_consistency(k, coils, mask, lambdas, priors, return_info=True, **TIGHT)
    y2, info2 = data_consistency(
        k, coils, mask, lambdas, priors, x0=y + 1e-6, return_info=True, **TIGHT
    )
    torch.testing.assert_close(y, y2)
    assert info2.iterations < info.iterations


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_implicit_equal_unrolled(dtype):
    k, coils, mask, lambdas, priors = problem(seed=1)
    cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    inputs = [k.to(cdtype), coils.to(cdtype), *(lam.to(dtype) for lam in lambdas)]
    inputs += [prior.to(cdtype) for prior in priors]
    inputs = [x.clone().requires_grad_() for x in inputs]
    weight = torch.randn(priors[0].shape, dtype=cdtype, generator=torch.Generator().manual_seed(5))
    settings = {"max_iter": 200, "tol": 1e-6 if dtype == torch.float32 else 1e-13}

    def grads(implicit):
        kk, cc, l1, l2, p1, p2 = inputs
        y = data_consistency(kk, cc, mask, [l1, l2], [p1, p2], implicit=implicit, **settings)
        loss = (weight.conj() * y).real.sum()
        return torch.autograd.grad(loss, inputs)

    tol = {"atol": 1e-4, "rtol": 1e-3} if dtype == torch.float32 else {}
    for a, b in zip(grads(True), grads(False), strict=True):
        torch.testing.assert_close(a, b, **tol)


def test_gradcheck_all_inputs():
    k, coils, mask, lambdas, priors = problem(seed=2, size=(4, 4))

    def f(kk, cc, l1, l2, p1, p2):
        return data_consistency(kk, cc, mask, [l1, l2], [p1, p2], **TIGHT)

    inputs = [x.clone().requires_grad_() for x in (k, coils, *lambdas, *priors)]
    assert torch.autograd.gradcheck(f, inputs)


def test_gradcheck_coil_maps_unnormalized():
    k, coils, mask, lambdas, priors = problem(seed=3, size=(4, 4))
    coils = (coils * (1.5 + torch.rand(coils.shape, dtype=torch.float64))).requires_grad_()

    def f(cc):
        return data_consistency(k, cc, mask, lambdas, priors, **TIGHT)

    assert torch.autograd.gradcheck(f, (coils,))


def _with_adjoint_given(kk, cc, mask, lambdas, priors, **settings):
    """The layer with A^H k computed once outside it (as PINQI's forward does)."""
    acquisition = CartesianAcquisition(cc, mask)
    y, _ = solve_data_consistency(
        acquisition,
        kk,
        [lam.expand(len(kk)) for lam in lambdas],
        priors,
        kspace_adjoint=acquisition.adjoint(kk),
        **settings,
    )
    return y


def test_gradcheck_with_the_adjoint_computed_once_outside():
    k, coils, mask, lambdas, priors = problem(seed=4, size=(4, 4))

    def f(kk, cc, l1, l2, p1, p2):
        return _with_adjoint_given(kk, cc, mask, [l1, l2], [p1, p2], **TIGHT)

    inputs = [x.clone().requires_grad_() for x in (k, coils, *lambdas, *priors)]
    assert torch.autograd.gradcheck(f, inputs)


def test_adjoint_computed_outside_gives_the_layers_values_and_gradients():
    k, coils, mask, lambdas, priors = problem(seed=5)
    inputs = [x.clone().requires_grad_() for x in (k, coils, *lambdas, *priors)]
    weight = torch.randn(priors[0].shape, dtype=k.dtype, generator=torch.Generator().manual_seed(6))

    def value_and_grads(layer):
        kk, cc, l1, l2, p1, p2 = inputs
        y = layer(kk, cc, mask, [l1, l2], [p1, p2], **TIGHT)
        return y, torch.autograd.grad((weight.conj() * y).real.sum(), inputs)

    y_given, grads_given = value_and_grads(_with_adjoint_given)
    y_layer, grads_layer = value_and_grads(data_consistency)
    torch.testing.assert_close(y_given, y_layer)
    for a, b in zip(grads_given, grads_layer, strict=True):
        torch.testing.assert_close(a, b)


def test_memory_of_implicit_layer_independent_of_iterations():
    """The implicit layer saves the same tensors whatever max_iter is."""
    k, coils, mask, lambdas, priors = problem()
    priors = [p.requires_grad_() for p in priors]

    def saved_bytes(max_iter, implicit):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            data_consistency(
                k, coils, mask, lambdas, priors, max_iter=max_iter, tol=0, implicit=implicit
            )
        return total

    with pytest.warns(ConvergenceWarning):
        assert saved_bytes(5, True) == saved_bytes(40, True)
        assert saved_bytes(40, False) > 4 * saved_bytes(5, False)


def test_not_converged_warns():
    k, coils, mask, lambdas, priors = problem()
    with pytest.warns(ConvergenceWarning, match="data_consistency"):
        data_consistency(k, coils, mask, lambdas, priors, max_iter=1, tol=1e-12)


def test_cg_zero_rhs_and_info():
    def operator(x):
        return 2 * x

    x, info = conjugate_gradient(operator, torch.zeros(3, 4), max_iter=5, tol=1e-6)
    assert torch.all(x == 0) and info.iterations == 0 and bool(info.converged.all())
    b = torch.randn(3, 4, dtype=torch.float64)
    x, info = conjugate_gradient(operator, b, max_iter=5, tol=1e-12)
    torch.testing.assert_close(x, b / 2)
    assert info.not_converged == 0


def test_bad_inputs_raise_clear_errors():
    k, coils, mask, lambdas, priors = problem()
    with pytest.raises(ValueError, match="kspace has shape"):
        data_consistency(k[..., :5], coils, mask, lambdas, priors)
    with pytest.raises(ValueError, match="same length"):
        data_consistency(k, coils, mask, lambdas, priors[:1])
    with pytest.raises(ValueError, match=r"lambdas\[0\] must be non-negative"):
        data_consistency(k, coils, mask, [-lambdas[0], lambdas[1]], priors)
    with pytest.raises(ValueError, match=r"lambdas\[1\] must be a scalar or have shape"):
        data_consistency(k, coils, mask, [lambdas[0], torch.ones(3)], priors)
    with pytest.raises(ValueError, match=r"priors\[1\] contains NaN"):
        data_consistency(k, coils, mask, lambdas, [priors[0], priors[1] * float("nan")])
    with pytest.raises(ValueError, match=r"priors\[0\] must be complex"):
        data_consistency(k, coils, mask, lambdas, [priors[0].real, priors[1]])
    with pytest.raises(ValueError, match="kspace contains NaN"):
        data_consistency(k * float("inf"), coils, mask, lambdas, priors)
