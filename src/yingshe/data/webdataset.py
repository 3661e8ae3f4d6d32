"""WebDataset shards: plain tar files of samples, read as a source, streamed, and written.

A sample is the run of consecutive tar members that share a key: the member path up to the first
dot of its file name. yingshe reads and writes `<key>.<image ext>` (jpg, png, webp, ...) with
`<key>.cls`, the class index as decimal text, which is how large public datasets are distributed.
No webdataset package is needed: `tarfile` indexes a shard once, then images are read by offset.

Splits come from shard file names (`train-000000.tar`, `test-…`, `val-…`) or from train/, test/,
val/ folders of shards; other shards are train. `classes.txt` beside the shards (one name per
line, in index order) names the classes; without it they are named by index.
"""

from __future__ import annotations

import io
import itertools
import re
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from yingshe.data.images import IMAGE_SUFFIXES, UnreadableImage, decode_image, fit_square, open_image
from yingshe.data.remote import is_url, open_shard, read_bytes, shard_identity, shard_list
from yingshe.data.shards import fsync_dir
from yingshe.data.splits import SourceData, Split, stat_line
from yingshe.errors import YingsheError
from yingshe.runs import atomic_file, atomic_write_text

IMAGE_EXTS = tuple(s.lstrip(".") for s in sorted(IMAGE_SUFFIXES))
LABEL_EXT = "cls"
CLASSES_FILE = "classes.txt"
SPLIT_PREFIX = re.compile(r"^(train|test|val|valid|validation)[-_.]", re.IGNORECASE)
SPLIT_NAMES = {"train": "train", "test": "test", "val": "val", "valid": "val", "validation": "val"}
DEFAULT_MAXCOUNT = 10_000  # samples per written shard


@dataclass
class WdsImages:
    """Images inside WebDataset shards, read by seeking to their offsets (no extraction)."""

    archives: list[str]
    archive_ids: np.ndarray  # (N,) int32: which archive holds each image
    offsets: np.ndarray  # (N,) int64 byte offset of the image member's data
    sizes: np.ndarray  # (N,) int64
    keys: list[str]

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, index: int) -> bytes:
        offset = int(self.offsets[index])
        return read_bytes(self.archives[self.archive_ids[index]], offset, offset + int(self.sizes[index]))

    def read_range(self, start: int, stop: int) -> list[bytes | None]:
        """Images [start, stop): one read (one range request for a URL) per run of images in the
        same archive, spanning them; an unreachable shard's images come back as None."""
        blobs: list[bytes | None] = []
        ids = self.archive_ids[start:stop]
        cuts = [0, *(np.flatnonzero(np.diff(ids)) + 1).tolist(), stop - start]
        for a, b in itertools.pairwise(cuts):
            if a == b:
                continue
            offsets, sizes = self.offsets[start + a : start + b], self.sizes[start + a : start + b]
            lo, hi = int(offsets.min()), int((offsets + sizes).max())
            try:
                data = read_bytes(self.archives[int(ids[a])], lo, hi)
            except (OSError, YingsheError):
                blobs += [None] * (b - a)
                continue
            blobs += [
                data[o - lo : o - lo + n] for o, n in zip(offsets.tolist(), sizes.tolist(), strict=True)
            ]
        return blobs

    def name(self, index: int) -> str:
        return f"{self.archives[self.archive_ids[index]]}:{self.keys[index]}"

    def fingerprint(self) -> Iterator[str]:
        return (shard_identity(a) if is_url(a) else stat_line(a) for a in self.archives)

    def subset(self, indices: np.ndarray) -> WdsImages:
        indices = np.asarray(indices, dtype=np.int64)
        return WdsImages(
            self.archives,
            self.archive_ids[indices],
            self.offsets[indices],
            self.sizes[indices],
            [self.keys[i] for i in indices],
        )


def sample_key(member: str) -> tuple[str, str]:
    """`dir/000123.seg.png` → ("dir/000123", "seg.png"): the key ends at the name's first dot."""
    folder, _, base = member.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def is_plain_tar(path: Path) -> bool:
    """An uncompressed tar (gzip, bzip2 and xz streams cannot seek to a member)."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
        compressed = magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\xfd7zXZ\x00"
        return not compressed and tarfile.is_tarfile(path)
    except OSError:
        return False


def is_webdataset_tar(path: Path, look: int = 16) -> bool:
    """A plain tar whose first members include a `<key>.cls` label."""
    if not path.is_file() or not is_plain_tar(path):
        return False
    try:
        with tarfile.open(path, "r:") as archive:
            for _, member in zip(range(look), archive, strict=False):
                if member.isfile() and sample_key(member.name)[1] == LABEL_EXT:
                    return True
    except (tarfile.TarError, OSError):
        return False
    return False


def find_shards(path: Path) -> dict[str, list[Path]]:
    """Shard files by split: the .tar files of a folder and its split folders, split by name; a
    single shard given on its own is the whole dataset (train, to hold a test split out of)."""
    if path.is_file():
        return {"train": [path]}
    shards: dict[str, list[Path]] = {}
    for tar in sorted(path.glob("*.tar")):
        shards.setdefault(split_of(tar), []).append(tar)
    for folder in sorted(p for p in path.iterdir() if p.is_dir() and p.name.lower() in SPLIT_NAMES):
        for tar in sorted(folder.glob("*.tar")):
            shards.setdefault(SPLIT_NAMES[folder.name.lower()], []).append(tar)
    return shards


def split_of(shard: Path) -> str:
    match = SPLIT_PREFIX.match(shard.name)
    return SPLIT_NAMES[match.group(1).lower()] if match else "train"


def is_webdataset_dir(path: Path) -> bool:
    shards = find_shards(path) if path.is_dir() else {}
    return bool(shards) and is_webdataset_tar(next(iter(shards.values()))[0])


def index_shard(path: Path | str) -> list[tuple[str, int, int, int]]:
    """(key, offset, size, label) of every sample in one shard, in order. A local shard is
    indexed by seeking from header to header; a URL is read once front to back (a tar stream)."""
    samples: list[tuple[str, int, int, int]] = []
    key, image, label = None, None, None

    def close_sample() -> None:
        if key is None:
            return
        if image is None or label is None:
            missing = "an image member" if image is None else f"a .{LABEL_EXT} label member"
            raise YingsheError(
                f"{path}: sample {key!r} has no {missing}",
                f"every sample needs <key>.jpg (or another image type) and <key>.{LABEL_EXT}",
            )
        samples.append((key, image[0], image[1], label))

    try:
        with _open_index(path) as archive:
            for member in archive:
                if not member.isfile():
                    continue
                k, ext = sample_key(member.name)
                if k != key:
                    close_sample()
                    key, image, label = k, None, None
                if ext == LABEL_EXT:
                    text = archive.extractfile(member).read().decode("utf-8", "replace").strip()
                    try:
                        label = int(text)
                    except ValueError as err:
                        raise YingsheError(
                            f"{path}: {member.name} holds {text[:40]!r}, not a class index",
                            f"write the class index as decimal text in <key>.{LABEL_EXT}",
                        ) from err
                elif ext in IMAGE_EXTS and image is None:
                    image = (member.offset_data, member.size)
            close_sample()
    except (tarfile.TarError, OSError, ValueError) as err:
        raise YingsheError(
            f"{path} is not a readable tar shard ({err})",
            "WebDataset shards must be plain (uncompressed) .tar files; gunzip compressed ones",
        ) from err
    return samples


@contextmanager
def _open_index(path: Path | str) -> Iterator[tarfile.TarFile]:
    if not is_url(str(path)):
        with tarfile.open(path, "r:") as archive:
            yield archive
        return
    with open_shard(str(path)) as handle, tarfile.open(fileobj=handle, mode="r|") as archive:
        yield archive


def read_webdataset(path: Path) -> SourceData:
    """A WebDataset (one shard or a folder of them) as a source of encoded images."""
    shards = find_shards(path)
    if not shards:
        raise YingsheError(f"{path} holds no .tar shards", "point at a shard or a folder of .tar shards")
    folder = path if path.is_dir() else path.parent
    listed = folder / CLASSES_FILE
    classes = _class_lines(listed.read_text()) if listed.is_file() else None
    return _read_shards(str(path), {k: [str(p) for p in v] for k, v in shards.items()}, classes, str(listed))


def read_shard_list(spec: str) -> SourceData:
    """WebDataset shards named by a brace range, glob or URL (data/remote.py), split by their
    file names; classes.txt is read from beside the first shard when it is there."""
    shards: dict[str, list[str]] = {}
    for location in shard_list(spec):
        shards.setdefault(split_of(Path(location.rsplit("/", 1)[-1])), []).append(location)
    first = next(iter(shards.values()))[0]
    listed = first.rsplit("/", 1)[0] + "/" + CLASSES_FILE if "/" in first else CLASSES_FILE
    classes = None
    try:
        with open_shard(listed) as handle:
            classes = _class_lines(handle.read().decode("utf-8"))
    except (OSError, YingsheError, UnicodeDecodeError):
        pass  # no classes.txt: classes are named by index
    data = _read_shards(spec, shards, classes, listed)
    data.origin = spec
    return data


def _class_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _read_shards(
    where: str, shards: dict[str, list[str]], classes: list[str] | None, listed: str
) -> SourceData:
    splits, top = {}, 0
    for split, paths in shards.items():
        archives, ids, offsets, sizes, keys, labels = [], [], [], [], [], []
        for number, shard in enumerate(paths):
            archives.append(shard)
            for key, offset, size, label in index_shard(shard):
                ids.append(number), offsets.append(offset), sizes.append(size)
                keys.append(key), labels.append(label)
        if not keys:
            continue
        files = WdsImages(
            archives,
            np.array(ids, dtype=np.int32),
            np.array(offsets, dtype=np.int64),
            np.array(sizes, dtype=np.int64),
            keys,
        )
        splits[split] = Split(np.array(labels, dtype=np.int64), files=files)
        top = max(top, max(labels) + 1)
    if "train" not in splits:
        raise YingsheError(f"{where} has no train shards", "name shards train-000000.tar, test-000000.tar, …")
    if classes is None:
        classes = [str(i) for i in range(top)]
    if top > len(classes) or min(int(s.labels.min()) for s in splits.values()) < 0:
        raise YingsheError(
            f"{where}: class indices run to {top - 1} but {listed} names {len(classes)} classes",
            f"list every class in {listed}, one per line, in index order",
        )
    total = sum(len(s) for s in splits.values())
    return SourceData(f"WebDataset {where} ({total} samples)", classes, splits)


# --- writing ------------------------------------------------------------------------------------


def sniff_ext(data: bytes) -> str | None:
    """The image type of encoded bytes from their magic number."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tif"
    return None


def encoded_sample(split: Split, i: int) -> tuple[bytes, str]:
    """(bytes, extension) of image i as stored in a WebDataset: encoded images as they are,
    decoded ones as lossless PNG. A file that cannot be read or fully decoded (a truncated JPEG
    among them) raises UnreadableImage with the reason, as the packed writer skips it."""
    if split.files is None:
        array = split.images[i] if split.images is not None else split.packed.take(np.array([i]))[0]
        out = io.BytesIO()
        Image.fromarray(array[:, :, 0] if array.shape[-1] == 1 else array).save(out, format="PNG")
        return out.getvalue(), "png"
    name = split.name(i)
    try:
        data = split.files.read(i)
    except OSError as err:
        raise UnreadableImage(f"{name}: {err.strerror or err}") from err
    suffix = Path(name).suffix.lower().lstrip(".")
    ext = sniff_ext(data) or (suffix if suffix in IMAGE_EXTS else None)
    if ext is None:
        raise UnreadableImage(f"{name}: not an image file")
    open_image(data, name).close()  # decodes every pixel: a copy of a broken file helps nobody
    return data, ext


def jpeg_sample(split: Split, i: int, size: int, quality: int, channels: int) -> tuple[bytes, str]:
    """Image i as a size×size JPEG at `quality` (decoded with Pillow's draft, resized, re-encoded)."""
    if split.files is None:
        array = split.images[i] if split.images is not None else split.packed.take(np.array([i]))[0]
    else:
        data, _ = encoded_sample(split, i)  # raises UnreadableImage naming the file
        array = decode_image(data, size, channels, split.name(i))
    image = Image.fromarray(array[:, :, 0] if array.shape[-1] == 1 else array)
    if image.size != (size, size):
        image = fit_square(image, size)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue(), "jpg"


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # reproducible shards
    archive.addfile(info, io.BytesIO(data))


def write_webdataset(
    source: SourceData,
    out: str | Path,
    maxcount: int = DEFAULT_MAXCOUNT,
    progress: Callable[[int, int], None] | None = None,
    reencode: tuple[int, int, int] | None = None,
) -> dict:
    """Write every split of `source` as `<split>-NNNNNN.tar` shards of `<key>.<ext>` + `<key>.cls`,
    and classes.txt. Each shard is written to a temporary name and renamed when complete.

    With `reencode=(size, quality, channels)`, every image is stored as a size×size JPEG at that quality
    (the centre square at that short side, as packed shards hold it) instead of as it came: FFCV's
    trade-off, a fraction of raw uint8's disk for a decode per image (exact-size JPEGs take the
    batched libjpeg-turbo path of data/decode.py)."""
    out = Path(out)
    if out.is_dir() and any(out.iterdir()):
        raise YingsheError(
            f"{out} is not empty: shards already there would be read together with the new ones",
            "write WebDataset shards into a new or empty folder",
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / CLASSES_FILE, "".join(f"{c}\n" for c in source.classes))
    total = sum(len(s) for s in source.splits.values())
    done, summary = 0, {"out": str(out), "splits": {}, "skipped": []}
    for split_name, split in source.splits.items():
        width = max(8, len(str(max(len(split) - 1, 0))))
        shards, written = [], 0
        for number, start in enumerate(range(0, len(split), maxcount)):
            path = out / f"{split_name}-{number:06d}.tar"
            with (
                atomic_file(path) as handle,
                tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as archive,
            ):
                for i in range(start, min(start + maxcount, len(split))):
                    try:
                        sample = (
                            encoded_sample(split, i) if reencode is None else jpeg_sample(split, i, *reencode)
                        )
                    except UnreadableImage as err:
                        summary["skipped"].append(str(err))
                        continue
                    key = f"{i:0{width}d}"
                    _add(archive, f"{key}.{sample[1]}", sample[0])
                    _add(archive, f"{key}.{LABEL_EXT}", str(int(split.labels[i])).encode())
                    written += 1
            shards.append(path.name)
            done = done + min(start + maxcount, len(split)) - start
            if progress:
                progress(done, total)
        summary["splits"][split_name] = {"samples": written, "shards": shards}
    fsync_dir(out)
    return summary
