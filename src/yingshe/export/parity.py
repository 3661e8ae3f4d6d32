"""Proof that an exported model answers like the PyTorch one: the same real images through both.

The images are the run's own test split (decoded exactly as evaluation decodes them), so parity
is measured on the inputs the model was judged on, not on random noise a graph might treat
differently. Export fails, leaving no file, when the answers differ beyond `tolerance`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from yingshe.config import RunConfig
from yingshe.data.crop import checkpoint_crop_pct
from yingshe.data.dataset import build_dataset
from yingshe.data.images import centre_crop
from yingshe.data.loader import make_batches
from yingshe.errors import YingsheError
from yingshe.inference import Classifier

DEFAULT_TOLERANCE = 1e-3  # max |logit difference|; float32 graphs differ by ~1e-6 from op reordering
DEFAULT_IMAGES = 64


@dataclass
class Parity:
    images: int
    max_abs_logit_diff: float
    top1_agreement: float  # fraction of images whose top-1 class is the same in both
    tolerance: float
    passed: bool

    def as_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"parity on {self.images} test images: max |logit diff| {self.max_abs_logit_diff:.2e} "
            f"(tolerance {self.tolerance:.0e}), top-1 agreement {100 * self.top1_agreement:.2f}% — {verdict}"
        )


def split_images(classifier: Classifier, count: int = DEFAULT_IMAGES) -> np.ndarray:
    """The first `count` images of the run's test split as uint8 (N, H, W, C), cut as in training."""
    checkpoint = classifier.checkpoint
    cfg = RunConfig.from_dict(checkpoint.config)
    cfg.data.image_size, cfg.data.channels = classifier.image_size, classifier.channels
    cfg.data.crop_pct = checkpoint_crop_pct(classifier.image_size, classifier.resize)
    try:
        dataset = build_dataset(cfg.data, cfg.train.seed, stats=(checkpoint.meta.mean, checkpoint.meta.std))
    except YingsheError as err:
        raise YingsheError(
            f"parity needs the run's test images, but its data cannot be read: {err.problem}",
            "make the training data reachable again (data.data_dir=...), or pass --parity-images 0 "
            "to export without the check (not recommended)",
        ) from err
    split = dataset.test.subset(np.arange(min(count, len(dataset.test))))
    # through the loader evaluation uses, whatever the split holds (arrays, files, tar members, shards)
    side, size = classifier.resize or classifier.image_size, classifier.image_size
    batches = make_batches(split, side, classifier.channels, max(count, 1), train=False, workers=0)
    images = [centre_crop(b.images[b.ok], size).permute(0, 2, 3, 1).numpy() for b in batches]
    images = np.concatenate(images) if images else np.zeros((0, 1, 1, classifier.channels), np.uint8)
    return np.ascontiguousarray(images)


def check_parity(
    reference: Callable[[np.ndarray], torch.Tensor],
    candidate: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
    batch: int = 1,
) -> Parity:
    """Run `images` through both in chunks of `batch` (a fixed-batch export takes only that) and
    compare. Top-1 must agree on every image whose two best reference logits are further apart
    than 2·tolerance (closer than that, a legitimate 1e-6 difference may swap them)."""
    ref = reference(images).numpy()
    got = np.concatenate([candidate(images[i : i + batch]) for i in range(0, len(images), batch)])
    diff = float(np.abs(ref - got).max()) if len(images) else 0.0
    agree = ref.argmax(1) == got.argmax(1)
    ordered = np.sort(ref, axis=1)
    clear = (ordered[:, -1] - ordered[:, -2]) > 2 * tolerance if ref.shape[1] > 1 else np.ones(len(ref), bool)
    passed = diff <= tolerance and bool(agree[clear].all())
    return Parity(len(images), diff, float(agree.mean()) if len(images) else 1.0, tolerance, passed)


def require_parity(parity: Parity, what: str) -> None:
    if not parity.passed:
        raise YingsheError(
            f"the {what} export does not reproduce the PyTorch model: {parity.line()}; no file was written",
            "report this with the model name; try another --opset, or --format torchscript",
        )
