"""A trained classifier loaded from its checkpoint alone: `yingshe.load(run_dir).predict(images)`.

The checkpoint carries the model name and arguments, class names, image size, channel count and
normalisation, so nothing else is needed. Encoded images (paths, bytes) go through Pillow's
`data.images.decode_image`: training and evaluation decode a folder's files with it too, or with
`data.decode.decode_many`, whose faster JPEG path is held to the same pixels. PIL images and arrays
skip the decode and go through the same `to_mode` and `fit_square` steps. Sources that arrive as
arrays (Fashion-MNIST, digits) are never decoded in training. Flip TTA follows the run:
`models.tta` decides it, as in evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from yingshe.data.augment import Normalize
from yingshe.data.images import UnreadableImage, decode_image, fit_square, is_image_name, to_mode
from yingshe.errors import YingsheError
from yingshe.models import create_model
from yingshe.models.tta import flip_tta_applies, tta_forward
from yingshe.runs import load_checkpoint
from yingshe.runtime import resolve_device
from yingshe.schema import Checkpoint

ImageInput = str | Path | bytes | Image.Image | np.ndarray


@dataclass
class Prediction:
    """Top-k classes of one image, or the reason it could not be read. A multi-label model also
    gives `labels`: every label whose sigmoid score reaches its tuned threshold (`top` then holds
    the highest scores, each label's own probability)."""

    source: str
    top: list[tuple[str, float]] = field(default_factory=list)  # (class, probability), best first
    error: str | None = None
    labels: list[str] | None = None  # multi-label models: the labels above their thresholds

    @property
    def label(self) -> str | None:
        return self.top[0][0] if self.top else None


def model_from_checkpoint(checkpoint: Checkpoint) -> nn.Module:
    spec = checkpoint.meta.model
    model = create_model(spec.name, spec.num_classes, spec.in_chans, spec.image_size, **spec.kwargs)
    try:
        model.load_state_dict(checkpoint.state_dict)
    except RuntimeError as err:
        raise YingsheError(
            f"the checkpoint's weights do not fit model {spec.name!r}: {str(err)[:300]}",
            "the checkpoint was written by a different model definition; retrain or use its yingshe version",
        ) from err
    return model


class Classifier:
    """A model plus everything needed to feed it raw images."""

    def __init__(self, checkpoint: Checkpoint, device: str = "auto") -> None:
        meta = checkpoint.meta
        self.checkpoint = checkpoint
        self.classes: list[str] = list(meta.classes)
        self.image_size: int = meta.image_size
        self.channels: int = meta.channels
        self.device = resolve_device(device)
        self.model = model_from_checkpoint(checkpoint).to(self.device).eval()
        self.normalize = Normalize(meta.mean, meta.std).to(self.device)
        # served as the run was evaluated: with flip TTA where the run asked and the data allows
        self.tta_flip = flip_tta_applies(checkpoint.train_config.get("tta_flip", False), meta.flip_invariant)
        self.multilabel = meta.task == "multilabel"
        self.thresholds = meta.thresholds or [0.5] * len(self.classes)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> Classifier:
        return cls(load_checkpoint(path), device)

    def preprocess(self, image: ImageInput) -> np.ndarray:
        """Any accepted input → uint8 (size, size, channels), exactly as in evaluation."""
        if isinstance(image, (str, Path)):
            return decode_image(Path(image).read_bytes(), self.image_size, self.channels, str(image))
        if isinstance(image, bytes):
            return decode_image(image, self.image_size, self.channels)
        if isinstance(image, np.ndarray):
            image = array_to_image(image)
        if not isinstance(image, Image.Image):
            raise UnreadableImage(
                f"cannot read a {type(image).__name__} as an image: pass a path, bytes, "
                "a PIL image or a uint8 array"
            )
        array = np.asarray(fit_square(to_mode(image, self.channels), self.image_size), dtype=np.uint8)
        return array[:, :, None] if array.ndim == 2 else array

    @torch.no_grad()
    def probabilities(self, arrays: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, C) → class probabilities (N, K) on the CPU (per-label sigmoid scores
        for a multi-label model)."""
        x = self.normalize(torch.from_numpy(arrays).permute(0, 3, 1, 2).to(self.device))
        logits = tta_forward(self.model, x, self.tta_flip).float()
        return (logits.sigmoid() if self.multilabel else logits.softmax(1)).cpu()

    def predict(self, images: Iterable[ImageInput], top_k: int = 5, batch_size: int = 64) -> list[Prediction]:
        """Top-k predictions per image; an unreadable image yields a Prediction with `error`."""
        results: list[Prediction] = []
        pending: list[tuple[int, np.ndarray]] = []
        for image in images:
            name = str(image) if isinstance(image, (str, Path)) else f"<{type(image).__name__}>"
            results.append(Prediction(name))
            try:
                pending.append((len(results) - 1, self.preprocess(image)))
            except (UnreadableImage, OSError) as err:
                results[-1].error = str(err)
            if len(pending) >= batch_size:
                self._fill(results, pending, top_k)
        self._fill(results, pending, top_k)
        return results

    def _fill(self, results: list[Prediction], pending: list[tuple[int, np.ndarray]], top_k: int) -> None:
        if not pending:
            return
        probs = self.probabilities(np.stack([array for _, array in pending]))
        k = min(top_k, len(self.classes))
        values, indices = probs.topk(k, dim=1)
        for row, (position, _) in enumerate(pending):
            results[position].top = [
                (self.classes[int(i)], float(v)) for v, i in zip(values[row], indices[row], strict=True)
            ]
            if self.multilabel:
                results[position].labels = [
                    name
                    for name, p, t in zip(self.classes, probs[row].tolist(), self.thresholds, strict=True)
                    if p >= t
                ]
        pending.clear()


def array_to_image(array: np.ndarray) -> Image.Image:
    """A uint8 (H, W), (H, W, 1|3|4) array as a PIL image; anything else is refused with the
    expected form, rather than guessed at (a float array in [0, 1] cast to uint8 is all black)."""
    if array.dtype != np.uint8:
        raise UnreadableImage(
            f"array of dtype {array.dtype}: pass uint8 pixels in 0–255, "
            "e.g. (x * 255).round().astype('uint8')"
        )
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise UnreadableImage(
            f"array of shape {array.shape}: pass (H, W) or (H, W, C) with C in 1, 3, 4 (channels last)"
        )
    return Image.fromarray(array)


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; folders expanded to the images inside them (recursively, sorted)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and is_image_name(p.name))
        else:
            out.append(path)
    return out
