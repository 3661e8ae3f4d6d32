"""Training batches of photos straight from their JPEG files: random-resized-crop at decode time.

For photos hundreds of pixels a side, decoding is most of a pipeline's cost; resizing a whole
photo to a fixed size first (what `FileBatches` does for the 32-px pipeline) adds a second full
pass. Here each worker decodes a batch and crops each image to its random box as it goes, the way
FFCV's JPEG path and DALI's ROI decode do:

- a photo over `data.max_pixels` is refused from its header (`images.check_pixels`), before any
  decoder allocates for it;
- the box is drawn from the JPEG header's size before decoding; when it is at least twice the
  crop size on both sides, the JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT
  scaling: the pixels the crop would have thrown away are never computed);
- JPEGs are decoded by `decode.decode_jpeg_fast` (libjpeg-turbo's fast IDCT and chroma
  upsampling through simplejpeg, as FFCV decodes); where simplejpeg is missing or the EXIF
  orientation asks for a turn, by torchvision's libjpeg-turbo decoder (Pillow's `draft` for the
  scaled decode); non-JPEG files by Pillow;
- the box is resized to the crop size by `box_resize.BoxResizer`: OpenCV's bilinear resize,
  read in place, where it is shrunk little, else torch's antialiased uint8 kernel; mirrored at
  random, so workers hand uint8 (B, C, size, size) to the main process, which only
  normalises (`DeviceBatches` with no augment).

`bench/photo_throughput.py` measures it against torchvision's ImageFolder pipeline.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from yingshe.config import CropResize
from yingshe.data.augment import draw_box, draw_uniforms
from yingshe.data.batch import Batch, image_batch
from yingshe.data.box_resize import Box, BoxResizer
from yingshe.data.decode import decode_jpeg, decode_jpeg_fast, jpeg_frame
from yingshe.data.images import UnreadableImage, check_pixels, open_image, to_mode
from yingshe.data.loader import batch_seed
from yingshe.data.splits import Split

SCALE = (0.08, 1.0)  # area fraction of a box; its aspect is `augment.draw_box`'s default, 3/4-4/3


def decode_box(
    data: bytes,
    size: int,
    channels: int,
    u: Sequence[float],
    name: str,
    scale: tuple[float, float] = SCALE,
    flip: bool = True,
) -> tuple[np.ndarray | Tensor, Box]:
    """One photo → (its pixels as (H, W, C) uint8, decoded at the smallest scale that still covers
    the box; the box in those pixels): numpy where the fast or Pillow decoder made it (what
    OpenCV reads), a tensor view of torchvision's (C, H, W) result otherwise."""
    frame = jpeg_frame(data)
    if frame:  # a decompression bomb is refused before simplejpeg or torchvision allocates for it
        check_pixels(frame[:2], name)
    box = draw_box(frame[1], frame[0], u, scale, flip=flip) if frame else None
    reduce = min(box[2], box[3]) // size if box else 1
    fast = None
    if frame and frame[2] == channels:
        factor = min(8, 1 << (max(reduce, 1).bit_length() - 1))  # a power of two, at most `reduce`
        fast = decode_jpeg_fast(data, channels, factor, frame[:2])
    image: np.ndarray | Tensor
    if fast is not None:
        image = fast
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
                ).permute(1, 2, 0)
            except RuntimeError as err:
                raise UnreadableImage(f"{name}: {err}") from err
    else:
        # open_image's draft picks the largest DCT scale (1/2, 1/4, 1/8) keeping both sides at
        # least the requested size: here, the box stays at least `size` on its shorter side
        draft = math.ceil(min(frame[0], frame[1]) / reduce) if frame and reduce >= 2 else None
        pil = open_image(data, name, draft_size=draft)
        array = np.array(to_mode(pil, channels), dtype=np.uint8)
        image = array[:, :, None] if array.ndim == 2 else array
    height, width = image.shape[:2]
    if box is None or (frame[0], frame[1]) != (width, height):  # drafted, turned, or not a JPEG
        turned = box is not None and (frame[0] - frame[1]) * (width - height) < 0  # EXIF 5-8
        if box is None or turned:  # a box for the picture as decoded
            box = draw_box(height, width, u, scale, flip=flip)
        else:  # drafted: the same box, scaled
            sx, sy = width / frame[0], height / frame[1]
            top, left, bh, bw, mirrored = box
            box = (int(top * sy), int(left * sx), max(1, int(bh * sy)), max(1, int(bw * sx)), mirrored)
    return image, box


def decode_crop(
    data: bytes, size: int, channels: int, u: Sequence[float], name: str, resize: CropResize = "torch", **box
) -> Tensor:
    """One photo → its random-resized crop (C, size, size) for the uniforms `u` (`draw_uniforms`;
    `box`: `decode_box`'s scale and flip); torch's exact resize by default (the tests' reference;
    `PhotoCrops` takes `auto`)."""
    image, cut = decode_box(data, size, channels, u, name, **box)
    return BoxResizer(size, channels, resize)(image, cut).permute(2, 0, 1).clone()


class PhotoCrops(Dataset):
    """A split's encoded training images as random-resized crops of `size` (area fraction in
    `scale`, mirrored at random with `flip`), uint8, a batch per `__getitems__` call in a
    DataLoader worker (`crop.PhotoTrainBatches`), NHWC in memory with
    `channels_last`; `resize` (`augment.crop_resize`) as `box_resize.BoxResizer` takes it. The
    boxes come from a generator seeded with `loader.batch_seed(seed, indices)`: a resumed run
    crops as the uninterrupted one did. (Decoding on threads of the training process instead
    delivered no more images a second: docs/benchmarks.md, "Session 12".)"""

    def __init__(
        self,
        split: Split,
        size: int,
        channels: int,
        seed: int = 0,
        scale: tuple[float, float] = SCALE,
        flip: bool = True,
        channels_last: bool = False,
        resize: CropResize = "auto",
    ) -> None:
        if split.files is None:
            raise ValueError("PhotoCrops reads encoded files (prepared shards: packed_crops.PackedCrops)")
        self.split, self.size, self.channels, self.seed = split, size, channels, seed
        self.scale, self.flip, self.channels_last = scale, flip, channels_last
        self.resizer = BoxResizer(size, channels, resize)

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, indices: list[int]) -> Batch:
        generator = torch.Generator().manual_seed(batch_seed(self.seed, indices))
        uniforms = draw_uniforms(len(indices), generator).tolist()  # Python floats: draw_box is scalar
        empty = functools.partial(torch.empty, dtype=torch.uint8)
        images = image_batch(empty, len(indices), self.channels, self.size, self.channels_last)
        ok = torch.zeros(len(indices), dtype=torch.bool)
        for k, i in enumerate(indices):
            try:
                data = self.split.files.read(i)
                image, box = decode_box(
                    data, self.size, self.channels, uniforms[k], self.split.name(i), self.scale, self.flip
                )
                images[k] = self.resizer(image, box).permute(2, 0, 1)
                ok[k] = True
            except (UnreadableImage, OSError, ValueError):
                images[k].zero_()  # flagged not ok; DeviceBatches names the reason
        labels = torch.from_numpy(np.asarray(self.split.labels[indices]))
        return Batch(images, labels, torch.tensor(indices), ok)
