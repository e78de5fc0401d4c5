import pytest
import torch

from pinqi.physics import CartesianAcquisition, fft2c, ifft2c

from conftest import small_acquisition


def random_complex(*shape, dtype=torch.complex128, seed=0):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dot_test(dtype):
    coils, mask = small_acquisition(dtype=dtype)
    op = CartesianAcquisition(coils, mask)
    cdtype = coils.dtype
    x = random_complex(*op.image_shape, dtype=cdtype, seed=1)
    k = random_complex(*op.kspace_shape, dtype=cdtype, seed=2)
    lhs = torch.vdot(op.forward(x).flatten(), k.flatten())
    rhs = torch.vdot(x.flatten(), op.adjoint(k).flatten())
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    assert abs(lhs - rhs) <= tol * abs(lhs)


def test_autograd_vjp_equals_adjoint():
    coils, mask = small_acquisition()
    op = CartesianAcquisition(coils, mask)
    x = random_complex(*op.image_shape, seed=3).requires_grad_()
    v = random_complex(*op.kspace_shape, seed=4)
    (vjp,) = torch.autograd.grad(op.forward(x), x, v)
    torch.testing.assert_close(vjp, op.adjoint(v))


@pytest.mark.parametrize("full_mask", [False, True])
def test_gram_equals_adjoint_of_forward(full_mask):
    coils, mask = small_acquisition()
    if full_mask:
        mask = mask.expand(-1, -1, 8, -1) & (torch.rand(2, 3, 8, 8) > 0.3)
    op = CartesianAcquisition(coils, mask)
    assert (op.mask.shape[-2] == 1) != full_mask  # both paths of gram: lines along W, any mask
    x = random_complex(*op.image_shape, seed=5)
    torch.testing.assert_close(op.gram(x), op.adjoint(op.forward(x)))


def test_fully_sampled_normalized_coils_is_isometry():
    coils, _ = small_acquisition()
    op = CartesianAcquisition(coils, torch.ones(2, 3, 1, 8, dtype=torch.bool))
    x = random_complex(*op.image_shape, seed=6)
    torch.testing.assert_close(op.gram(x), x)


def test_centered_fft_is_unitary_and_centered():
    x = torch.zeros(1, 1, 8, 8, dtype=torch.complex128)
    x[..., :, :] = 1
    k = fft2c(x)
    assert abs(k[0, 0, 4, 4]) == pytest.approx(8.0)
    torch.testing.assert_close(ifft2c(k), x)


def test_forward_zero_outside_mask():
    coils, mask = small_acquisition()
    op = CartesianAcquisition(coils, mask)
    k = op.forward(random_complex(*op.image_shape, seed=7))
    unsampled = ~mask.expand(-1, -1, 8, -1).unsqueeze(2).expand_as(k)
    assert torch.all(k[unsampled] == 0)


def test_errors_name_the_problem():
    coils, mask = small_acquisition()
    with pytest.raises(ValueError, match="coil_maps must be complex"):
        CartesianAcquisition(coils.real, mask)
    with pytest.raises(ValueError, match="coil_maps"):
        CartesianAcquisition(coils[0], mask)
    with pytest.raises(ValueError, match="zero everywhere"):
        CartesianAcquisition(torch.zeros_like(coils), mask)
    with pytest.raises(ValueError, match="NaN"):
        CartesianAcquisition(coils * float("nan"), mask)
    with pytest.raises(ValueError, match="all-zero mask"):
        CartesianAcquisition(coils, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="broadcastable"):
        CartesianAcquisition(coils, mask[..., :5])
    with pytest.raises(ValueError, match=r"0 .*1"):
        CartesianAcquisition(coils, mask * 0.5)
    op = CartesianAcquisition(coils, mask)
    with pytest.raises(ValueError, match=r"kspace has shape .* \(batch, n_tau, n_coils, H, W\)"):
        op.check_kspace("kspace", torch.zeros(2, 3, 4, 8, 7, dtype=torch.complex128))


def lines_or_any_mask(full_mask: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Coil maps and a mask of 2 samples: whole lines along W, or (``full_mask``) any pixels."""
    coils, mask = small_acquisition(batch=2)
    if full_mask:
        mask = torch.rand(2, mask.shape[1], 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5
    return coils, mask


@pytest.mark.parametrize("full_mask", [False, True])
def test_all_frames_at_once_equals_frame_by_frame(full_mask):
    """The batched path (taken on GPUs) gives what the CPU's frame-by-frame path gives."""
    coils, mask = lines_or_any_mask(full_mask)
    per_frame = CartesianAcquisition(coils, mask)
    at_once = CartesianAcquisition(coils, mask)
    at_once.frames_at_once = True
    y = random_complex(*per_frame.image_shape, dtype=coils.dtype, seed=2)
    g = random_complex(*per_frame.image_shape, dtype=coils.dtype, seed=3)
    k = per_frame.forward(random_complex(*per_frame.image_shape, dtype=coils.dtype, seed=4))
    for name, args in (("forward", (y,)), ("adjoint", (k,)), ("gram", (y,))):
        torch.testing.assert_close(getattr(at_once, name)(*args), getattr(per_frame, name)(*args))
    torch.testing.assert_close(
        at_once.coil_map_gradient(y, g, k), per_frame.coil_map_gradient(y, g, k)
    )


@pytest.mark.parametrize("full_mask", [False, True])
def test_coil_map_gradient_is_the_autograd_gradient(full_mask):
    """Eq. 18's coil-map term, with and without the k-space term, against autograd."""
    coils, mask = lines_or_any_mask(full_mask)
    op = CartesianAcquisition(coils, mask)
    y = random_complex(*op.image_shape, dtype=coils.dtype, seed=2)
    g = random_complex(*op.image_shape, dtype=coils.dtype, seed=3)
    k = random_complex(*op.kspace_shape, dtype=coils.dtype, seed=4)
    for kspace in (k, None):
        maps = coils.clone().requires_grad_()
        acquisition = CartesianAcquisition(maps, mask)
        residual = -acquisition.gram(y)
        if kspace is not None:
            residual = residual + acquisition.adjoint(kspace)
        (expected,) = torch.autograd.grad((g.conj() * residual).real.sum(), maps)
        torch.testing.assert_close(op.coil_map_gradient(y, g, kspace), expected)
