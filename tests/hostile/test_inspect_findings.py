"""`data inspect` on a folder of classes: the split training will make, imbalance, duplicates."""

import io
import shutil

import numpy as np
from PIL import Image

from yingshe.cli import main


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_inspect_reports_the_planned_split_imbalance_and_duplicates(tmp_path, capsys):
    folder = tmp_path / "photos"
    for name, count in (("cat", 30), ("dog", 6)):
        (folder / name).mkdir(parents=True)
        for i in range(count):
            (folder / name / f"{i}.png").write_bytes(png(hash((name, i)) % 10**6))
    shutil.copy(folder / "cat" / "3.png", folder / "dog" / "copy-of-cat-3.png")  # a leak waiting to happen
    assert main(["data", "inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "[all images (the source has no split folders)] 37 images" in out
    assert "`yingshe train` splits it (default fractions, seed 0): train 27 · val 3 · test 7" in out
    assert "warning: classes are imbalanced (ratio 4.3): cat has 30 images, dog has 7" in out
    assert "1 exact duplicate file(s) in 1 group(s)" in out
    line = next(x for x in out.splitlines() if "copy-of-cat-3.png" in x)
    assert "cat/3.png" in line
