"""Pretrained weights: read a file (state dict or whole checkpoint), find a zoo model's weights
where its library would have downloaded them, and load them strictly except for the classifier.

Offline first: torchvision's files are looked for in `$TORCH_HOME/hub/checkpoints/<file name of
the weights' URL>` and timm's in the Hugging Face hub cache (then the torch hub cache), so a file
placed where the library would put it is found with no network. Only when none is there, and
YINGSHE_OFFLINE / HF_HUB_OFFLINE are unset, does the library's own download code run; if that
fails too, the error says which file to place where.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from yingshe.errors import YingsheError
from yingshe.transfer.freeze import classifier_names

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin")
CHECKPOINT_KEYS = ("state_dict", "model", "state_dict_ema", "model_state_dict", "model_state")


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in `path`: a `.safetensors` file, or a `.pth`/`.pt`/`.bin` holding a state
    dict or a checkpoint with one under a usual key (yingshe's `state_dict`, timm's `model`, ...)."""
    path = Path(path)
    if not path.is_file():
        raise YingsheError(
            f"weights file {path} does not exist", "give the path of a .pth, .pt or .safetensors"
        )
    if path.suffix not in WEIGHT_SUFFIXES:
        raise YingsheError(f"{path}: unknown weights format {path.suffix!r}", "use .pth, .pt or .safetensors")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Any = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated files, foreign pickles
        raise YingsheError(
            f"{path} could not be read as weights ({type(err).__name__}: {err})"[:600],
            "pass a state dict saved with torch.save / safetensors (pickled objects are not loaded)",
        ) from err
    if isinstance(raw, dict):
        for key in CHECKPOINT_KEYS:
            if isinstance(raw.get(key), dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise YingsheError(f"{path} holds no state dict of tensors", "save model.state_dict() to the file")
    return raw


@dataclass
class LoadReport:
    """What loading did: tensors loaded, classifier tensors left out, and the file's key prefix fix."""

    loaded: int
    skipped_classifier: list[str]
    renamed: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"loaded": self.loaded, "skipped_classifier": self.skipped_classifier, "renamed": self.renamed}


def _align_keys(state: dict[str, torch.Tensor], wanted: set[str]) -> tuple[dict[str, torch.Tensor], str]:
    """Add or strip the wrapper prefixes (`net.`, `module.`, `model.`) so the keys match best."""
    candidates = [(state, "")]
    for prefix in ("net.", "module.", "model.", "_orig_mod."):
        if all(k.startswith(prefix) for k in state):
            candidates.append(({k[len(prefix) :]: v for k, v in state.items()}, f"stripped {prefix!r}"))
        candidates.append(({prefix + k: v for k, v in state.items()}, f"added {prefix!r}"))
    return max(candidates, key=lambda c: len(wanted & set(c[0])))


def load_body_weights(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> LoadReport:
    """Load `state` into `model` strictly, except the classifier (which is the new task's).

    Any missing body tensor, unexpected tensor or shape mismatch is an error that lists them.
    """
    target = model.state_dict()
    head = classifier_names(model)
    state, renamed = _align_keys(state, set(target))
    body_keys = {k for k in target if k not in head}
    missing = sorted(body_keys - set(state))
    unexpected = sorted(k for k in set(state) - set(target))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        for k in sorted(body_keys & set(state))
        if state[k].shape != target[k].shape
    ]
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch(es): " + "; ".join(wrong[:5]))
    if missing:
        problems.append(f"{len(missing)} missing: " + ", ".join(missing[:8]))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: " + ", ".join(unexpected[:8]))
    if problems:
        raise YingsheError(
            f"the weights from {where} do not fit this model: " + " | ".join(problems),
            "use the weights of the same architecture (and variant) as the source model",
        )
    body = {k: state[k] for k in body_keys}
    model.load_state_dict(body, strict=False)
    return LoadReport(len(body), sorted(head & set(state)), renamed)


def offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("YINGSHE_OFFLINE", "HF_HUB_OFFLINE"))


@dataclass
class ZooWeights:
    """Where a zoo model's pretrained weights are, and the source's preprocessing."""

    path: Path | None  # None: loaded through the library's download (then `state` holds them)
    state: dict[str, torch.Tensor] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    categories: list[str]


def torch_hub_file(url: str) -> Path:
    """Where torch.hub.load_state_dict_from_url keeps the file of `url`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def torchvision_weights(name: str) -> ZooWeights:
    """torchvision:<name>'s default ImageNet weights: the torch hub cache, else downloaded."""
    from torchvision import models

    try:
        enum = models.get_model_weights(name)
    except (ValueError, KeyError) as err:
        raise YingsheError(f"torchvision:{name} has no pretrained weights", "pass --weights FILE") from err
    # the default (newest) weights, else any other version already in the cache
    cached = [w for w in (enum.DEFAULT, *enum) if torch_hub_file(w.url).is_file()]
    weights = cached[0] if cached else enum.DEFAULT
    transform = weights.transforms()
    meta = weights.meta
    info = dict(
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        image_size=int(transform.crop_size[0]),
        categories=list(meta.get("categories") or []),
    )
    file = torch_hub_file(weights.url)
    if file.is_file():
        return ZooWeights(file, None, **info)
    fix = f"place {file.name} (from {weights.url}) at {file}, or pass --weights FILE"
    if offline():
        raise YingsheError(f"torchvision:{name}'s weights are not in the torch hub cache", fix)
    try:
        state = weights.get_state_dict(progress=True, check_hash=True)  # torchvision's own download
    except Exception as err:  # no network, proxy, hash
        raise YingsheError(
            f"torchvision:{name}'s weights are not cached and could not be downloaded ({err})"[:500], fix
        ) from err
    return ZooWeights(file if file.is_file() else None, state, **info)


def timm_weights(name: str) -> ZooWeights:
    """timm:<name>'s pretrained weights: the Hugging Face hub cache, the torch hub cache, else
    timm's own download."""
    import timm

    model = timm.create_model(name, pretrained=False)
    cfg = model.pretrained_cfg
    info = dict(
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        image_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
        categories=[],
    )
    places = []
    repo = cfg.get("hf_hub_id")
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(repo, filename)
            if isinstance(found, str):
                return ZooWeights(Path(found), None, **info)
        places.append(
            f"the Hugging Face hub cache ({hf_cache_dir()}): "
            f"`huggingface-cli download {repo} model.safetensors`"
        )
    if cfg.get("url"):
        file = torch_hub_file(cfg["url"])
        if file.is_file():
            return ZooWeights(file, None, **info)
        places.append(f"{file} (from {cfg['url']})")
    fix = "place the weights in " + " or ".join(places or ["a file"]) + ", or pass --weights FILE"
    if offline():
        raise YingsheError(f"timm:{name}'s pretrained weights are not in the local caches", fix)
    try:
        state = timm.create_model(name, pretrained=True).state_dict()  # timm's own download
    except Exception as err:
        raise YingsheError(
            f"timm:{name}'s weights are not cached and could not be downloaded ({err})"[:500], fix
        ) from err
    return ZooWeights(None, state, **info)


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_torchvision_weights(names: tuple[str, ...]) -> tuple[str, Path] | None:
    """The first of `names` whose torchvision weights are in the torch hub cache (no network)."""
    from torchvision import models

    for name in names:
        try:
            enum = models.get_model_weights(name)
        except (ValueError, KeyError):
            continue
        for weights in (enum.DEFAULT, *enum):
            if torch_hub_file(weights.url).is_file():
                return name, torch_hub_file(weights.url)
    return None
