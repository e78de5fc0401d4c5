"""The solver diagnostics that training logs are the solvers' own reports of that step."""

import csv
import warnings

import numpy as np
import torch

from pinqi.config import ExperimentConfig
from pinqi.nets.pinqi import PINQI
from pinqi.training import run

from test_training import TINY


def test_logged_cg_residual_and_fit_unconverged_are_the_solvers_reports(tmp_path, monkeypatch):
    reports = []  # (cg_infos, fit_infos) of every training forward, in order
    forward = PINQI.forward

    def recording_forward(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        if self.training:
            reports.append((out.cg_infos, out.fit_infos))
        return out

    monkeypatch.setattr(PINQI, "forward", recording_forward)
    optim = {**TINY["optim"], "max_steps": 4}  # steps 0-1 pretraining, 2-3 end to end
    # two fit iterations: part of the pixels converge, part do not
    model = {**TINY["model"], "fit_iterations": 2}
    config = ExperimentConfig.from_dict({**TINY, "model": model, "optim": optim})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the solvers' convergence warnings
        run.train(config, tmp_path / "run")
    with open(tmp_path / "run" / "logs" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train_loss")]
    logged = [r for r in rows if r.get("cg_residual")]
    assert [int(r["step"]) for r in logged] == [2, 3] and len(reports) == 2
    for row, (cg_infos, fit_infos) in zip(logged, reports, strict=True):
        assert len(cg_infos) == len(fit_infos) == 2  # one CG and one fit per iteration
        # the worst relative CG residual of any iteration and batch element
        worst = max(float(r) for info in cg_infos for r in info.residual)
        # unconverged fit pixels over all fitted pixels of the step
        unconverged = sum(int(info.unconverged.sum()) for info in fit_infos)
        pixels = sum(info.unconverged.numel() * info.systems for info in fit_infos)
        assert fit_infos[0].systems == 16 * 16 and 0 < unconverged < pixels
        np.testing.assert_allclose(float(row["cg_residual"]), worst, rtol=1e-5)
        np.testing.assert_allclose(float(row["fit_unconverged"]), unconverged / pixels, rtol=1e-5)
        # the logged residual is the worst, not the last iteration's or the mean
        assert worst > 0 and torch.stack([i.residual for i in cg_infos]).std() > 0
