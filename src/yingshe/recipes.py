"""Recipes: tuned bundles of model, optimiser, schedule, augmentation and evaluation settings.

A recipe is plain config: a nested mapping of overrides, chosen by name and by the family of the
data (its channels and image size), applied between the defaults and a `--config` file, flags and
`key=value` overrides, so any key of a recipe can be changed. The run's `config.yaml` holds the
resolved values and `train.recipe` (the name), so the run reproduces without re-applying it.

    yingshe train --data fashion-mnist --recipe fast
    cfg = yingshe.recipe_config("fast", data="fashion-mnist")   # the Python equivalent

Families: `grey-28` (one channel, up to 32 px: MNIST, Fashion-MNIST), `colour-32` (three channels,
up to 40 px: CIFAR) and `large` (bigger images). Every recipe is defined for every family.
The figures each was tuned to are in docs/benchmarks.md.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

from yingshe.config import DataConfig, RunConfig, apply_mapping
from yingshe.errors import YingsheError
from yingshe.registry import Registry

FAMILIES = ("grey-28", "colour-32", "large")
NAMED_FAMILIES = {
    "fashion-mnist": "grey-28",
    "mnist": "grey-28",
    "digits": "grey-28",
    "cifar10": "colour-32",
    "cifar100": "colour-32",
}

log = logging.getLogger(__name__)

Recipe = Callable[[str], dict[str, Any]]
RECIPES: Registry[Recipe] = Registry("recipe")


def family_for(channels: int, image_size: int) -> str:
    """The family of data with `channels` and square side `image_size`."""
    if image_size <= 32 and channels == 1:
        return "grey-28"
    if image_size <= 40:
        return "colour-32"
    return "large"


def data_family(data: DataConfig) -> str:
    """The family of the data a config points at: from the name for the standard sets, else from
    the configured size and channels, else from the headers of a sample of the training files."""
    if data.spec in NAMED_FAMILIES and data.image_size is None:
        return NAMED_FAMILIES[data.spec]
    channels, size = data.channels, data.image_size
    if channels is None or size is None:
        from yingshe.data.dataset import detect_channels, native_size, read_spec

        source = read_spec(data)
        split = source.splits.get("train") or next(iter(source.splits.values()))
        channels = channels or source.channels or detect_channels(split)
        size = size or native_size(split)
    return family_for(channels, size)


# Shared pieces. Batch-level augmentation only (crop + flip run on the device), Nesterov SGD with
# label smoothing, a short warm-up into a cosine decay, flip TTA at evaluation (skipped where a
# mirror image is another class). channels_last is on for the airbench net everywhere: measured on
# this CPU (AVX-512, oneDNN) it runs the fast step 1.5× faster than NCHW, and on CUDA it feeds the
# tensor cores (bench/step_efficiency.py). amp stays `auto`: bf16 on GPU, fp32 on CPU (bf16 slower).
_SGD = {"name": "sgd", "momentum": 0.9, "schedule": "onecycle", "label_smoothing": 0.2}
# airbench94_muon's optimiser at batch 500 (train/muon.py; the derivation of each rate is in
# docs/benchmarks.md): Muon filters at 0.24, the head's SGD rate and decay translated from its
# summed loss and unit-std head, BN biases 64× faster, a straight decay to zero without warm-up
_MUON = {
    **_SGD,
    "name": "muon",
    "lr": 0.435,
    "weight_decay": 2.3e-3,
    "momentum": 0.85,
    "bias_lr_scale": 64.0,
    "muon_lr": 0.24,
    "muon_momentum": 0.6,
    "schedule": "linear",
}
# Photos (family `large`) train as timm and torchvision do: a random-resized-crop of 8–100 % of the
# image plus a flip, evaluated on the centre crop of the image resized to image_size / 0.875
# (data/crop.py); data.crop_pct follows from random_resized_crop, so a key=value override wins.
_PHOTO = {"random_resized_crop": True, "rrc_scale": 0.08}


@RECIPES.register("fast")
def fast(family: str) -> dict[str, Any]:
    """Shortest time to a good accuracy: a small airbench net, a few epochs."""
    if family == "grey-28":
        # Light regularisation wins in a run this short (train accuracy ≈ test): no crop shift,
        # label smoothing 0.1. The optimiser is colour-32's Muon with the filters' rate lowered to
        # 0.16: 2.5 epochs of 54,000 Fashion-MNIST images, two seeds, 93.36% test (93.91% on the
        # 6,000 held out) against 92.92% (93.44%) with 1 px crops and 0.24. A first block of 24
        # filters instead of 32 makes the step 1.14× cheaper for 93.41% test (93.72% held out).
        # The validation pass runs once, after the last step (docs/benchmarks.md, session 10).
        # The whitening bias trains in the first epoch only: the later steps skip the stem's
        # backward, at no measured cost (93.85% held out, two seeds, against 93.88%; session 11)
        return {
            "model": {"name": "airbench", "kwargs": {"widths": [24, 64, 128], "whiten_bias_epochs": 1}},
            "augment": {"crop_padding": 0, "hflip": None},
            "optim": {**_MUON, "muon_lr": 0.16, "label_smoothing": 0.1},
            "train": {
                "epochs": 2.5,
                "batch_size": 500,
                "channels_last": True,
                "tta_flip": True,
                "val_every": 0,
            },
        }
    if family == "colour-32":
        # airbench94_muon's optimiser and airbench's mirror + 1 px shift TTA. CIFAR-10, 4 epochs on
        # 18,000 images: 77.13% with session 6's airbench94 SGD (batch 256), 80.08% with Muon
        return {
            "model": {"name": "airbench", "kwargs": {"widths": [32, 64, 128]}},
            "augment": {"crop_padding": 2, "hflip": None},
            "optim": _MUON,  # recipe_config deep-copies what a recipe returns
            "train": {
                "epochs": 8,
                "batch_size": 500,
                "channels_last": True,
                "tta_flip": True,
                "tta_translate": 1,
            },
        }
    return {  # large images: an ImageNet-stem ResNet-18, mixed precision on GPU, trained the timm way
        "model": {"name": "resnet18"},
        "augment": {"hflip": None, **_PHOTO},
        "optim": {**_SGD, "lr": 0.1, "weight_decay": 5e-4, "label_smoothing": 0.1, "warmup_epochs": 1.0},
        "train": {"epochs": 15, "batch_size": 128, "tta_flip": True},
    }


@RECIPES.register("best")
def best(family: str) -> dict[str, Any]:
    """Highest accuracy within a CPU session (grey) or GPU minutes (colour): a wider airbench net,
    longer, with an EMA of the weights."""
    if family == "grey-28":
        # twice the fast net's width (≈3× its FLOPs), 5× the epochs, 2 px crops for the longer run
        return {
            "model": {"name": "airbench", "kwargs": {"widths": [64, 128, 256]}},
            "augment": {"crop_padding": 2, "hflip": None},
            "optim": {**_SGD, "lr": 0.2, "weight_decay": 5e-4, "label_smoothing": 0.1, "warmup_epochs": 1.0},
            "train": {"epochs": 15, "batch_size": 256, "channels_last": True, "tta_flip": True, "ema": 0.995},
        }
    if family == "colour-32":
        return {  # airbench95's widths (128–384–384), longer, with an EMA: meant for a GPU
            "model": {"name": "airbench", "kwargs": {"widths": [128, 384, 384]}},
            "augment": {"crop_padding": 2, "hflip": None},
            "optim": {**_SGD, "lr": 0.2, "weight_decay": 5e-4, "warmup_epochs": 2.0},
            "train": {"epochs": 30, "batch_size": 512, "channels_last": True, "tta_flip": True, "ema": 0.999},
        }
    return {
        "model": {"name": "resnet18"},
        "augment": {"hflip": None, "policy": "trivialaugment", "erasing": 0.25, **_PHOTO},
        "optim": {**_SGD, "lr": 0.1, "weight_decay": 5e-4, "label_smoothing": 0.1, "warmup_epochs": 2.0},
        "train": {"epochs": 60, "batch_size": 128, "tta_flip": True, "ema": 0.9998},
    }


# Photo folders of a few hundred images learn far more from an ImageNet backbone than from random
# weights (docs/benchmarks.md, bench/transfer.py). The first of these whose torchvision weights are
# in the torch hub cache is fine-tuned; without any, the recipe trains ResNet-18 from scratch.
PRETRAINED_BACKBONES = ("resnet18", "mobilenet_v2", "efficientnet_b0", "resnet50", "convnext_tiny")


def with_pretrained_backbone(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The `large` recipe as fine-tuning of a locally cached ImageNet backbone when there is one
    (and a log line saying which), else as it is, with a warning saying how to get weights."""
    from yingshe.transfer.weights import cached_torchvision_weights, torch_hub_file

    found = cached_torchvision_weights(PRETRAINED_BACKBONES)
    if found is None:
        from torchvision.models import get_model_weights

        file = torch_hub_file(get_model_weights("resnet18").DEFAULT.url)
        log.warning(
            "recipe %s (large): fine-tuning a pretrained backbone would do better than training "
            "resnet18 from scratch; place torchvision's resnet18 weights at %s (or any of %s), or run "
            "`yingshe finetune torchvision:resnet18` once online. Training from scratch.",
            name,
            file,
            ", ".join(PRETRAINED_BACKBONES),
        )
        return overrides
    backbone, file = found
    log.warning("recipe %s (large): fine-tuning torchvision:%s from %s", name, backbone, file)
    epochs = {"fast": 5}.get(name, 15)
    return {
        "augment": {"hflip": None, **_PHOTO},
        "optim": {**_SGD, "lr": 0.01, "weight_decay": 1e-4, "label_smoothing": 0.1, "warmup_epochs": 0.5},
        "train": {"epochs": epochs, "batch_size": 64, "tta_flip": True},
        "finetune": {"source": f"torchvision:{backbone}", "strategy": "full", "head_lr_mult": 10.0},
    }


def recipe_overrides(name: str, family: str) -> dict[str, Any]:
    """The nested mapping of overrides recipe `name` gives for data of `family`."""
    if family not in FAMILIES:
        raise YingsheError(f"unknown data family {family!r}", "use one of " + ", ".join(FAMILIES))
    return copy.deepcopy(RECIPES.get(name)(family))


def parse_recipe(text: str) -> tuple[str, str | None]:
    """`fast` → ("fast", None); `fast:colour-32` → ("fast", "colour-32") with the family forced."""
    name, _, family = text.partition(":")
    return name, family or None


def apply_recipe(cfg: RunConfig, recipe: str, family: str | None = None) -> RunConfig:
    """Apply `recipe` (optionally `name:family`) to `cfg` in place and record its name."""
    name, forced = parse_recipe(recipe)
    family = forced or family or data_family(cfg.data)
    overrides = recipe_overrides(name, family)
    if family == "large":
        overrides = with_pretrained_backbone(name, overrides)
    apply_mapping(cfg, overrides, f"recipe {name} ({family})")
    cfg.train.recipe = f"{name}:{family}"
    return cfg


def recipe_config(recipe: str, data: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """A RunConfig for `recipe` on dataset `data` (name or path), then `key=value` overrides."""
    from yingshe.config import apply_overrides

    cfg = RunConfig()
    if data is not None:
        cfg.data.spec = data
    apply_recipe(cfg, recipe)
    apply_overrides(cfg, overrides or [])
    return cfg


def list_recipes() -> list[tuple[str, str]]:
    """(name, summary): the summary is the docstring's whole first paragraph, never half a sentence."""
    return [(name, first_paragraph(RECIPES.get(name).__doc__)) for name in RECIPES.names()]


def first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())
