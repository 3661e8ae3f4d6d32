"""Photos the ImageNet way: random-resized-crop to train, resize then centre-crop to evaluate.

timm and torchvision train on a random-resized-crop of each photo (a box of 8–100 % of the area,
aspect 3/4–4/3, resized to `image_size`, mirrored at random) and evaluate on the centre of the
photo with its short side resized to `image_size / crop_pct` (timm's crop_pct, 0.875: 256 for
224). `augment.random_resized_crop` selects the first, `data.crop_pct` the second (by default
0.875 once random-resized-crop is on, 1 otherwise: the whole short side, as before).

One definition of the evaluation pixels serves every path: an image is fitted to a square of the
*stored side* `resize_side(image_size, crop_pct)` (`images.fit_square`, the function decoding and
prepared shards use) and the centre `image_size` square of that is kept (`images.centre_offset`).
Evaluation decodes (or reads shards) at the stored side and `images.centre_crop`s the batch;
`ImageClassifier.preprocess` (predict, serve, ONNX) calls `decode_image(..., resize=side)`, which
crops the same square. Training with random-resized-crop crops in DataLoader workers as each photo
is decoded (`photo.PhotoCrops`), cuts prepared images straight from their memory-mapped shards in
this process (`packed_crops.PackedCrops`, normalising as it cuts on a CPU run), or, where another
loader must serve the split (in-memory arrays, a per-image policy, streaming), crops from the
stored side on the device (`augment.random_resized_crop`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from torch import Tensor

from yingshe.config import AugmentConfig, CropResize, RunConfig
from yingshe.data.augment import BatchAugment, Normalize, random_resized_crop
from yingshe.data.batch import BatchSource, default_workers
from yingshe.data.loader import EpochBatches, EpochShuffle, FileBatches, make_batches
from yingshe.data.packed_crops import PackedCrops
from yingshe.data.photo import PhotoCrops
from yingshe.data.splits import Split

DEFAULT_CROP_PCT = 0.875  # timm's default: a 224 crop from a 256 short side


def resolve_crop_pct(cfg: RunConfig) -> None:
    """Fill in `data.crop_pct` where it follows from the augmentation (None and
    random-resized-crop on: 0.875), so the run's config.yaml records the value it used."""
    if cfg.data.crop_pct is None and cfg.augment.random_resized_crop:
        cfg.data.crop_pct = DEFAULT_CROP_PCT


def resize_side(size: int, crop_pct: float | None) -> int:
    """The short side an image is resized to before its centre `size` square is cropped:
    floor(size / crop_pct), as timm computes it (224 at 0.875: 256); `size` when crop_pct is None
    or 1."""
    if crop_pct is None or crop_pct >= 1:
        return size
    return max(size, math.floor(size / crop_pct + 1e-9))


def checkpoint_crop_pct(image_size: int, resize: int | None) -> float | None:
    """The data.crop_pct that gives back a checkpoint's `resize` (None: no centre crop), so its
    splits are read at the side it was evaluated at whatever its config says."""
    return image_size / resize if resize and resize != image_size else None


def stored_side(shape: object) -> int:
    """The side a DatasetSpec's or CheckpointMeta's images are decoded at (before the centre
    crop): its `resize`, or its `image_size` where it has none (checkpoints before crop_pct)."""
    return int(getattr(shape, "resize", None) or shape.image_size)  # type: ignore[attr-defined]


class PhotoAugment:
    """`augment.random_resized_crop`: the crop and flip (unless the loader's workers did both
    already), then whatever else `augment` asks for (affine, erasing, mixup, cutmix) through
    `BatchAugment` without its padded crop and flip. Same interface as `BatchAugment`."""

    def __init__(self, cfg: AugmentConfig, size: int, flip: bool, num_classes: int, cropped: bool) -> None:
        self.size, self.flip, self.cropped = size, flip, cropped
        self.scale = (cfg.rrc_scale, 1.0)
        rest = dataclasses.replace(cfg, crop_padding=0, hflip=False, random_resized_crop=False)
        self.rest = BatchAugment(rest, size, False, num_classes)

    def set_epoch(self, epoch: int) -> None:
        self.rest.set_epoch(epoch)

    def __call__(
        self, x: Tensor, y: Tensor, normalize: Normalize, index: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        if not self.cropped:
            x = random_resized_crop(x, self.size, self.scale, flip=self.flip)
        return self.rest(x, y, normalize)


class PhotoTrainBatches(FileBatches):
    """Training batches cropped in DataLoader workers (`photo.PhotoCrops`: decode-time crops of
    encoded photos, left uint8 for the device to normalise), behind the sampler `FileBatches`
    uses, so ranks, class-balanced draws and a resumed epoch's skipped batches work as they do
    there."""

    def __init__(
        self,
        split: Split,
        size: int,
        channels: int,
        batches: EpochBatches,
        workers: int,
        scale: tuple[float, float],
        flip: bool,
        channels_last: bool = False,
        resize: CropResize = "auto",
    ) -> None:
        seed = batches.sampler.seed
        crops = PhotoCrops(split, size, channels, seed, scale, flip, channels_last, resize)
        super().__init__(split, size, channels, batches, workers, dataset=crops)


def photo_training(
    cfg: RunConfig,
    split: Split,
    shape: tuple[int, int, int],
    batch_size: int,
    flip_invariant: bool,
    num_classes: int,
    *,
    transform=None,
    weights: np.ndarray | None = None,
    rank: int = 0,
    world: int = 1,
    normalize: Normalize | None = None,
    channels_last: bool = False,
) -> tuple[BatchSource, PhotoAugment]:
    """The training batches and augmentation of `augment.random_resized_crop`; `shape` is
    (image_size, stored side, channels). Encoded files are cropped in workers as they are
    decoded; prepared shards are cut straight from their memory map by `packed_crops.PackedCrops`
    in this process (threads), and normalised as they are cut when `normalize` is given (a CPU
    run); anything else comes at the stored side and is cropped on the device. With
    `channels_last` (the model's memory format) the crops are stored NHWC as they are cut."""
    size, side, channels = shape
    flip = flip_invariant if cfg.augment.hflip is None else cfg.augment.hflip
    scale = (cfg.augment.rrc_scale, 1.0)
    in_workers = (split.files is not None or split.packed is not None) and transform is None
    in_workers = in_workers and not cfg.data.stream
    if in_workers:
        sampler = EpochShuffle(len(split), cfg.train.seed, True, rank, world, weights)
        workers = default_workers() if cfg.data.workers is None else cfg.data.workers
        batches = EpochBatches(sampler, batch_size, merge_tail=True)
        source: BatchSource
        resize = cfg.augment.crop_resize
        if split.packed is not None:
            options = dict(seed=cfg.train.seed, scale=scale, flip=flip, normalize=normalize)
            options.update(threads=workers, batches=batches, channels_last=channels_last, resize=resize)
            source = PackedCrops(split, size, batch_size, **options)
        else:
            source = PhotoTrainBatches(
                split, size, channels, batches, workers, scale, flip, channels_last, resize
            )
    else:
        source = make_batches(
            split,
            side,
            channels,
            batch_size,
            train=True,
            seed=cfg.train.seed,
            workers=cfg.data.workers,
            transform=transform,
            stream=cfg.data.stream,
            weights=weights,
            rank=rank,
            world=world,
        )
    return source, PhotoAugment(cfg.augment, size, flip, num_classes, cropped=in_workers)
