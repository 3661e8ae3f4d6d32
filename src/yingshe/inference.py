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

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from yingshe.config import DEFAULT_TOP_K
from yingshe.data.augment import Normalize
from yingshe.data.images import (
    UnreadableImage,
    decode_image,
    fit_square,
    is_image_name,
    printable_path,
    read_file,
    to_mode,
)
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


class ImageClassifier:
    """Raw images in, top-k classes out; subclasses supply `probabilities` for one backend.

    Every backend (PyTorch here, ONNX Runtime in `export.onnx`) shares `preprocess`, which is
    `data.images.decode_image`, the function evaluation uses, so their answers cannot drift apart.
    """

    classes: list[str]
    image_size: int
    channels: int
    source: str = ""  # what was loaded, for `GET /v1/model` and messages
    resize: int | None = None  # short side before the centre `image_size` crop (data.crop_pct); None: none
    multilabel: bool = False  # sigmoid scores per label; `labels` are those above `thresholds`
    thresholds: list[float] | None = None  # multi-label: one per class, tuned on validation

    def preprocess(self, image: ImageInput) -> np.ndarray:
        """Any accepted input → uint8 (size, size, channels), exactly as in evaluation (with
        `resize`: the short side resized to it, then the centre `image_size` square)."""
        size, resize = self.image_size, self.resize
        if isinstance(image, (str, Path)):
            return decode_image(read_file(image), size, self.channels, printable_path(image), resize)
        if isinstance(image, bytes):
            return decode_image(image, size, self.channels, resize=resize)
        if isinstance(image, np.ndarray):
            image = array_to_image(image)
        if not isinstance(image, Image.Image):
            raise UnreadableImage(
                f"cannot read a {type(image).__name__} as an image: pass a path, bytes, "
                "a PIL image or a uint8 array"
            )
        array = np.asarray(fit_square(to_mode(image, self.channels), size, resize), dtype=np.uint8)
        return array[:, :, None] if array.ndim == 2 else array

    def probabilities(self, arrays: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, C) → class probabilities (N, K) on the CPU."""
        raise NotImplementedError

    def top(self, probs: torch.Tensor, top_k: int = DEFAULT_TOP_K) -> list[list[tuple[str, float]]]:
        """(N, K) probabilities → per row the top-k (class, probability), best first."""
        values, indices = probs.topk(max(1, min(top_k, len(self.classes))), dim=1)
        return [
            [(self.classes[int(i)], float(v)) for v, i in zip(vrow, irow, strict=True)]
            for vrow, irow in zip(values, indices, strict=True)
        ]

    def label_thresholds(self) -> list[float]:
        """Multi-label: the threshold of each label, as tuned on validation (0.5 each untuned, e.g.
        a last.pt written before tuning)."""
        return [float(t) for t in self.thresholds or [0.5] * len(self.classes)]

    def above(self, probs: torch.Tensor) -> list[list[str]]:
        """Multi-label: per row, every label whose score reaches its threshold."""
        limits = self.label_thresholds()
        return [
            [name for name, p, t in zip(self.classes, row, limits, strict=True) if p >= t]
            for row in probs.tolist()
        ]

    def predict(
        self, images: Iterable[ImageInput], top_k: int = DEFAULT_TOP_K, batch_size: int = 64
    ) -> list[Prediction]:
        """Top-k predictions per image; an unreadable image yields a Prediction with `error`."""
        return list(self.iter_predict(images, top_k, batch_size))

    def iter_predict(
        self, images: Iterable[ImageInput], top_k: int = DEFAULT_TOP_K, batch_size: int = 64
    ) -> Iterator[Prediction]:
        """`predict` as a stream, in input order: at most `batch_size` decoded images are held at
        once, so a folder of 100 k images runs in bounded memory when `images` is lazy too."""
        results: list[Prediction] = []
        pending: list[tuple[int, np.ndarray]] = []
        for image in images:
            name = str(image) if isinstance(image, (str, Path)) else f"<{type(image).__name__}>"
            results.append(Prediction(name))
            try:
                pending.append((len(results) - 1, self.preprocess(image)))
            except (UnreadableImage, OSError, Image.DecompressionBombError) as err:
                results[-1].error = readable_reason(err, name)
            if len(pending) >= batch_size:
                self._fill(results, pending, top_k)
                yield from results
                results.clear()
        self._fill(results, pending, top_k)
        yield from results

    def _fill(self, results: list[Prediction], pending: list[tuple[int, np.ndarray]], top_k: int) -> None:
        if not pending:
            return
        probs = self.probabilities(np.stack([array for _, array in pending]))
        tops = self.top(probs, top_k)
        labels = self.above(probs) if self.multilabel else [None] * len(tops)
        for (position, _), top, chosen in zip(pending, tops, labels, strict=True):
            results[position].top = top
            results[position].labels = chosen
        pending.clear()


class Classifier(ImageClassifier):
    """A PyTorch model from a yingshe checkpoint plus everything needed to feed it raw images."""

    def __init__(self, checkpoint: Checkpoint, device: str = "auto") -> None:
        meta = checkpoint.meta
        self.checkpoint = checkpoint
        self.classes = list(meta.classes)
        self.image_size = meta.image_size
        self.resize = meta.resize
        self.channels = meta.channels
        self.device = resolve_device(device)
        self.model = model_from_checkpoint(checkpoint).to(self.device).eval()
        self.normalize = Normalize(meta.mean, meta.std).to(self.device)
        # served as the run was evaluated: with flip TTA where the run asked and the data allows
        self.tta_flip = flip_tta_applies(checkpoint.train_config.get("tta_flip", False), meta.flip_invariant)
        self.tta_translate = int(checkpoint.train_config.get("tta_translate", 0))
        self.multilabel = meta.task == "multilabel"
        self.thresholds = meta.thresholds

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> Classifier:
        classifier = cls(load_checkpoint(path), device)
        classifier.source = Path(path).name
        return classifier

    @torch.no_grad()
    def logits(self, arrays: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, C) → logits (N, K) on the CPU, flip TTA applied as in evaluation."""
        x = self.normalize(torch.from_numpy(arrays).permute(0, 3, 1, 2).to(self.device))
        return tta_forward(self.model, x, self.tta_flip, self.tta_translate).float().cpu()

    def probabilities(self, arrays: np.ndarray) -> torch.Tensor:
        """Softmax over classes; per-label sigmoid scores for a multi-label model."""
        logits = self.logits(arrays)
        return logits.sigmoid() if self.multilabel else logits.softmax(1)


def readable_reason(err: BaseException, name: str) -> str:
    """Why an image could not be read, as a sentence without the path (the caller shows the path
    once) and without Pillow's `<_io.BytesIO object at 0x…>`."""
    if isinstance(err.__cause__, UnidentifiedImageError):
        return "not an image in a format Pillow can read (unknown or unsupported file type)"
    if isinstance(err, FileNotFoundError):
        return "no such file"
    if isinstance(err, IsADirectoryError):
        return "is a folder, not an image file"
    if isinstance(err, PermissionError):
        return "permission denied"
    text = str(err)
    for prefix in (f"{name}: ", "<bytes>: "):
        text = text.removeprefix(prefix)
    return re.sub(r"\s*<_io\.\w+ object at 0x[0-9a-f]+>", "", text)


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
    return list(iter_paths(paths))


def iter_paths(paths: Iterable[str | Path]) -> Iterator[Path]:
    """`expand_paths` lazily: a folder is walked one directory at a time (each sorted), so the
    paths of a folder of 100 k images are never all held at once."""
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            yield path
            continue
        for folder, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                if is_image_name(name) and os.path.isfile(os.path.join(folder, name)):
                    yield Path(folder, name)
