"""`data samples` writes a contact sheet per class and, with --augmented, the same batch augmented."""

import numpy as np
from PIL import Image

from yingshe.cli import main


def test_samples_write_a_grid_per_class_and_an_augmented_batch(tmp_path, capsys):
    out = tmp_path / "samples"
    assert main(["data", "samples", "digits", "--out", str(out), "--count", "2", "--augmented"]) == 0
    assert "grid.png" in capsys.readouterr().out
    grid = np.asarray(Image.open(out / "grid.png").convert("L"))
    augmented = np.asarray(Image.open(out / "augmented.png").convert("L"))
    assert grid.shape == augmented.shape  # 10 rows (classes) of 8 cells, the same layout
    assert grid.shape[0] >= 10 * 96 and grid.shape[1] >= 8 * 96
    assert not np.array_equal(grid, augmented)  # the augmentation moved pixels
    assert len(list(out.glob("0*_*.png"))) == 2
