"""Random-resized-crop training batches straight from prepared shards, normalised as they are cut.

Photos prepared at a short side above the crop size (256 for a 224 crop) would otherwise go
through `PackedBatches` (gather the batch: a 12.6 MB copy, then an NCHW transpose: another)
and `augment.random_resized_crop` (a channels-last copy back, a resize per image into a uint8
batch) and `Normalize` (a fresh 38 MB float batch, then a multiply-add pass over it). Here each
image's box is resized straight from the memory-mapped NHWC shard (`box_resize.BoxResizer`:
OpenCV's bilinear resize for boxes shrunk little, read in place, else torch's antialiased one)
into the thread's recycled uint8 crop and, on the CPU, normalised at once into its slot of a
recycled float batch while the 224-px crop is still in cache (`crop_threads.CropThreads`, which
also shares each batch's images among the threads). Measured alone on one core, batch 64 of the
photo corpus, torch's resize: ~0.46 ms an image against 1.49 ms for the three steps above.

For one seed, with `resize="torch"`, the batches are those of `PackedBatches` +
`augment.ResizedCropAugment` + `Normalize`, value for value: the same order
(`PackedBatches.parts`), the same boxes (`augment.draw_boxes`, drawn for the whole batch before
any image is cut), the same resize and the same float operations. With OpenCV the boxes and
order are the same and the pixels within about a level.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from yingshe.config import CropResize
from yingshe.data.augment import Normalize, draw_boxes
from yingshe.data.batch import Batch
from yingshe.data.box_resize import Box, BoxResizer
from yingshe.data.crop_threads import CropThreads
from yingshe.data.loader import EpochBatches
from yingshe.data.splits import Split
from yingshe.data.stream import PackedBatches


class PackedCrops:
    """A prepared split's training batches as random-resized crops of `size` (area fraction in
    `scale`, aspect in `ratio`, mirrored at random with `flip`).

    With `normalize` (a CPU run) the batches are float and already normalised (`Batch.normalized`:
    `DeviceBatches` does not normalise them again) and come from a `BufferRing` of `ring` buffers;
    without, they are uint8 crops for the device to normalise (what a GPU wants: a quarter of
    the bytes to copy). Same interface as the other batch sources.

    `resize` (`augment.crop_resize`): `torch` resizes every box with torch's antialiased bilinear
    kernel (the values of `augment.random_resized_crop`); `opencv` resizes the boxes shrunk by no
    more than `box_resize.BILINEAR_MIN_FACTOR` with OpenCV's bilinear one, which has no
    antialiasing (read in place from the map, no copy; ~1.3x the whole path's throughput), the
    rest with torch's; `auto` is `opencv` where cv2 imports. OpenCV is set to one thread for the
    whole process.
    """

    def __init__(
        self,
        split: Split,
        size: int,
        batch_size: int,
        *,
        seed: int = 0,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        normalize: Normalize | None = None,
        threads: int = 2,
        channels_last: bool = False,
        ring: int = 3,
        rank: int = 0,
        world: int = 1,
        batches: EpochBatches | None = None,
        resize: CropResize = "auto",
    ) -> None:
        if split.packed is None:
            raise ValueError("PackedCrops serves prepared (packed) splits only")
        channels = split.packed.image_shape[2]
        self.resizer = BoxResizer(size, channels, resize)
        self.cutter = CropThreads(size, channels, threads, normalize, channels_last, ring)
        # the order: `batches` (a global permutation per epoch, or weighted draws, as the workers'
        # loaders use), else PackedBatches' shard windows (sequential reads; shards keep the
        # source's order, so a window of a class-sorted folder holds few classes)
        self.batches = batches
        self.order = PackedBatches(
            split, batch_size, shuffle=True, seed=seed, merge_tail=True, rank=rank, world=world
        )
        self.skip = 0
        self.packed, self.labels, self.size = split.packed, split.labels, size
        self.scale, self.ratio, self.flip = scale, ratio, flip

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)
        if self.batches is not None:
            self.batches.sampler.set_epoch(epoch)

    def skip_batches(self, count: int) -> None:
        """Leave out the epoch's first `count` batches (a resumed epoch): not cut, no boxes drawn."""
        self.skip = count

    def __len__(self) -> int:
        return len(self.batches) if self.batches is not None else len(self.order)

    def parts(self) -> Iterator[tuple[np.ndarray, int, int]]:
        """(sorted view positions, batch size, offset in the batch), as `PackedBatches.parts`."""
        if self.batches is None:
            with contextlib.closing(self.order.parts()) as parts:
                yield from parts
            return
        for idx in self.batches.batches():
            yield np.sort(idx.numpy()), len(idx), 0

    def __iter__(self) -> Iterator[Batch]:
        side = self.packed.image_shape[0]
        out, slots, boxes, labels, index = None, (), [], [], []
        number = -1  # of the batch being cut
        for positions, size, offset in self.parts():
            if offset == 0:
                number += 1
            if number < self.skip:
                continue
            if offset == 0:
                boxes = draw_boxes(size, side, side, self.scale, self.ratio, self.flip)
                out = self.cutter.batch(size)
                slots, labels, index = self.cutter.slots(out), [], []
            part = slice(offset, offset + len(positions))
            self._cut(positions, boxes[part], slots[part])
            labels.append(np.asarray(self.labels[positions], dtype=np.int64))
            index.append(positions)
            if offset + len(positions) == size:
                yield Batch(
                    out,
                    torch.from_numpy(np.concatenate(labels)),
                    torch.from_numpy(np.concatenate(index).astype(np.int64)),
                    torch.ones(size, dtype=torch.bool),
                    normalized=self.cutter.normalized,
                )
                out = None  # the ring recycles it once the consumer lets go

    def _cut(self, positions: np.ndarray, boxes: list[Box], slots: tuple[Tensor, ...]) -> None:
        """Crop, resize (and normalise) the images at sorted view `positions` into `slots`."""
        g = self.packed.global_positions(positions)
        shard_ids = self.packed.shard_of(g)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a read-only map: nothing here writes to it
            shards = {int(s): self._shard(int(s)) for s in np.unique(shard_ids)}
        starts = self.packed.starts
        jobs = [
            (*shards[int(s)], int(p - starts[s]), box, slot)
            for s, p, box, slot in zip(shard_ids, g, boxes, slots, strict=True)
        ]
        self.cutter.run(jobs, self._cut_one)

    def _shard(self, number: int) -> tuple[np.ndarray, Tensor]:
        """Shard `number`'s NHWC memory map as numpy (what OpenCV reads) and as a tensor (what
        torch's resize takes), made once a batch: indexing numpy per image is ~10x cheaper."""
        images = self.packed.shard(number)[0]
        return images, torch.from_numpy(images)

    def _cut_one(self, job: tuple[np.ndarray, Tensor, int, Box, Tensor]) -> None:
        array, tensor, index, box, slot = job
        image = array[index] if self.resizer.uses_opencv(box) else tensor[index]
        self.cutter.store(self.resizer(image, box), slot)
