"""Proof that an exported model answers like the PyTorch one: the same real images through both.

The images are the run's own test split (decoded exactly as evaluation decodes them), so parity
is measured on the inputs the model was judged on, not on random noise a graph might treat
differently. Export fails, leaving no file, when the answers differ beyond `tolerance`: logits
for a single-label model, sigmoid scores and the label sets at the tuned thresholds for a
multi-label one.
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

DEFAULT_TOLERANCE = 1e-3  # max |logit| (multi-label: |score|) difference; float32 graphs differ by ~1e-6
DEFAULT_IMAGES = 64


@dataclass
class Parity:
    images: int
    max_abs_logit_diff: float
    top1_agreement: float  # fraction of images whose top-1 class is the same in both
    tolerance: float
    passed: bool
    # multi-label only (None, and left out of `as_dict`, for single-label): what `passed` judges there
    max_abs_score_diff: float | None = None  # sigmoid scores
    label_agreement: float | None = None  # fraction of images with the same label set at the thresholds

    def as_dict(self) -> dict[str, float | int | bool]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        head = f"parity on {self.images} test images: "
        if self.max_abs_score_diff is not None and self.label_agreement is not None:
            return (
                f"{head}max |sigmoid score diff| {self.max_abs_score_diff:.2e} "
                f"(tolerance {self.tolerance:.0e}), label-set agreement {100 * self.label_agreement:.2f}%, "
                f"max |logit diff| {self.max_abs_logit_diff:.2e} — {verdict}"
            )
        return (
            f"{head}max |logit diff| {self.max_abs_logit_diff:.2e} "
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
    thresholds: list[float] | None = None,
) -> Parity:
    """Run `images` through both in chunks of `batch` (a fixed-batch export takes only that) and
    compare: logits and top-1 for a single-label model, sigmoid scores and label sets at
    `thresholds` for a multi-label one (given `thresholds`), since those are what readers use."""
    ref = reference(images).numpy()
    got = np.concatenate([candidate(images[i : i + batch]) for i in range(0, len(images), batch)])
    diff = float(np.abs(ref - got).max()) if len(images) else 0.0
    agree = ref.argmax(1) == got.argmax(1)
    top1 = float(agree.mean()) if len(images) else 1.0
    if thresholds is not None:
        return _multilabel_parity(ref, got, np.asarray(thresholds, np.float64), tolerance, diff, top1)
    # top-1 must agree where the two best reference logits are more than 2·tolerance apart
    # (closer than that, a legitimate 1e-6 difference may swap them)
    ordered = np.sort(ref, axis=1)
    clear = (ordered[:, -1] - ordered[:, -2]) > 2 * tolerance if ref.shape[1] > 1 else np.ones(len(ref), bool)
    passed = diff <= tolerance and bool(agree[clear].all())
    return Parity(len(images), diff, top1, tolerance, passed)


def _multilabel_parity(
    ref: np.ndarray, got: np.ndarray, thresholds: np.ndarray, tolerance: float, logit_diff: float, top1: float
) -> Parity:
    """Sigmoid scores within `tolerance`, and every label decision the same where the reference
    score is more than `tolerance` from its threshold (nearer, a legitimate difference may flip it).
    The score bound implies the second rule; it is spelt out, as top-1 is for single-label."""
    ref_scores, got_scores = _sigmoid(ref), _sigmoid(got)
    diff = float(np.abs(ref_scores - got_scores).max()) if len(ref) else 0.0
    ref_labels, got_labels = ref_scores >= thresholds, got_scores >= thresholds
    clear = np.abs(ref_scores - thresholds) > tolerance
    same_sets = float((ref_labels == got_labels).all(1).mean()) if len(ref) else 1.0
    passed = diff <= tolerance and bool((ref_labels == got_labels)[clear].all())
    return Parity(len(ref), logit_diff, top1, tolerance, passed, diff, same_sets)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """torch's sigmoid in float64, so the comparison adds no rounding of its own."""
    return torch.from_numpy(logits).double().sigmoid().numpy()


def require_parity(parity: Parity, what: str) -> None:
    if not parity.passed:
        raise YingsheError(
            f"the {what} export does not reproduce the PyTorch model: {parity.line()}; no file was written",
            "report this with the model name; try another --opset, or --format torchscript",
        )
