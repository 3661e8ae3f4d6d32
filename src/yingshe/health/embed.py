"""Image embeddings from a trained run, for near-duplicate search with `data check --model RUN`.

The embedding is the model's `forward_features` where it has one (pooled to a vector), else
the input of its last linear layer (the penultimate features every classifier here ends with),
caught by a forward hook during one ordinary forward call.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from yingshe.data.augment import Normalize
from yingshe.data.dataset import convert_channels, resize_array
from yingshe.data.images import UnreadableImage, decode_image
from yingshe.data.splits import SourceData
from yingshe.inference import model_from_checkpoint
from yingshe.runs import load_checkpoint


def features(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """(B, D) features of a batch: `forward_features` pooled, else the last linear layer's input."""
    if hasattr(model, "forward_features"):
        out = model.forward_features(inputs)
        return out.flatten(2).mean(-1) if out.ndim > 2 else out
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    caught: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda _m, args, _out: caught.append(args[0]))
    try:
        model(inputs)
    finally:
        handle.remove()
    return caught[0].flatten(1)


def split_pixels(data: SourceData, split: str, size: int, channels: int) -> np.ndarray:
    chosen = data.splits[split]
    if chosen.images is not None:
        images = chosen.images
        if images.shape[-1] != channels:
            images = convert_channels(images, channels)
        return resize_array(images, size) if images.shape[1:3] != (size, size) else images
    out = np.zeros((len(chosen), size, size, channels), dtype=np.uint8)
    for i in range(len(chosen)):
        try:
            if chosen.files is not None:
                out[i] = decode_image(chosen.files.read(i), size, channels)
            else:
                out[i] = chosen.packed.take(np.array([i]))[0]
        except (UnreadableImage, OSError):
            continue  # unreadable rows are never searched
    return out


@torch.no_grad()
def embed_source(data: SourceData, run: str, order: list[tuple[str, int]], batch: int = 256) -> np.ndarray:
    """(N, D) float32 embeddings of the images in `order` ((split, position) rows)."""
    checkpoint = load_checkpoint(run)
    model = model_from_checkpoint(checkpoint).eval()
    meta = checkpoint.meta
    size, channels = meta.image_size, meta.channels
    normalize = Normalize(meta.mean, meta.std)
    pixels = {s: split_pixels(data, s, size, channels) for s in {s for s, _ in order}}
    stacked = np.stack([pixels[s][p] for s, p in order])
    rows = []
    for start in range(0, len(stacked), batch):
        images = torch.from_numpy(stacked[start : start + batch]).permute(0, 3, 1, 2)
        rows.append(features(model, normalize(images)).float().numpy())
    return np.concatenate(rows)
