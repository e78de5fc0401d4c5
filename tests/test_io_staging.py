"""A failed command leaves no half-written output."""

import pytest

from pinqi.cli import main
from pinqi.data.datasets import SimulatedDataset, write_h5
from pinqi.data.simulation import SimulationConfig
from pinqi.io.staging import staged_file, staged_folder


def test_staged_folder_and_file_appear_only_when_complete(tmp_path):
    with pytest.raises(RuntimeError), staged_folder(tmp_path / "out") as staging:
        (staging / "a.txt").write_text("partial")
        raise RuntimeError("interrupted")
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("earlier")
    with staged_folder(tmp_path / "out") as staging:
        (staging / "a.txt").write_text("done")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "keep.txt"]
    with pytest.raises(RuntimeError), staged_file(tmp_path / "f.h5") as path:
        path.write_text("partial")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_interrupted_simulation_and_reconstruction_write_nothing(tmp_path, monkeypatch):
    class Failing(SimulatedDataset):
        def __getitem__(self, index):
            if index == 1:
                raise KeyboardInterrupt
            return super().__getitem__(index)

    with pytest.raises(KeyboardInterrupt):
        write_h5(tmp_path / "d.h5", Failing(SimulationConfig(size=96), "test", 3), False)
    assert list(tmp_path.iterdir()) == []
    main(["simulate", "--out", str(tmp_path / "d.h5"), "--n-samples", "1", "--size", "96",
          "--quiet"])  # fmt: skip
    import pinqi.evaluation.figures as figures

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(figures, "plot_parameter_maps", broken)
    with pytest.raises(OSError, match="disk full"):
        main(["reconstruct", "--data", str(tmp_path / "d.h5"), "--out", str(tmp_path / "r"),
              "--no-check"])  # fmt: skip
    assert not (tmp_path / "r").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5", "d.png"]


def test_staged_outputs_follow_the_users_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        with staged_file(tmp_path / "f.h5") as path:
            path.write_text("done")
        with staged_folder(tmp_path / "out") as staging:
            (staging / "a.txt").write_text("done")
    finally:
        os.umask(old)
    for written in (tmp_path / "f.h5", tmp_path / "out" / "a.txt"):
        assert stat.S_IMODE(written.stat().st_mode) == 0o644, written
