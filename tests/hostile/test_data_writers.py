"""A broken image never reaches a written dataset: the WebDataset writer skips it with its reason."""

import io
import tarfile

import numpy as np
from PIL import Image

from yingshe.cli import main


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def test_webdataset_writer_skips_a_truncated_jpeg(tmp_path, capsys):
    folder = tmp_path / "photos"
    for c, name in enumerate(("cat", "dog")):
        (folder / name).mkdir(parents=True)
        for i in range(6):
            (folder / name / f"{i}.jpg").write_bytes(jpeg(10 * c + i))
    broken = jpeg(99)
    (folder / "cat" / "broken.jpg").write_bytes(broken[: len(broken) // 2])
    out = tmp_path / "wds"
    assert main(["data", "prepare", str(folder), "--format", "webdataset", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "left out: " in printed and "broken.jpg" in printed and "truncated" in printed.lower()
    samples = []
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as archive:
            samples += [m.name for m in archive.getmembers() if m.name.endswith(".jpg")]
    assert len(samples) == 12  # every good image, and only those
