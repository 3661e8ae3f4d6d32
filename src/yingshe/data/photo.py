"""Training batches of photos straight from their JPEG files: random-resized-crop at decode time.

For photos hundreds of pixels a side, decoding is most of a pipeline's cost; resizing a whole
photo to a fixed size first (what `FileBatches` does for the 32-px pipeline) adds a second full
pass. Here each worker decodes a batch and crops each image to its random box as it goes, the way
FFCV's JPEG path and DALI's ROI decode do:

- the box is drawn from the JPEG header's size before decoding; when it is at least twice the
  crop size on both sides, the JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT
  scaling: the pixels the crop would have thrown away are never computed);
- JPEGs are decoded by `decode.decode_jpeg_fast` (libjpeg-turbo's fast IDCT and chroma
  upsampling through simplejpeg, as FFCV decodes); where simplejpeg is missing or the EXIF
  orientation asks for a turn, by torchvision's libjpeg-turbo decoder (Pillow's `draft` for the
  scaled decode); non-JPEG files by Pillow;
- the box is resized to the crop size by `augment.resize_box` (bilinear, antialiased, uint8) and
  mirrored at random, so workers hand uint8 (B, C, size, size) to the main process, which only
  normalises (`DeviceBatches` with no augment).

`bench/photo_throughput.py` measures it against torchvision's ImageFolder pipeline.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from yingshe.data.augment import resize_box
from yingshe.data.batch import Batch, image_batch
from yingshe.data.decode import decode_jpeg, decode_jpeg_fast, jpeg_frame
from yingshe.data.images import UnreadableImage, open_image, to_mode
from yingshe.data.loader import EpochBatches, EpochShuffle, _collate
from yingshe.data.splits import Split

SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def draw_box(
    width: int, height: int, rng: np.random.Generator, scale: tuple[float, float] = SCALE
) -> tuple[int, int, int, int]:
    """(left, top, box width, box height): `scale` of the area, aspect log-uniform in `RATIO`,
    clamped to the image (as `augment.random_resized_crop`)."""
    area = rng.uniform(*scale) * width * height
    aspect = math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
    bw = int(min(max(round(math.sqrt(area * aspect)), 1), width))
    bh = int(min(max(round(math.sqrt(area / aspect)), 1), height))
    return int(rng.integers(0, width - bw + 1)), int(rng.integers(0, height - bh + 1)), bw, bh


def crop_resize(image: Tensor, box: tuple[int, int, int, int], size: int, mirror: bool) -> Tensor:
    """(C, H, W) uint8 → the box resized to (C, size, size), mirrored if asked."""
    left, top, bw, bh = box
    out = resize_box(image[None, :, top : top + bh, left : left + bw], size)[0]
    return out.flip(-1) if mirror else out


def decode_crop(
    data: bytes,
    size: int,
    channels: int,
    rng: np.random.Generator,
    name: str,
    scale: tuple[float, float] = SCALE,
    flip: bool = True,
) -> Tensor:
    """One photo → its random-resized crop, decoded at the smallest scale that still covers it."""
    frame = jpeg_frame(data)
    box = draw_box(frame[0], frame[1], rng, scale) if frame else None
    reduce = min(box[2], box[3]) // size if box else 1
    fast = None
    if frame and frame[2] == channels:
        scale = min(8, 1 << (max(reduce, 1).bit_length() - 1))  # a power of two, at most `reduce`
        fast = decode_jpeg_fast(data, channels, scale, frame[:2])
    if fast is not None:
        image = torch.from_numpy(fast).permute(2, 0, 1)
    elif frame and frame[2] == channels and reduce < 2 and decode_jpeg is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # read-only buffer; torchvision's codec deprecation
            mode = "RGB" if channels == 3 else "GRAY"
            from torchvision.io import ImageReadMode

            try:
                image = decode_jpeg(
                    torch.frombuffer(data, dtype=torch.uint8),
                    mode=ImageReadMode[mode],
                    apply_exif_orientation=True,
                )
            except RuntimeError as err:
                raise UnreadableImage(f"{name}: {err}") from err
    else:
        # open_image's draft picks the largest DCT scale (1/2, 1/4, 1/8) keeping both sides at
        # least the requested size: here, the box stays at least `size` on its shorter side
        draft = math.ceil(min(frame[0], frame[1]) / reduce) if frame and reduce >= 2 else None
        pil = open_image(data, name, draft_size=draft)
        array = np.array(to_mode(pil, channels), dtype=np.uint8)
        image = torch.from_numpy(array[:, :, None] if array.ndim == 2 else array).permute(2, 0, 1)
    height, width = image.shape[1:]
    if box is None or (frame[0], frame[1]) != (width, height):  # drafted, turned, or not a JPEG
        turned = box is not None and (frame[0] - frame[1]) * (width - height) < 0  # EXIF 5-8
        if box is None or turned:  # a box for the picture as decoded
            box = draw_box(width, height, rng, scale)
        else:  # drafted: the same box, scaled
            sx, sy = width / frame[0], height / frame[1]
            box = (int(box[0] * sx), int(box[1] * sy), max(1, int(box[2] * sx)), max(1, int(box[3] * sy)))
    return crop_resize(image, box, size, flip and bool(rng.random() < 0.5))


class PhotoCrops(Dataset):
    """A split's training images (encoded files, or prepared shards stored above `size`) as
    random-resized crops of `size` (area fraction in `scale`, mirrored at random with `flip`), a
    batch per `__getitems__` call, NHWC in memory with `channels_last`."""

    def __init__(
        self,
        split: Split,
        size: int,
        channels: int,
        seed: int = 0,
        scale: tuple[float, float] = SCALE,
        flip: bool = True,
        channels_last: bool = False,
    ) -> None:
        if split.files is None and split.packed is None:
            raise ValueError("PhotoCrops reads encoded files or prepared shards, not decoded arrays")
        self.split, self.size, self.channels, self.seed = split, size, channels, seed
        self.scale, self.flip, self.channels_last = scale, flip, channels_last

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, indices: list[int]) -> Batch:
        # per-batch generator, from torch's (which the DataLoader seeds per worker from the run's)
        rng = np.random.default_rng([self.seed, int(indices[0]), int(torch.randint(1 << 30, ()).item())])
        zeros = functools.partial(torch.zeros, dtype=torch.uint8)
        images = image_batch(zeros, len(indices), self.channels, self.size, self.channels_last)
        labels = torch.from_numpy(np.asarray(self.split.labels[indices]))
        if self.split.packed is not None:  # prepared at a short side above `size`: crop, no decode
            stored = torch.from_numpy(self.split.packed.take(np.asarray(indices))).permute(0, 3, 1, 2)
            height, width = stored.shape[2:]
            for k in range(len(indices)):
                box = draw_box(width, height, rng, self.scale)
                images[k] = crop_resize(stored[k], box, self.size, self.flip and bool(rng.random() < 0.5))
            return Batch(images, labels, torch.tensor(indices), torch.ones(len(indices), dtype=torch.bool))
        ok = torch.zeros(len(indices), dtype=torch.bool)
        for k, i in enumerate(indices):
            name = self.split.name(i)
            try:
                images[k] = decode_crop(
                    self.split.files.read(i), self.size, self.channels, rng, name, self.scale, self.flip
                )
                ok[k] = True
            except (UnreadableImage, OSError, ValueError):
                pass  # flagged not ok; DeviceBatches names the reason
        return Batch(images, labels, torch.tensor(indices), ok)


class PhotoBatches:
    """Shuffled training batches of `PhotoCrops` from `workers` DataLoader processes (for
    prepared shards too: the crop's resize, not the read, is then the cost, and it runs in the
    workers rather than in the training process)."""

    def __init__(
        self,
        split: Split,
        size: int,
        channels: int,
        batch_size: int,
        seed: int = 0,
        workers: int = 2,
        channels_last: bool = False,
    ) -> None:
        self.sampler = EpochShuffle(len(split), seed, shuffle=True)
        self.loader = DataLoader(
            PhotoCrops(split, size, channels, seed, channels_last=channels_last),
            batch_sampler=EpochBatches(self.sampler, batch_size, merge_tail=True),
            num_workers=workers,
            collate_fn=_collate,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.loader)
