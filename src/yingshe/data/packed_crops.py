"""Random-resized-crop training batches straight from prepared shards, normalised as they are cut.

Photos prepared at a short side above the crop size (256 for a 224 crop) would otherwise go
through `PackedBatches` (gather the batch: a 12.6 MB copy, then an NCHW transpose: another)
and `augment.random_resized_crop` (a channels-last copy back, a resize per image into a uint8
batch) and `Normalize` (a fresh 38 MB float batch, then a multiply-add pass over it). Here each
image's box is resized straight from the memory-mapped NHWC shard into the thread's recycled
uint8 crop and, on the CPU, normalised at once into its slot of a recycled float batch
(`buffers.BufferRing`) while the 224-px crop is still in cache. The resize is OpenCV's bilinear
one where cv2 is installed and the box is not shrunk much (`resize`, below: it reads the box in
place and the crop is mirrored afterwards), else torch's antialiased one (the box copied
contiguous channels-last first, mirrored as it is copied: what torch's AVX2 uint8 kernel takes).
Measured alone on one core, batch 64 of the photo corpus, torch's resize: ~0.46 ms an image
against 1.49 ms for the three steps above. The images of a batch are shared out four
at a time among `threads` threads, the calling one included (the resize and arithmetic run
outside the GIL), so both cores work on one batch.

For one seed, with `resize="torch"`, the batches are those of `PackedBatches` +
`augment.ResizedCropAugment` + `Normalize`, value for value: the same order
(`PackedBatches.parts`), the same boxes (`augment.draw_boxes`, drawn for the whole batch before
any image is cut), the same resize and the same float operations. With OpenCV the boxes and
order are the same and the pixels within about a level.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
import warnings
from collections.abc import Iterator
from concurrent import futures
from typing import Any, get_args

import numpy as np
import torch
from torch import Tensor

from yingshe.config import CropResize
from yingshe.data.augment import Normalize, draw_boxes, resize_box_into
from yingshe.data.batch import Batch, image_batch
from yingshe.data.buffers import BufferRing
from yingshe.data.loader import EpochBatches
from yingshe.data.splits import Split
from yingshe.data.stream import PackedBatches

Box = tuple[int, int, int, int, bool]
Shard = tuple[np.ndarray, Tensor]  # one shard's NHWC map, and its NCHW tensor view
PIECE = 4  # images a thread takes at a time: ~1.5 ms of work against ~1 µs to take it
# OpenCV's bilinear resize has no antialiasing: used for boxes shrunk by at most this factor (a
# 256-px prepared photo to a 224 crop: 0.875), where the antialiased filter is barely wider
BILINEAR_MIN_FACTOR = 0.75


@functools.cache
def opencv() -> Any | None:
    """cv2 set to one thread (this module's threads are the parallelism; the setting is
    process-wide), or None where it is absent. Imported on first use: it costs ~0.1 s, and only
    photo training cuts crops."""
    try:
        import cv2
    except ImportError:
        return None
    cv2.setNumThreads(1)
    return cv2


class PackedCrops:
    """A prepared split's training batches as random-resized crops of `size` (area fraction in
    `scale`, aspect in `ratio`, mirrored at random with `flip`).

    With `normalize` (a CPU run) the batches are float and already normalised (`Batch.normalized`:
    `DeviceBatches` does not normalise them again) and come from a `BufferRing` of `ring` buffers;
    without, they are uint8 crops for the device to normalise (what a GPU wants: a quarter of
    the bytes to copy). Same interface as the other batch sources.

    `resize` (`augment.crop_resize`): `torch` resizes every box with torch's antialiased bilinear
    kernel (the values of `augment.random_resized_crop`); `opencv` resizes the boxes shrunk by no
    more than `BILINEAR_MIN_FACTOR` with OpenCV's bilinear one, which has no antialiasing (read in
    place from the map, no copy; ~1.3x the whole path's throughput), the rest with torch's; `auto`
    is `opencv` where cv2 imports. OpenCV is set to one thread for the whole process.
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
        if resize not in get_args(CropResize):
            raise ValueError(f"resize must be auto, torch or opencv, not {resize!r}")
        if resize == "opencv" and opencv() is None:
            raise ValueError("resize='opencv' needs OpenCV: pip install opencv-python-headless")
        # OpenCV's resize where it is installed and the box allows (see `_cut_some`), else torch's
        self.cv2 = None if resize == "torch" else opencv()
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
        self.threads = max(1, threads)
        self.channels_last = channels_last
        self.norm = None
        if normalize is not None:  # the values Normalize uses: per image (C, 1, 1), or per NHWC row
            if channels_last:
                scale, neg_shift = normalize.row_operands(split.packed.image_shape[2], size)
            else:
                scale, neg_shift = normalize.scale[0], normalize.neg_shift[0]
            self.norm = (scale.detach().cpu(), neg_shift.detach().cpu())
        self.ring = BufferRing(ring, torch.float32 if normalize is not None else torch.uint8)
        self.pool: futures.ThreadPoolExecutor | None = None
        self.local = threading.local()  # each cutting thread's recycled uint8 crop

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
        side, _, channels = self.packed.image_shape
        out, boxes, labels, index = None, [], [], []
        number = -1  # of the batch being cut
        for positions, size, offset in self.parts():
            if offset == 0:
                number += 1
            if number < self.skip:
                continue
            if offset == 0:
                boxes = draw_boxes(size, side, side, self.scale, self.ratio, self.flip)
                out = image_batch(self.ring.take, size, channels, self.size, self.channels_last)
                labels, index = [], []
            part = slice(offset, offset + len(positions))
            self._cut(positions, boxes[part], out[part])
            labels.append(np.asarray(self.labels[positions], dtype=np.int64))
            index.append(positions)
            if offset + len(positions) == size:
                yield Batch(
                    out,
                    torch.from_numpy(np.concatenate(labels)),
                    torch.from_numpy(np.concatenate(index).astype(np.int64)),
                    torch.ones(size, dtype=torch.bool),
                    normalized=self.norm is not None,
                )
                out = None  # the ring recycles it once the consumer lets go

    def _cut(self, positions: np.ndarray, boxes: list[Box], out: Tensor) -> None:
        """Crop, resize (and normalise) the images at sorted view `positions` into `out`."""
        g = self.packed.global_positions(positions)
        shard_ids = self.packed.shard_of(g)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a read-only map: nothing here writes to it
            shards = {int(s): self._shard(int(s)) for s in np.unique(shard_ids)}
        starts = self.packed.starts
        jobs = [
            (shards[int(s)], int(p - starts[s]), box, slot)
            for s, p, box, slot in zip(shard_ids, g, boxes, self._slots(out), strict=True)
        ]
        pieces = [jobs[i : i + PIECE] for i in range(0, len(jobs), PIECE)]
        if self.threads == 1 or len(pieces) < 2:
            self._cut_some(jobs)
            return
        if self.pool is None:
            self.pool = futures.ThreadPoolExecutor(self.threads - 1, thread_name_prefix="yingshe-crop")
        # the pieces go to whichever thread is free (the calling one included), not half to each:
        # an equal split of random boxes leaves one core idle while the other finishes its larger
        # ones. next() on the shared counter is atomic under the GIL
        # (free-threaded Python would need a lock here)
        taken, helpers = itertools.count(), []
        try:
            helpers += [self.pool.submit(self._cut_pieces, pieces, taken) for _ in range(self.threads - 1)]
            self._cut_pieces(pieces, taken)
        finally:  # no thread may still write into `out` once this returns, error or not
            futures.wait(helpers)
        for helper in helpers:
            helper.result()  # re-raises a helper's exception here

    def _cut_pieces(self, pieces: list[list[tuple[Shard, int, Box, Tensor]]], taken: Iterator[int]) -> None:
        while (k := next(taken)) < len(pieces):
            self._cut_some(pieces[k])

    def _slots(self, out: Tensor) -> tuple[Tensor, ...]:
        """Each image's place in `out`: normalised on NHWC memory, its rows of size×C values (the
        layout of Normalize's row operands), else its (C, size, size) slot. Views made once a
        batch, since every tensor operation in a thread holds the GIL for its dispatch."""
        if self.norm is not None and self.channels_last:
            return out.permute(0, 2, 3, 1).reshape(len(out), self.size, -1).unbind(0)
        return out.unbind(0)

    def _shard(self, number: int) -> Shard:
        """Shard `number`'s NHWC memory map as numpy (what OpenCV reads) and as an NCHW tensor view
        (a box of one image is then a channels-last (1, C, h, w), what torch's resize takes)."""
        images = self.packed.shard(number)[0]
        return images, torch.from_numpy(images).permute(0, 3, 1, 2)

    def _staging(self) -> tuple[Tensor, Tensor, np.ndarray, np.ndarray]:
        """This thread's two recycled uint8 crops, (2, size, size, C): the first is where either
        resize writes, the second where OpenCV's result is mirrored; the first as torch's resize
        takes it ((1, C, size, size) channels-last), and both as OpenCV does (HWC, or HW for one
        channel). All views of the same memory."""
        staged = getattr(self.local, "staged", None)
        if staged is None:
            channels = self.packed.image_shape[2]
            nhwc = torch.empty((2, self.size, self.size, channels), dtype=torch.uint8)
            planes = nhwc.numpy()[..., 0] if channels == 1 else nhwc.numpy()
            staged = self.local.staged = (nhwc, nhwc[:1].permute(0, 3, 1, 2), planes[0], planes[1])
        return staged

    def _cut_some(self, jobs: list[tuple[Shard, int, Box, Tensor]]) -> None:
        crops, first, plane, mirror = self._staging()
        for (array, shard), index, box, slot in jobs:
            _, _, height, width, _ = box
            if self.cv2 is not None and self.size >= BILINEAR_MIN_FACTOR * max(height, width):
                crop = crops[self._resize_opencv(array[index], box, plane, mirror)]
            else:
                self._resize_torch(shard, index, box, first)
                crop = crops[0]
            if self.norm is None:
                slot.copy_(crop.permute(2, 0, 1))
                continue
            # Normalize's operations (a float copy, then x scale + (-shift) in one pass) while the
            # crop is in cache; on NHWC memory by rows of size x C values
            slot.copy_(crop.view(self.size, -1) if self.channels_last else crop.permute(2, 0, 1))
            torch.addcmul(self.norm[1], slot, self.norm[0], out=slot)

    def _resize_opencv(self, image: np.ndarray, box: Box, plane: np.ndarray, mirror: np.ndarray) -> int:
        """Resize `box` of one HWC `image` of the map with OpenCV, read in place (a strided view:
        no copy), into `plane`, and mirror that into `mirror` where the box is mirrored. Returns
        which staged crop holds the result (0: plane, 1: mirror)."""
        top, left, height, width, mirrored = box
        region = image[top : top + height, left : left + width]
        if region.shape[-1] == 1:
            region = region[..., 0]
        done = self.cv2.resize(region, plane.shape[1::-1], dst=plane, interpolation=self.cv2.INTER_LINEAR)
        if done is not plane:  # cv2 writes into `dst` only when its shape and type fit
            raise RuntimeError("cv2.resize did not write into the staged crop")
        if not mirrored:
            return 0
        if self.cv2.flip(plane, 1, dst=mirror) is not mirror:
            raise RuntimeError("cv2.flip did not write into the staged crop")
        return 1

    @staticmethod
    def _resize_torch(shard: Tensor, index: int, box: Box, crop: Tensor) -> None:
        """Resize `box` of image `index` of the (N, C, H, W) channels-last `shard` view into `crop`
        with torch's antialiased kernel. The box is copied first, contiguous channels-last
        (mirrored as it is copied, where it is): what torch's AVX2 uint8 resize takes."""
        top, left, height, width, mirrored = box
        region = shard[index : index + 1, :, top : top + height, left : left + width]
        region = region.flip(3) if mirrored else region.contiguous(memory_format=torch.channels_last)
        resize_box_into(region, crop)
