import json

import numpy as np
import pytest

pytest.importorskip("pypulseq")

from pinqi.cli import main
from pinqi.physics import variable_density_mask
from pinqi.sequences.saturation_recovery import (
    SequenceSettings,
    build_sequence,
    centre_out,
)

SMALL = SequenceSettings(tau=(0.5, 2.0), size=32, acceleration=4.0, seed=3)


def test_kspace_order_matches_the_masks():
    """The phase-encoding area before every ADC walks through each frame's mask centre-out."""
    import torch

    seq, orders = build_sequence(SMALL)
    ok, errors = seq.check_timing()
    assert ok, errors
    delta_k = 1 / (SMALL.fov_mm * 1e-3)
    lines, previous = [], None
    for index in range(1, len(seq.block_events) + 1):
        block = seq.get_block(index)
        if block.adc is not None:
            lines.append(round(previous.gy.area / delta_k) + SMALL.size // 2)
        previous = block
    masks = variable_density_mask(
        1, 2, 32, acceleration=4.0, generator=torch.Generator().manual_seed(3)
    )[0, :, 0].numpy()
    expected = [k for mask in masks for k in centre_out(np.flatnonzero(mask), 32)]
    assert lines == expected == [k for order in orders for k in order]
    assert lines[0] == 16  # the centre line comes first, at tau


def test_cli_sequence_writes_seq_and_masks(tmp_path, capsys):
    main(
        [
            "sequence",
            "--out",
            str(tmp_path),
            "--tau",
            "0.5,2",
            "--size",
            "32",
            "--acceleration",
            "4",
            "--seed",
            "3",
        ]
    )
    assert "timing check passed" in capsys.readouterr().out
    assert (tmp_path / "saturation_recovery.seq").read_text().startswith("#")
    masks = np.load(tmp_path / "masks.npy")
    assert masks.shape == (2, 32) and masks.sum(1).tolist() == [8, 8]
    info = json.loads((tmp_path / "sequence.json").read_text())
    assert info["line_order"][0][0] == 16


def test_too_short_saturation_time_raises():
    with pytest.raises(ValueError, match="shorter than the saturation module"):
        build_sequence(SequenceSettings(tau=(0.001,), size=32, acceleration=4.0))


def test_paper_sequence_passes_the_timing_check(tmp_path):
    from pinqi.sequences.saturation_recovery import write_sequence

    path = write_sequence(tmp_path, SequenceSettings())  # 192x192, 1x1x8 mm, 6 degrees, 8x
    assert path.is_file() and np.load(tmp_path / "masks.npy").sum(1).tolist() == [24] * 5
