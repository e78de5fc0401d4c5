"""Benchmark of the two differentiable optimization layers.

(a) Signal fit, forward + backward: ``newton`` vs ``lbfgs`` (the paper's method), with each
    one's objective and gradient error against a float64 reference solved in the same run.
(b) CG data-consistency layer: peak memory and time of forward + backward, implicit vs
    unrolled, at several CG iteration counts. Every configuration runs in fresh subprocesses:
    one for the time, one for the memory with ``MALLOC_MMAP_THRESHOLD_=131072`` (so that the
    resident set size follows the live tensors); the reported memory is the peak resident size
    during the call (VmHWM, reset just before it) minus the resident size before it.

Usage: ``python benchmarks/solvers.py`` (defaults: 192x192, batch 4, 5 delays, 8 coils,
float32); ``--help`` lists the options. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

import torch

from pinqi.physics import (
    CartesianAcquisition,
    SaturationRecovery,
    birdcage_maps,
    variable_density_mask,
)
from pinqi.solvers import ConvergenceWarning, data_consistency, signal_fit

from _measure import machine, reset_peak, run_worker, status_bytes

TAU = (0.5, 1.0, 1.5, 2.0, 8.0)


def fit_problem(size: int, batch: int, noise: float, seed: int = 0):
    """Brain-like parameters, noisy images and a perturbed prior (float64)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, size, size)
    magnitude = 0.5 + 0.5 * torch.rand(shape, generator=gen, dtype=torch.float64)
    phase = 0.2 * torch.randn(shape, generator=gen, dtype=torch.float64)
    t1 = 0.3 + 3.7 * torch.rand(shape, generator=gen, dtype=torch.float64)
    truth = torch.stack([magnitude * torch.cos(phase), magnitude * torch.sin(phase), 1 / t1], 1)
    model = SaturationRecovery(TAU)
    clean = model(truth)
    images = clean + noise * torch.randn(clean.shape, generator=gen, dtype=clean.dtype)
    p_reg = truth * (1 + 0.1 * torch.randn(truth.shape, generator=gen, dtype=truth.dtype))
    weight = torch.randn(truth.shape, generator=gen, dtype=truth.dtype)
    return model, images, p_reg, weight


def objective(model, p, images, p_reg, lam) -> float:
    data = (model(p) - images).abs().pow(2).sum(1)
    return float((data + lam * (p - p_reg).pow(2).sum(1)).sum())


def fit_with_gradients(model, images, p_reg, lam, weight, **settings):
    inputs = [images.clone().requires_grad_(), p_reg.clone().requires_grad_()]
    lam_t = torch.tensor(lam, dtype=p_reg.dtype, requires_grad=True)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        p, info = signal_fit(model, *inputs, lam_t, return_info=True, **settings)
        forward = time.perf_counter() - start
        grads = torch.autograd.grad((weight.to(p.dtype) * p).sum(), [*inputs, lam_t])
    total = time.perf_counter() - start
    return p.detach(), [g.detach() for g in grads], info, forward, total


def bench_signal_fit(size: int, batch: int, lam: float, noise: float, repeats: int) -> list[str]:
    model, images, p_reg, weight = fit_problem(size, batch, noise)
    reference, ref_grads, ref_info, _, _ = fit_with_gradients(
        model, images, p_reg, lam, weight, tol=1e-12, max_iter=200
    )
    assert ref_info.not_converged == 0, "float64 reference did not converge"
    f_ref = objective(model, reference, images, p_reg, lam)
    images32, p_reg32 = images.to(torch.complex64), p_reg.float()
    rows, totals = [], {}
    for solver, n in (("newton", repeats), ("lbfgs", max(1, repeats // 3))):
        runs = [
            fit_with_gradients(model, images32, p_reg32, lam, weight, solver=solver)
            for _ in range(n)
        ]
        p, grads, info, _, _ = runs[-1]
        forward = statistics.median(r[3] for r in runs)
        total = statistics.median(r[4] for r in runs)
        totals[solver] = total
        excess = (objective(model, p.double(), images, p_reg, lam) - f_ref) / f_ref
        grad_err = [
            float((g.to(r.dtype) - r).norm() / r.norm())
            for g, r in zip(grads, ref_grads, strict=True)
        ]
        rows.append(
            f"| {solver} | {forward:.3f} | {total:.3f} | {info.iterations} | "
            f"{info.not_converged} | {excess:.1e} | "
            f"{float((p.double() - reference).abs().max()):.1e} | "
            + " | ".join(f"{e:.1e}" for e in grad_err)
            + " |"
        )
    header = [
        f"lambda = {lam}, noise sigma = {noise}; float64 reference: newton, tol 1e-12, "
        f"{ref_info.iterations} iterations, objective {f_ref:.6g}",
        "",
        "| solver | forward [s] | forward+backward [s] | iterations | pixels not converged "
        "| objective excess (F-F_ref)/F_ref | max abs p error | grad error images "
        "| grad error p_reg | grad error lambda |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratio = totals["lbfgs"] / totals["newton"]
    return [*header, *rows, "", f"forward+backward time ratio lbfgs / newton: **{ratio:.1f}x**"]


def cg_problem(size: int, batch: int, n_coils: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    coils = birdcage_maps(n_coils, (size, size), batch_size=batch, generator=gen)
    mask = variable_density_mask(batch, len(TAU), size, acceleration=8, generator=gen)
    acquisition = CartesianAcquisition(coils, mask)
    model = SaturationRecovery(TAU)
    truth = torch.rand(batch, 3, size, size, generator=gen)
    kspace = acquisition.forward(model(truth))
    prior = model(truth * 0.9).requires_grad_()
    return kspace, coils, mask, prior


def cg_worker(size: int, batch: int, n_coils: int, iterations: int, implicit: bool) -> None:
    """Run one forward + backward of the CG layer and print its time and peak memory (JSON)."""

    def layer(kspace, coils, mask, prior, iterations):
        lambdas = [torch.tensor(0.1, requires_grad=True)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            y = data_consistency(
                kspace,
                coils,
                mask,
                lambdas,
                [prior],
                max_iter=iterations,
                tol=0.0,
                implicit=implicit,
            )
            y.abs().sum().backward()

    problem = cg_problem(size, batch, n_coils)
    layer(*problem, 1)  # one-off initialisation (FFT plans, thread pool) outside the measurement
    rss_before = reset_peak()
    start = time.perf_counter()
    layer(*problem, iterations)
    seconds = time.perf_counter() - start
    peak = status_bytes("VmHWM")
    print(json.dumps({"seconds": seconds, "peak_bytes": peak - rss_before}))


def bench_cg(size: int, batch: int, n_coils: int, iterations: list[int]) -> list[str]:
    """Time (normal malloc) and peak memory (mmap threshold set), each in a fresh process."""
    rows = [
        "| CG iterations | implicit: time [s] | implicit: peak memory [MB] "
        "| unrolled: time [s] | unrolled: peak memory [MB] | memory ratio unrolled / implicit |",
        "|---|---|---|---|---|---|",
    ]
    for n in iterations:
        cells, peaks = [], []
        for implicit in (1, 0):
            args = [size, batch, n_coils, n, implicit]
            timing = run_worker(__file__, args, memory=False)
            memory = run_worker(__file__, args, memory=True)
            cells.append("failed" if timing is None else f"{timing['seconds']:.2f}")
            cells.append("failed" if memory is None else f"{memory['peak_bytes'] / 2**20:.0f}")
            peaks.append(None if memory is None else memory["peak_bytes"])
        ratio = f"{peaks[1] / peaks[0]:.1f}x" if None not in peaks else "n/a"
        rows.append(f"| {n} | " + " | ".join(cells) + f" | {ratio} |")
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        size, batch, n_coils, n, implicit = map(int, sys.argv[2:7])
        cg_worker(size, batch, n_coils, n, bool(implicit))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (newton)")
    parser.add_argument("--cg-iterations", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument(
        "--lambdas",
        type=float,
        nargs="*",
        default=[3.0, 0.01],
        help="signal-fit regularization strengths to benchmark",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"machine: {machine()}")
    print(
        f"problem: {args.size}x{args.size}, batch {args.batch}, {len(TAU)} delays {TAU} s, "
        f"{args.coils} coils, float32\n"
    )
    print("## (a) Signal fit, forward + backward (newton vs lbfgs)\n")
    for lam in args.lambdas:
        print("\n".join(bench_signal_fit(args.size, args.batch, lam, 0.02, args.repeats)))
        print()
    print("## (b) CG data-consistency layer, forward + backward, acceleration 8\n")
    print("\n".join(bench_cg(args.size, args.batch, args.coils, args.cg_iterations)))


if __name__ == "__main__":
    main()
