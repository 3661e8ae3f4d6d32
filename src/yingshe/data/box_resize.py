"""Resizing random-resized-crop boxes to the crop size, the one way every crop path does it.

The crop paths (`packed_crops.PackedCrops` on prepared shards, `photo.PhotoCrops` on decoded
photos) each cut a box of an (H, W, C) uint8 image and resize it to
size × size. `BoxResizer` does that into a recycled crop per thread:

- OpenCV's bilinear resize (`resize` auto or opencv, where cv2 imports) for boxes shrunk by no more
  than `BILINEAR_MIN_FACTOR` of images handed over as numpy: it reads the box in place (a strided
  view, no copy), and the 224-px result, not the box, is mirrored. 150×170 → 224 in 0.082 against
  torch's 0.125 ms on one core. It has no antialiasing, hence the limit; its crops differ from
  torch's by about 0.2 levels on average on the photo corpus (docs/benchmarks.md, round 6).
- torch's antialiased bilinear kernel otherwise (the values of `augment.random_resized_crop`):
  the box is first copied contiguous channels-last, mirrored as it is copied where it is, which
  is what torch's AVX2 uint8 kernel takes.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, get_args

import numpy as np
import torch
from torch import Tensor

from yingshe.config import CropResize
from yingshe.data.augment import resize_box_into

Box = tuple[int, int, int, int, bool]  # top, left, height, width, mirrored
# a box shrunk by at most this factor (a 256-px prepared photo to a 224 crop: 0.875) is resized
# without antialiasing, where the antialiased filter would be barely wider
BILINEAR_MIN_FACTOR = 0.75


@functools.cache
def opencv() -> Any | None:
    """cv2 set to one thread (the crop paths' own threads or workers are the parallelism; the
    setting is process-wide), or None where it is absent. Imported on first use: it costs ~0.1 s,
    and only photo training cuts crops."""
    try:
        import cv2
    except ImportError:
        return None
    cv2.setNumThreads(1)
    return cv2


def check_resize(resize: str) -> None:
    """Fail early on a `resize` that is not a CropResize, or opencv where cv2 does not import."""
    if resize not in get_args(CropResize):
        raise ValueError(f"resize must be auto, torch or opencv, not {resize!r}")
    if resize == "opencv" and opencv() is None:
        raise ValueError("resize='opencv' needs OpenCV: pip install opencv-python-headless")


class BoxResizer:
    """Resizes boxes of (H, W, C) uint8 images to (size, size, C) crops, each written into the
    calling thread's recycled crop (valid until that thread's next call)."""

    def __init__(self, size: int, channels: int, resize: CropResize = "auto") -> None:
        check_resize(resize)
        self.size, self.channels, self.resize = size, channels, resize
        self.cv2 = None if resize == "torch" else opencv()
        self.local = threading.local()

    def __getstate__(self) -> dict:
        """For DataLoader workers started by spawn: cv2 and the thread-local crops stay behind."""
        return {"size": self.size, "channels": self.channels, "resize": self.resize}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def uses_opencv(self, box: Box) -> bool:
        """Whether `box` goes to OpenCV (when handed over as numpy): cv2 is there and the box is
        shrunk by no more than `BILINEAR_MIN_FACTOR`."""
        return self.cv2 is not None and self.size >= BILINEAR_MIN_FACTOR * max(box[2], box[3])

    def __call__(self, image: np.ndarray | Tensor, box: Box) -> Tensor:
        """The (size, size, C) crop of `box` of the (H, W, C) `image`: numpy (C-contiguous rows,
        as a decoder or a shard's map gives) for OpenCV to read in place where `uses_opencv`, or
        a tensor of any strides for torch. Numpy is read without a conversion (a tensor's
        `.numpy()` costs ~7 µs, a twentieth of the resize)."""
        crops, first, plane, mirror = self._staging()
        if isinstance(image, np.ndarray):
            if self.uses_opencv(box):
                return crops[self._resize_opencv(image, box, plane, mirror)]
            image = torch.from_numpy(image)
        self._resize_torch(image, box, first)
        return crops[0]

    def _staging(self) -> tuple[Tensor, Tensor, np.ndarray, np.ndarray]:
        """This thread's two recycled uint8 crops, (2, size, size, C): the first is where either
        resize writes, the second where OpenCV's result is mirrored; the first as torch's resize
        takes it ((1, C, size, size) channels-last), and both as OpenCV does (HWC, or HW for one
        channel). All views of the same memory."""
        staged = getattr(self.local, "staged", None)
        if staged is None:
            nhwc = torch.empty((2, self.size, self.size, self.channels), dtype=torch.uint8)
            planes = nhwc.numpy()[..., 0] if self.channels == 1 else nhwc.numpy()
            staged = self.local.staged = (nhwc, nhwc[:1].permute(0, 3, 1, 2), planes[0], planes[1])
        return staged

    def _resize_opencv(self, image: np.ndarray, box: Box, plane: np.ndarray, mirror: np.ndarray) -> int:
        """Resize `box` of the HWC `image` with OpenCV, read in place, into `plane`, and mirror
        that into `mirror` where the box is mirrored. Returns which staged crop holds the result
        (0: plane, 1: mirror)."""
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
    def _resize_torch(image: Tensor, box: Box, crop: Tensor) -> None:
        """Resize `box` of the (H, W, C) `image` into `crop` ((1, C, size, size) channels-last)
        with torch's antialiased kernel, the box copied contiguous channels-last first (mirrored
        as it is copied, where it is)."""
        top, left, height, width, mirrored = box
        region = image.permute(2, 0, 1)[None, :, top : top + height, left : left + width]
        region = region.flip(3) if mirrored else region  # flip's copy keeps the input's layout
        resize_box_into(region.contiguous(memory_format=torch.channels_last), crop)
