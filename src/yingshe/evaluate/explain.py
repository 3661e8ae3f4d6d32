"""Where a classifier looks: Grad-CAM on the last convolutional stage, gradient saliency otherwise.

Grad-CAM (Selvaraju et al. 2017) weights the channels of a spatial feature map by the mean
gradient of the class score and keeps the positive part. The map is taken at the outermost module
that ends with the last spatial convolution's output size inside `forward_features`, found with
forward hooks rather than by model name; the class score is `forward_head` of those features.
Every model yingshe builds answers that interface (built-ins, timm, torchvision through its
adapter), so all of them work. A model whose last
spatial convolution is only a patch embedding followed by attention (a ViT) has no such stage;
it gets the gradient of the class score with respect to the input pixels (Simonyan et al. 2014).
Hand-written because the one library that does this (pytorch-grad-cam) is not a dependency and
the method is a dozen lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yingshe.data.augment import Normalize
from yingshe.data.images import UnreadableImage
from yingshe.errors import YingsheError, close_matches
from yingshe.evaluate import plots

if TYPE_CHECKING:
    from yingshe.inference import Classifier

METHODS = ("auto", "gradcam", "saliency")
MIN_CAM_SIDE = 4  # coarser maps cannot localise anything


@dataclass(frozen=True)
class CamLayer:
    """The module whose output Grad-CAM weights, and the spatial size of that output."""

    name: str
    module: nn.Module
    size: tuple[int, int]


def _is_patch_embedding(conv: nn.Conv2d) -> bool:
    """A conv that cuts the image into non-overlapping patches (kernel == stride > 1)."""
    return conv.kernel_size == conv.stride and max(conv.stride) > 1


def _is_attention(module: nn.Module) -> bool:
    name = type(module).__name__
    return isinstance(module, (nn.MultiheadAttention, nn.TransformerEncoderLayer)) or name.endswith(
        "Attention"
    )


def _exit_order(model: nn.Module, sample: Tensor) -> list[tuple[str, nn.Module, tuple[int, ...] | None]]:
    """(name, module, output shape) of every submodule in the order their forward calls end."""
    order: list[tuple[str, nn.Module, tuple[int, ...] | None]] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(mod: nn.Module, args: object, output: object, name: str = name) -> None:
            shape = tuple(output.shape) if isinstance(output, Tensor) else None
            order.append((name, mod, shape))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.forward_features(sample)
    finally:
        for handle in handles:
            handle.remove()
    return order


def find_cam_layer(model: nn.Module, sample: Tensor) -> CamLayer | None:
    """The Grad-CAM layer of `model` for inputs shaped like `sample` (1, C, H, W), or None.

    The last spatial Conv2d to run (output h·w > 1, so SE gates on pooled maps do not count, and
    not a patch embedding) picks the stage; the layer is its outermost ancestor with the same
    spatial output, e.g. `features` of a CIFAR ResNet or `layer4` of a torchvision ResNet, so the
    map includes the stage's residual sums and activations. Where that map is smaller than 4×4
    (the seed CNN ends at 3×3 on 28 px images) the last conv with a map of at least 4×4 is used
    instead: a 3×3 map upsampled to the image only ever says "the middle". None where attention
    runs after the last conv (a vision transformer's patch embedding).
    """
    was_training = model.training
    model.eval()
    try:
        order = _exit_order(model, sample)
    finally:
        model.train(was_training)
    convs = [
        position
        for position, (_, module, shape) in enumerate(order)
        if isinstance(module, nn.Conv2d)
        and shape is not None
        and len(shape) == 4
        and shape[2] * shape[3] > 1
        and not _is_patch_embedding(module)
    ]
    if not convs or any(_is_attention(module) for _, module, _ in order[convs[-1] + 1 :]):
        return None
    fine = [p for p in convs if min(order[p][2][2:]) >= MIN_CAM_SIDE]
    last = fine[-1] if fine else convs[-1]
    conv_name, _, conv_shape = order[last]
    best = CamLayer(conv_name, order[last][1], (conv_shape[2], conv_shape[3]))
    for name, module, shape in order[last + 1 :]:
        same_map = shape is not None and len(shape) == 4 and shape[2:] == conv_shape[2:]
        if same_map and conv_name.startswith(name + ".") and len(name) < len(best.name):
            best = CamLayer(name, module, (shape[2], shape[3]))
    return best


def choose_method(method: str, layer: CamLayer | None, model_name: str = "the model") -> str:
    """`auto` → gradcam where the model has a convolutional stage, else saliency."""
    if method not in METHODS:
        raise YingsheError(f"unknown explanation method {method!r}", "use gradcam, saliency or auto")
    if method == "gradcam" and layer is None:
        raise YingsheError(
            f"{model_name} has no convolutional stage to take Grad-CAM from (e.g. a vision transformer)",
            "use --method saliency (or auto)",
        )
    if method == "auto":
        return "gradcam" if layer is not None else "saliency"
    return method


def _normalise(maps: Tensor) -> Tensor:
    """Scale each (H, W) map to [0, 1] by its own maximum; an all-zero map stays zero."""
    peak = maps.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return maps / peak


def gradcam(model: nn.Module, layer: CamLayer, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Grad-CAM maps (B, H, W) in [0, 1] at input resolution, and the logits (B, K).

    In eval mode every image's map depends on that image alone, so a batch is one backward pass.
    """
    captured: dict[str, Tensor] = {}

    def keep(module: nn.Module, args: object, output: Tensor) -> Tensor:
        captured["features"] = output
        return output.clone()  # later in-place ops (ReLU(inplace)) must not touch what we differentiate

    handle = layer.module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model.forward_head(model.forward_features(inputs.detach().requires_grad_(True)))
            score = logits.gather(1, targets.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, captured["features"])
    finally:
        handle.remove()
    features = captured["features"].detach()
    weights = grad.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1): α_c, the pooled gradient
    cam = F.relu((weights * features).sum(1, keepdim=True))  # (B, 1, h, w)
    cam = F.interpolate(cam.float(), size=inputs.shape[-2:], mode="bilinear", align_corners=False)
    return _normalise(cam[:, 0]), logits.detach()


def saliency(model: nn.Module, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """|∂ score / ∂ pixel|, max over channels: maps (B, H, W) in [0, 1], and the logits (B, K)."""
    inputs = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(inputs)
        score = logits.gather(1, targets.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, inputs)
    return _normalise(grad.abs().amax(1)), logits.detach()


@dataclass
class Maps:
    """Explanations of a batch: one heat map per image, for one class per image."""

    method: str
    heatmaps: np.ndarray  # (B, H, W) float32 in [0, 1]
    targets: np.ndarray  # (B,) the class each map explains


EXPLAIN_BATCH = 32  # images a forward (and its gradients) holds at once


class Explainer:
    """Heat maps for uint8 images as the model sees them (after the run's normalisation)."""

    def __init__(
        self,
        model: nn.Module,
        normalize: Normalize,
        image_size: int,
        channels: int,
        method: str = "auto",
        model_name: str = "the model",
    ) -> None:
        self.model = model.eval()
        device = next(model.parameters()).device
        self.device = device
        self.normalize = normalize.to(device)
        sample = torch.zeros(1, channels, image_size, image_size, device=device)
        self.layer = find_cam_layer(model, sample)
        self.method = choose_method(method, self.layer, model_name)

    def __call__(
        self, images: np.ndarray, targets: np.ndarray | None = None, batch: int = EXPLAIN_BATCH
    ) -> Maps:
        """images uint8 (B, H, W, C); targets: class per image, None for the predicted class."""
        maps, chosen = [], []
        for start in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch]))
            x = self.normalize(x.permute(0, 3, 1, 2).to(self.device))
            if targets is None:
                with torch.no_grad():
                    target = self.model(x).argmax(1)
            else:
                target = torch.as_tensor(targets[start : start + batch], device=self.device)
            if self.method == "gradcam":
                heat, _ = gradcam(self.model, self.layer, x, target)
            else:
                heat, _ = saliency(self.model, x, target)
            maps.append(heat.cpu().numpy().astype(np.float32))
            chosen.append(target.cpu().numpy())
        if not maps:
            empty = np.zeros((0, *images.shape[1:3]), dtype=np.float32)
            return Maps(self.method, empty, np.zeros(0, dtype=np.int64))
        return Maps(self.method, np.concatenate(maps), np.concatenate(chosen))


@dataclass
class Explanation:
    """One image's heat map for one class, its top-k classes, and the overlay file written."""

    source: str
    method: str = ""
    target: str | None = None  # the class the map explains
    top: list[tuple[str, float]] = field(default_factory=list)  # (class, probability), best first
    heatmap: np.ndarray | None = None  # (H, W) float32 in [0, 1]
    image: np.ndarray | None = None  # (H, W, C) uint8, as the model saw it
    path: Path | None = None  # the overlay PNG
    error: str | None = None  # why the image could not be read


def explain_images(
    classifier: Classifier,
    images: Sequence[str | Path],
    out: str | Path,
    method: str = "auto",
    top_k: int = 3,
    target: str | None = None,
) -> list[Explanation]:
    """Heat maps for image files, each written as `<out>/<name>.<method>.png` (input, overlay,
    top-k classes). `target` explains that class instead of each image's predicted one."""
    if target is not None and target not in classifier.classes:
        raise YingsheError(
            f"class {target!r} is not one of the model's classes", close_matches(target, classifier.classes)
        )
    explainer = Explainer(
        classifier.model,
        classifier.normalize,
        classifier.image_size,
        classifier.channels,
        method,
        classifier.checkpoint.meta.model.name,
    )
    results, arrays = [], []
    for source in images:
        results.append(Explanation(str(source)))
        try:
            arrays.append(classifier.preprocess(source))
        except (UnreadableImage, OSError) as err:
            results[-1].error = str(err)
    readable = [r for r in results if r.error is None]
    if not readable:
        return results
    stack = np.stack(arrays)
    # the classes and probabilities shown are those `predict` serves (the run's TTA, sigmoid
    # scores for a multi-label model); the map explains the plain forward of that class
    chunks = range(0, len(stack), EXPLAIN_BATCH)
    probs = np.concatenate([classifier.probabilities(stack[i : i + EXPLAIN_BATCH]).numpy() for i in chunks])
    targets = probs.argmax(1) if target is None else np.full(len(stack), classifier.classes.index(target))
    maps = explainer(stack, targets)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    k = min(top_k, len(classifier.classes))
    for i, result in enumerate(readable):
        order = np.argsort(-probs[i])[:k]
        result.method, result.image, result.heatmap = maps.method, stack[i], maps.heatmaps[i]
        result.target = classifier.classes[int(maps.targets[i])]
        result.top = [(classifier.classes[int(c)], float(probs[i][c])) for c in order]
        result.path = folder / unique_name(Path(result.source).stem, maps.method, taken)
        plots.explanation_figure(
            result.image, result.heatmap, result.top, result.target, maps.method, result.source, result.path
        )
    return results


def unique_name(stem: str, method: str, taken: set[str]) -> str:
    """`stem.method.png`, numbered when two inputs share a file name (a/cat.jpg, b/cat.jpg)."""
    name, n = f"{stem}.{method}.png", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.{method}.png"
    taken.add(name)
    return name
