"""Augmentation on whole batches of tensors, on whatever device the batch is on.

Per-sample randomness comes from tensors of random parameters, not Python loops, so the cost is
a few kernel launches per batch whatever the batch size (the airbench approach). Per-image
policies (RandAugment, TrivialAugment) are torchvision v2 transforms applied in loader workers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from yingshe.config import AugmentConfig
from yingshe.errors import YingsheError


class Normalize(torch.nn.Module):
    """uint8 (or 0–255 float) images → float, standardised per channel with dataset statistics."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std).view(1, -1, 1, 1)))
        self.register_buffer(
            "shift", torch.tensor(mean).view(1, -1, 1, 1) / torch.tensor(std).view(1, -1, 1, 1)
        )
        # addcmul's addend; not in the state dict, so checkpoints keep their keys
        self.register_buffer("neg_shift", -self.shift, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        # (x / 255 - mean) / std as x × scale + (−shift) in one pass (addcmul), in place on one
        # fresh float copy: a second full-size temporary costs more than the arithmetic on the CPU
        # (512 CIFAR images: 1.3 ms instead of 9 ms), and one pass costs about half of a product
        # and a difference (0.05 against 0.10 ms a 224-px image in cache, one core). It rounds
        # differently from them (about a quarter of the values by an ulp)
        # `out=` is recorded neither by autograd nor by the exporters: they get the plain form
        if (x.requires_grad and torch.is_grad_enabled()) or _exporting():
            return torch.addcmul(self.neg_shift, x.float(), self.scale)
        if not _channels_last_only(x):
            y = x.to(torch.float32, copy=True)
            return torch.addcmul(self.neg_shift, y, self.scale, out=y)
        # NHWC memory: a (C, 1, 1) operand makes the innermost loop 3 long (0.69-0.73 ms an image
        # at 224 px); the same products over rows of W×C values run at full width, as NCHW does
        # (`bench/photo_throughput.py --parts`). The arithmetic is in place on a fresh tensor,
        # never through a view (ONNX tracing loses those)
        b, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(b, h, w * c)  # a view: the memory already is NHWC
        scale, neg_shift = self.row_operands(c, w)
        y = rows.to(torch.float32, copy=True)
        torch.addcmul(neg_shift, y, scale, out=y)
        return y.view(b, h, w, c).permute(0, 3, 1, 2)

    def row_operands(self, channels: int, width: int) -> tuple[Tensor, Tensor]:
        """(scale, −shift) for one NHWC row of `width` pixels: W×C values, channel fastest."""
        scale, neg_shift = self.scale.reshape(-1), self.neg_shift.reshape(-1)
        if scale.numel() == 1:  # one statistic for every channel, as the NCHW broadcast allows
            scale, neg_shift = scale.expand(channels), neg_shift.expand(channels)
        return scale.repeat(width), neg_shift.repeat(width)


def _exporting() -> bool:
    """Whether an exporter is recording the graph: torch.onnx's TorchScript-based exporter has no
    symbolic for `addcmul(..., out=)` on the NHWC rows (colour images), and falls back to its
    slower dynamo path with a graph dump on stdout."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _channels_last_only(x: Tensor) -> bool:
    """4-D, channels-last in memory, and not also contiguous (more than one channel and pixel)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def per_image_policy(name: str) -> torch.nn.Module | None:
    """The torchvision v2 policy for uint8 CHW tensors, or None."""
    if name == "none":
        return None
    from torchvision.transforms import v2  # imported here: torchvision adds ~1 s to start-up

    if name == "randaugment":
        return v2.RandAugment()
    if name == "trivialaugment":
        return v2.TrivialAugmentWide()
    raise YingsheError(f"unknown augment.policy {name!r}", "use none, randaugment or trivialaugment")


class BatchAugment:
    """Random crop with padding, flip, affine, erasing and mixup/cutmix for a training batch."""

    def __init__(self, cfg: AugmentConfig, image_size: int, flip_invariant: bool, num_classes: int):
        self.cfg = cfg
        self.padding = cfg.crop_padding if cfg.crop_padding is not None else image_size // 8
        self.hflip = flip_invariant if cfg.hflip is None else cfg.hflip
        self.num_classes = num_classes
        self.alternate = bool(self.hflip and cfg.alternate_flip)  # needs the images' positions
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch under way (1-based): the alternating flip mirrors by its parity."""
        self.epoch = epoch

    def __call__(
        self, x: Tensor, y: Tensor, normalize: Normalize, index: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """uint8 (B, C, H, W) and int labels → normalised floats and targets (B,) or (B, K).
        `index`: the images' positions in their split, which the alternating flip needs."""
        flip: bool | Tensor = self.hflip
        if self.alternate and index is not None:
            flip = alternate_mirror(index, self.epoch)
        if self.padding > 0:
            x = random_crop(x, self.padding, flip=flip)  # the flip rides on the crop's gather
        elif isinstance(flip, Tensor) or flip:
            x = random_flip(x, flip if isinstance(flip, Tensor) else None)
        x = normalize(x)
        if self.cfg.rotate or self.cfg.translate or self.cfg.scale:
            x = random_affine(x, self.cfg.rotate, self.cfg.translate, self.cfg.scale)
        if self.cfg.erasing > 0:
            x = random_erase(x, self.cfg.erasing)
        if self.cfg.mixup > 0 or self.cfg.cutmix > 0:
            return mix(x, y, self.num_classes, self.cfg.mixup, self.cfg.cutmix)
        return x, y


def alternate_mirror(index: Tensor, epoch: int) -> Tensor:
    """airbench's alternating flip: which of the images at split positions `index` are mirrored
    in `epoch`. A fixed hash of the position picks the half that starts mirrored; every image
    then changes orientation each epoch, so two epochs in a row see both, where a random flip
    shows a quarter of the images the same way twice (airbench: +0.18 points at 10 epochs).
    Unlike airbench's random first mask, the starting half is the same for every seed."""
    start = ((index.long() * 0x9E3779B1) >> 16) & 1  # Fibonacci hashing: a fixed, even mix
    return (start + epoch) % 2 == 1


def random_crop(x: Tensor, padding: int, flip: bool | Tensor = False) -> Tensor:
    """Zero-pad by `padding` and crop back at a random offset per image: (B, C, H, W) → same.

    With `flip`, half the images (at random) are also mirrored, in the same pass; a (B,) bool
    tensor mirrors exactly those (the alternating flip). One gather over
    the flattened padded images: 2-3× faster on the CPU than indexing rows and columns (512 CIFAR
    images: 2.0 vs 5.7 ms on one core), and the flip costs nothing extra.
    """
    b, c, h, w = x.shape
    side = w + 2 * padding
    padded = F.pad(x, (padding,) * 4).reshape(b, c, -1)  # (B, C, (H+2p)(W+2p))
    dy = torch.randint(0, 2 * padding + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (b, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    if not isinstance(flip, Tensor) and flip:
        flip = torch.rand(b, device=x.device) < 0.5
    if isinstance(flip, Tensor):
        cols = torch.where(flip.view(b, 1, 1), w - 1 - cols, cols)  # (B, 1, W)
    index = (dy + rows) * side + dx + cols  # (B, H, W) offsets into the padded image
    return padded.gather(2, index.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)


def random_flip(x: Tensor, mirrored: Tensor | None = None) -> Tensor:
    """Mirror half the images at random, or exactly those a (B,) bool `mirrored` names."""
    if mirrored is None:
        mirrored = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(mirrored.view(-1, 1, 1, 1), x.flip(-1), x)


def random_affine(x: Tensor, degrees: float, translate: float, scale: float) -> Tensor:
    """Per-image rotation, translation and zoom in one grid_sample (bilinear, zero fill)."""
    b = x.shape[0]
    rand = torch.rand(b, 4, device=x.device) * 2 - 1  # uniform in [-1, 1]
    angle = rand[:, 0] * math.radians(degrees)
    zoom = 1 + rand[:, 1] * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [
            torch.stack([cos, -sin, rand[:, 2] * translate * 2], 1),
            torch.stack([sin, cos, rand[:, 3] * translate * 2], 1),
        ],
        1,
    )  # (B, 2, 3), translation in normalised coordinates (the side spans 2)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_erase(x: Tensor, probability: float, max_area: float = 0.25) -> Tensor:
    """Cutout: with `probability`, zero (the channel mean after normalising) a random box."""
    b, _, h, w = x.shape
    area = torch.empty(b, device=x.device).uniform_(0.02, max_area) * h * w
    aspect = torch.exp(torch.empty(b, device=x.device).uniform_(math.log(0.3), math.log(3.3)))
    bh = (area * aspect).sqrt().clamp(1, h)
    bw = (area / aspect).sqrt().clamp(1, w)
    top = torch.rand(b, device=x.device) * (h - bh)
    left = torch.rand(b, device=x.device) * (w - bw)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (
        (ys >= top.view(b, 1, 1))
        & (ys < (top + bh).view(b, 1, 1))
        & (xs >= left.view(b, 1, 1))
        & (xs < (left + bw).view(b, 1, 1))
    )
    erase = inside & (torch.rand(b, 1, 1, device=x.device) < probability)
    return x.masked_fill(erase.unsqueeze(1), 0.0)


def mix(x: Tensor, y: Tensor, num_classes: int, mixup: float, cutmix: float) -> tuple[Tensor, Tensor]:
    """Mixup or cutmix (one, chosen at random when both are on) with the reversed batch.

    Returns soft targets (B, K): the loss takes class probabilities, so label smoothing composes.
    Multi-hot targets (multi-label, y (B, K)) are mixed the same way: each label's target is the
    share of it in the mixed image.
    """
    target = y.float() if y.ndim == 2 else F.one_hot(y, num_classes).float()
    use_cutmix = cutmix > 0 and (mixup <= 0 or torch.rand(()) < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = x.flip(0)
    if use_cutmix:
        h, w = x.shape[-2:]
        cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        x = x.clone()
        x[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
        lam = 1 - (bottom - top) * (right - left) / (h * w)
    else:
        x = lam * x + (1 - lam) * partner
    return x, lam * target + (1 - lam) * target.flip(0)


DRAWS = 5  # uniforms a box takes: area, aspect, left, top, mirror


def draw_uniforms(count: int, generator: torch.Generator | None = None) -> np.ndarray:
    """(count, DRAWS) uniforms in [0, 1) from `generator` (torch's global one by default), drawn
    for a whole batch before any image is cut, so the boxes do not depend on which thread or
    worker cuts which image."""
    return torch.rand((count, DRAWS), dtype=torch.float64, generator=generator).numpy()


def draw_box(
    height: int,
    width: int,
    u: Sequence[float],
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = False,
) -> tuple[int, int, int, int, bool]:
    """One random-resized-crop box (top, left, box height, box width, mirrored) of a `height` ×
    `width` image from the uniforms `u`: `scale` × the area, aspect log-uniform in `ratio`,
    clamped to the image (torchvision instead redraws up to 10 times, then falls back to a
    centre crop; clamping makes boxes near the full image slightly squarer), placed uniformly,
    mirrored with probability 1/2 where `flip`."""
    area = (scale[0] + u[0] * (scale[1] - scale[0])) * height * width
    low, high = math.log(ratio[0]), math.log(ratio[1])
    aspect = math.exp(low + u[1] * (high - low))
    bw = int(min(max(round(math.sqrt(area * aspect)), 1), width))
    bh = int(min(max(round(math.sqrt(area / aspect)), 1), height))
    left, top = int(u[2] * (width - bw + 1)), int(u[3] * (height - bh + 1))
    return top, left, bh, bw, flip and bool(u[4] < 0.5)


def draw_boxes(
    b: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = False,
) -> list[tuple[int, int, int, int, bool]]:
    """`b` boxes (`draw_box`) for images of `height` × `width`, from one batch of uniforms.
    `random_resized_crop` and `packed_crops.PackedCrops` both draw here, in this order, so for
    one seed they crop the same boxes; `photo.PhotoCrops` uses `draw_box` per photo, once its
    size is read from the JPEG header, with uniforms from its own per-batch generator."""
    return [draw_box(height, width, u, scale, ratio, flip) for u in draw_uniforms(b).tolist()]


# F.interpolate's own checks cost ~50 µs a call, a tenth of a 224-px resize; the op is the same
_RESIZE_AA = getattr(torch._C._nn, "_upsample_bilinear2d_aa", None)


def resize_box(box: Tensor, size: int) -> Tensor:
    """(1, C, h, w) → (1, C, size, size): bilinear, antialiased, align_corners False
    (`F.interpolate`'s result). The box is first made contiguous channels-last: torch's AVX2
    uint8 path only takes that, and a strided box (a view into a batch or a shard) falls to the
    generic kernel, twice as slow (0.48 against 0.23 ms for a 150×170 box to 224 on one core,
    copy included); channels-first uint8 is slower still and a float `grid_sample` over the
    batch 5× so, without antialiasing."""
    box = box.contiguous(memory_format=torch.channels_last)
    if _RESIZE_AA is not None:
        return _RESIZE_AA(box, [size, size], False)
    return F.interpolate(box, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def resize_box_into(box: Tensor, out: Tensor) -> None:
    """`resize_box` into `out` ((1, C, size, size) uint8, contiguous channels-last; `box` as
    well): a recycled output saves an allocation and its first-touch page faults per image."""
    if _RESIZE_AA is not None:
        _RESIZE_AA(box, list(out.shape[-2:]), False, out=out)
    else:
        out.copy_(resize_box(box, out.shape[-1]))


def random_resized_crop(
    x: Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = False,
) -> Tensor:
    """Inception-style random-resized-crop of a whole batch: (B, C, H, W) → (B, C, size, size) of
    the same dtype (uint8 stays uint8: normalise afterwards, on fewer pixels).

    Boxes come from `draw_boxes`; each is resized by `resize_box`. With `flip`, half are
    mirrored. The result is channels-first. (For prepared shards `packed_crops.PackedCrops` crops
    the same boxes straight from the memory map, without gathering the batch first.)
    """
    b, _, h, w = x.shape
    boxes = draw_boxes(b, h, w, scale, ratio, flip)
    out = torch.empty((b, x.shape[1], size, size), dtype=x.dtype, device=x.device)
    for i, (t, le, hh, ww, m) in enumerate(boxes):
        box = x[i : i + 1, :, t : t + hh, le : le + ww]
        out[i] = resize_box(box.flip(-1) if m else box, size)[0]  # mirrored before the resize,
    return out  # as PackedCrops's torch resize does (cheaper there: the box is copied anyway)


class ResizedCropAugment:
    """Training augmentation for photos prepared at a short side above the crop size (256 for a
    224 crop): a batch random-resized-crop to `size` with a flip, then normalisation. Same
    interface as `BatchAugment`, so `DeviceBatches` takes either."""

    def __init__(self, size: int, hflip: bool = True, scale: tuple[float, float] = (0.08, 1.0)) -> None:
        self.size, self.hflip, self.scale = size, hflip, scale

    def set_epoch(self, epoch: int) -> None:
        """Nothing depends on the epoch here (the boxes draw their own mirror)."""

    def __call__(
        self, x: Tensor, y: Tensor, normalize: Normalize, index: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        return normalize(random_resized_crop(x, self.size, self.scale, flip=self.hflip)), y
