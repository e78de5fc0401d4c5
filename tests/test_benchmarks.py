import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "solvers.py"


@pytest.mark.slow
def test_solver_benchmark_runs_on_a_small_problem():
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--size",
            "32",
            "--batch",
            "1",
            "--repeats",
            "1",
            "--lambdas",
            "1",
            "--cg-iterations",
            "3",
            "10",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    assert "time ratio lbfgs / newton" in result.stdout
    assert "failed" not in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 10 |")]
    assert len(rows) == 1
