"""`yingshe data prepare` as a data-layer step: where the shards go and how training finds them.

Packed shards go to the cache when no folder is given, named by the source's identity
(pack.source_identity), where training on the same spec finds them; with a folder, the cache is
pointed at that folder, so data.prepared=auto finds them there too. WebDataset shards keep the
images as they are encoded and need a folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from yingshe.data import pack, webdataset
from yingshe.data.dataset import detect_channels, fit_split, native_size
from yingshe.data.splits import SourceData
from yingshe.errors import YingsheError

PREPARE_FORMATS = ("packed", "webdataset")


def prepare_source(
    source: SourceData,
    out: str | Path | None,
    image_size: int | None,
    channels: int | None,
    *,
    fmt: str = "packed",
    cache_dir: str | None = None,
    workers: int | None = None,
    shard_mb: float = pack.DEFAULT_SHARD_MB,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    jpeg_quality: int | None = None,
    part: tuple[int, int] | None = None,
    merge: bool = False,
) -> dict[str, Any]:
    """Write `source` as shards and return the summary `api.prepare_data` reports.

    `jpeg_quality` (WebDataset only) re-encodes every image as an `image_size` square JPEG at that
    quality: a fraction of packed uint8's disk, paid for by a decode per image when training.
    `part=(i, n)` prepares slice i of n (every n-th packed shard) into the shared folder, and
    `merge` writes the manifest once all slices are there (pack.merge_slices): n machines
    prepare one dataset in parallel, byte for byte the one a single prepare writes."""
    check_part(part, merge, fmt)
    if fmt == "webdataset":
        if out is None or (image_size and not jpeg_quality) or (jpeg_quality and not image_size):
            raise YingsheError(
                "WebDataset shards need --out and keep the images as they are encoded, unless "
                "re-encoded at --image-size with --jpeg-quality",
                "give --out DIR, and --image-size only together with --jpeg-quality",
            )
        if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
            raise YingsheError(
                f"--jpeg-quality must be 1-100; got {jpeg_quality}", "use e.g. --jpeg-quality 90"
            )
        channels = channels or source.channels or detect_channels(source.splits["train"])
        reencode = (image_size, jpeg_quality, channels) if jpeg_quality else None
        written = webdataset.write_webdataset(source, out, progress=progress, reencode=reencode)
        return {**written, "format": fmt, "jpeg_quality": jpeg_quality}
    if jpeg_quality is not None:
        raise YingsheError(
            "--jpeg-quality applies to WebDataset shards (packed shards hold raw pixels)",
            "add --format webdataset, or leave out --jpeg-quality",
        )
    if fmt != "packed":
        raise YingsheError(f"unknown format {fmt!r}", f"use one of {', '.join(PREPARE_FORMATS)}")
    train = source.splits["train"]
    channels = channels or source.channels or detect_channels(train)
    native = native_size(train)  # the size a training run on the spec picks unless told otherwise
    size = image_size or native
    if channels not in (1, 3):
        raise YingsheError(f"channels must be 1 or 3, got {channels}", "pass --channels 1 or 3")
    source.splits = {name: fit_split(split, size, channels) for name, split in source.splits.items()}
    if out is None:
        name = pack.cache_name(source, size, channels, pack.source_identity(source))
        folder, linked = pack.cache_root(cache_dir) / name, False
    else:
        folder, linked = Path(out), pack.has_encoded_files(source)
    if merge:
        manifest = pack.merge_slices(source, folder, size, channels, shard_mb=shard_mb)
    else:
        options = dict(workers=workers, shard_mb=shard_mb, force=force, progress=progress, part=part)
        manifest = pack.prepare(source, folder, size, channels, **options)
    if "splits" not in manifest:  # one slice, written; the folder is valid once merged
        return {"format": fmt, "out": str(folder), "description": source.description, **manifest}
    if linked:  # training on the same spec with data.prepared=auto finds the shards through the cache
        pack.register_prepared(folder, source, manifest, cache_dir)
    return {
        "format": fmt,
        "out": str(folder),
        "description": source.description,
        "image_size": size,
        "channels": channels,
        "training_image_size": native,  # with native_channels: what `yingshe train --data SPEC` uses
        "native_channels": source.channels or detect_channels(train),
        "content_sha256": manifest["source"]["content_sha256"],
        "picked_up": pack.has_encoded_files(
            source
        ),  # training on the spec finds them (decoded sets: no need)
        "splits": {
            name: {
                "images": entry["count"],
                "shards": len(entry["shards"]),
                "skipped": [s["reason"] for s in entry["skipped"]],
            }
            for name, entry in manifest["splits"].items()
        },
    }


def check_part(part: tuple[int, int] | None, merge: bool, fmt: str) -> None:
    if part is None and not merge:
        return
    if fmt != "packed":
        raise YingsheError(
            "--num-shards/--shard-index/--merge prepare packed shards in slices",
            "leave out --format webdataset (or write the WebDataset shards in one go)",
        )
    if part is not None and merge:
        raise YingsheError("--merge joins the slices; it prepares none itself", "leave out --shard-index")
    if part is not None and not (part[1] >= 1 and 0 <= part[0] < part[1]):
        raise YingsheError(
            f"--shard-index {part[0]} is not one of the {part[1]} slices (--num-shards)",
            "give --num-shards N >= 1 and --shard-index 0 … N-1 (e.g. $SLURM_ARRAY_TASK_ID)",
        )


def slice_of(num_shards: int | None, shard_index: int | None) -> tuple[int, int] | None:
    """(index, count) of the slice `--num-shards N --shard-index I` asks for; None for all."""
    if num_shards is None and shard_index is None:
        return None
    if num_shards is None or shard_index is None:
        raise YingsheError(
            "--num-shards and --shard-index go together", "give both, e.g. --num-shards 8 --shard-index 3"
        )
    return (shard_index, num_shards)
