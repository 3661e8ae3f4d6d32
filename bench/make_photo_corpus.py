"""A photo-sized benchmark corpus made from data we have: CIFAR-10 JPEGs upscaled to 300-500 px on
the short side and re-encoded as JPEG at quality 90, in class folders.

Why: decoding and resizing dominate a photo pipeline, and their cost grows with the pixel count
and the JPEG's entropy data. Upscaled 32-px images have the pixel count and file format of
photos (so `draft`/DCT scaling, resizing and random-resized-crop cost what they would), but they
are smooth (little high-frequency detail), so their files are smaller than a real photo's at the
same size and quality, and entropy decoding is somewhat cheaper. See docs/benchmarks.md.

    python bench/make_photo_corpus.py [--count 2000] [--out bench/.photo-corpus] [--seed 0]

The output folder is git-ignored (bench/.photo-corpus/). Re-running with the same arguments
rewrites the same files.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import tarfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TAR = Path("/work/shared/datasets/cifar10-jpeg.tar.gz")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="images to write (spread over the classes)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / ".photo-corpus")
    parser.add_argument("--source", type=Path, default=TAR, help="the CIFAR-10 JPEG tar")
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.source.is_file():
        print(
            f"error: {args.source} not found\nfix: pass --source PATH to the CIFAR-10 JPEG tar",
            file=sys.stderr,
        )
        return 2
    rng = random.Random(args.seed)
    per_class = -(-args.count // 10)  # the tar is sorted by class: take the first of each
    taken: dict[str, int] = {}
    written = 0
    with tarfile.open(args.source) as tar:
        for member in tar:
            if written >= args.count:
                break
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 4 or parts[1] != "train":
                continue
            if taken.get(parts[2], 0) >= per_class:
                continue
            taken[parts[2]] = taken.get(parts[2], 0) + 1
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            image = Image.open(io.BytesIO(data)).convert("RGB")
            short = rng.randint(300, 500)
            aspect = rng.choice((1.0, 4 / 3, 3 / 2))  # photos are rarely square
            size = (round(short * aspect), short) if rng.random() < 0.7 else (short, round(short * aspect))
            image = image.resize(size, Image.Resampling.BICUBIC)
            target = args.out / parts[2] / parts[3]
            target.parent.mkdir(parents=True, exist_ok=True)
            image.save(target, "JPEG", quality=args.quality)
            written += 1
    total = sum(p.stat().st_size for p in args.out.rglob("*.jpg"))
    print(f"images={written} out={args.out} mean_kb={total / max(written, 1) / 1024:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
