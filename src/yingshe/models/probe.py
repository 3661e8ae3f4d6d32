"""Is the image size big enough for the model? Decided once, before a run folder exists.

A network that shrinks its input k-fold (strided convolutions, pooling, patches) needs at least k
pixels a side for its last stage to see one whole pixel; below that it trains on padding, and a
3 px ResNet "trains" silently. The factor is measured rather than declared per model: one no-grad
forward of a blank 64 px image, with hooks noting the smallest map put out by any convolution or
pooling layer that shrinks its input (global pooling excluded). A few milliseconds on a CPU, and it
works for any model in any zoo.
"""

from __future__ import annotations

import torch
from torch import nn

from yingshe.errors import YingsheError

PROBE = 64
LOCAL_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)  # not AdaptiveAvgPool2d: global pooling


def smallest_map(model: nn.Module, channels: int, size: int) -> tuple[int | None, Exception | None]:
    """The smallest side of a local layer's output map for a blank `size` px input, and the error
    when the whole forward failed (a model built for a fixed size fails after its first layers)."""
    sides: list[int] = []

    def note(module: nn.Module, inputs, output) -> None:  # only layers that shrink the map count
        x = inputs[0] if inputs else None
        maps = isinstance(output, torch.Tensor) and output.ndim == 4 and isinstance(x, torch.Tensor)
        if maps and min(output.shape[-2:]) < min(x.shape[-2:]):
            sides.append(min(output.shape[-2:]))

    hooks = [m.register_forward_hook(note) for m in model.modules() if isinstance(m, LOCAL_LAYERS)]
    was_training, error = model.training, None
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, size, size))
    except Exception as err:  # the message goes into the user's error
        error = err
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return (min(sides) if sides else None), error


def downsampling(model: nn.Module, channels: int) -> int | None:
    """How many times smaller the model's smallest local map is than its input, or None when it
    has no convolution or pooling to measure."""
    side, _ = smallest_map(model, channels, PROBE)
    return None if not side else max(1, round(PROBE / side))


def check_input_size(model: nn.Module, name: str, channels: int, image_size: int) -> None:
    """Refuse an image size below the model's downsampling factor, or one it cannot run at."""
    factor = downsampling(model, channels)
    if factor is not None and image_size < factor:
        raise YingsheError(
            f"image size {image_size} px is too small for model {name}: it shrinks its input "
            f"{factor}x, so images must be at least {factor} px a side",
            f"use --image-size {factor} or more (data.image_size), or a model made for small images",
        )
    _, error = smallest_map(model, channels, image_size)
    if error is not None:
        raise YingsheError(
            f"model {name} cannot take {image_size} px, {channels}-channel images: {error}",
            "choose another --image-size (data.image_size) or another model",
        )


def check_progressive_side(
    model: nn.Module, name: str, channels: int, image_size: int, side: int | None
) -> None:
    """Progressive resizing's first side (`augment.progressive_min`) must be below the image size
    and one the model can take, by the same measure as the image size itself."""
    if side is None:
        return
    if side >= image_size:
        raise YingsheError(
            f"augment.progressive_min={side} is not below the image size ({image_size} px): "
            "progressive resizing would never resize",
            f"set augment.progressive_min below {image_size} (three quarters of it is usual), or null",
        )
    factor = downsampling(model, channels)
    _, error = smallest_map(model, channels, side)
    if (factor is not None and side < factor) or error is not None:
        why = f"it shrinks its input {factor}x" if error is None else str(error)
        raise YingsheError(
            f"augment.progressive_min={side}: model {name} cannot take {side} px images ({why})",
            f"raise augment.progressive_min towards {image_size}, or set it to null (a model with a "
            "fixed input size, such as a ViT, trains at full size only)",
        )
