"""Grad-CAM layer choice over the model registry, Grad-CAM against the class activation map it
reduces to, saliency for transformers, and `explain_images` writing overlays (untrained models;
the behaviour on a trained one is in tests/integration/test_explain_real.py)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from yingshe.errors import YingsheError
from yingshe.evaluate.explain import CamLayer, Explainer, explain_images, find_cam_layer, gradcam, saliency
from yingshe.inference import Classifier
from yingshe.models import create_model
from yingshe.schema import Checkpoint, CheckpointMeta, ModelRecord


@pytest.mark.parametrize(
    ("name", "size", "layer", "side"),
    [
        ("seed-cnn", 28, "features.7", 7),  # the last 3×3 stage is too coarse: the 7×7 one before it
        ("seed-cnn", 32, "features.10", 4),
        ("resnet20", 32, "features", 8),
        ("se-resnet20", 32, "features", 8),  # not the SE gate's 1×1 convs
        ("resnet18", 96, "features.2", 6),  # its last stage is 3×3 at 96 px
        ("resnet18", 128, "features", 4),
    ],
)
def test_the_cam_layer_is_the_last_convolutional_stage(name, size, layer, side):
    model = create_model(name, 10, 3, size)
    found = find_cam_layer(model, torch.zeros(1, 3, size, size))
    assert found is not None and found.name == layer and found.size == (side, side)


def test_a_vision_transformer_has_no_cam_layer_and_gets_saliency():
    model = create_model("vit-tiny", 10, 3, 32, dim=32, depth=1, heads=2)
    assert find_cam_layer(model, torch.zeros(1, 3, 32, 32)) is None, "its patch embedding is no stage"
    assert Explainer(model, identity_normalize(3), 32, 3).method == "saliency"
    with pytest.raises(YingsheError, match="Grad-CAM") as err:
        Explainer(model, identity_normalize(3), 32, 3, method="gradcam", model_name="vit-tiny")
    assert "saliency" in err.value.fix


def identity_normalize(channels: int):
    from yingshe.data.augment import Normalize

    return Normalize([0.5] * channels, [0.25] * channels)


class PooledLinear(nn.Module):
    """features → global average pool → linear, with the feature/head interface Grad-CAM reads."""

    def __init__(self, features: nn.Module, head: nn.Linear):
        super().__init__()
        self.features, self.head = features, head

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, x, pre_logits=False):
        pooled = x.mean((2, 3))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_gradcam_is_the_class_activation_map_for_a_pooled_linear_head():
    """With features → global average pool → linear, Grad-CAM's channel weights are w_c / (h·w), so
    its map is ReLU(Σ_c w_c A_c), the class activation map of Zhou et al. (2016)."""
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, 2, padding=1), nn.ReLU()
    )
    head = nn.Linear(6, 4)
    model = PooledLinear(features, head).eval()
    x = torch.randn(2, 3, 16, 16)
    targets = torch.tensor([1, 3])
    maps, _ = gradcam(model, CamLayer("features", features, (8, 8)), x, targets)
    with torch.no_grad():
        a = features(x)  # (2, 6, 8, 8)
        cam = torch.relu(torch.einsum("bchw,bc->bhw", a, head.weight[targets]))
        cam = nn.functional.interpolate(cam[:, None], size=(16, 16), mode="bilinear", align_corners=False)[
            :, 0
        ]
        cam = cam / cam.flatten(1).amax(1).view(-1, 1, 1)
    assert torch.allclose(maps, cam, atol=1e-5)
    assert all(p.grad is None for p in model.parameters()), "explaining must not touch training gradients"


def test_saliency_is_the_input_gradient():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2)).eval()
    x = torch.randn(1, 3, 2, 2)
    maps, logits = saliency(model, x, torch.tensor([1]))
    weight = model[1].weight[1].detach().view(3, 2, 2).abs().amax(0)
    assert torch.allclose(maps[0], weight / weight.max())
    assert logits.shape == (1, 2) and not x.requires_grad


SMALL = {"seed-cnn": {"widths": [8, 16, 16, 16]}, "vit-tiny": {"dim": 32, "depth": 1, "heads": 2}}


def checkpoint_payload(name: str, size: int, channels: int, classes: list[str]) -> Checkpoint:
    kwargs = SMALL[name]
    model = create_model(name, len(classes), channels, size, **kwargs)
    record = ModelRecord(name, len(classes), channels, size, kwargs)
    meta = CheckpointMeta(record, classes, channels, size, [0.5] * channels, [0.25] * channels)
    return Checkpoint(meta, model.state_dict(), config={})


@pytest.mark.parametrize(("name", "method"), [("seed-cnn", "gradcam"), ("vit-tiny", "saliency")])
def test_explain_images_writes_one_overlay_per_readable_image(tmp_path, name, method):
    torch.manual_seed(0)
    classifier = Classifier(checkpoint_payload(name, 32, 3, ["cat", "dog", "ship"]), device="cpu")
    rng = np.random.default_rng(0)
    paths = []
    for folder in ("a", "b"):  # two files called img.png: the overlays must not overwrite each other
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "img.png")
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(paths[-1])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    results = explain_images(classifier, [*paths, broken], tmp_path / "out", top_k=2)
    assert [r.error is None for r in results] == [True, True, False]
    assert {r.path.name for r in results[:2]} == {f"img.{method}.png", f"img-2.{method}.png"}
    for result in results[:2]:
        assert result.method == method and result.path.is_file()
        assert result.heatmap.shape == (32, 32) and result.heatmap.min() >= 0 and result.heatmap.max() == 1
        assert len(result.top) == 2 and result.target == result.top[0][0]
    forced = explain_images(classifier, paths[:1], tmp_path / "out2", target="ship")
    assert forced[0].target == "ship"
    with pytest.raises(YingsheError, match="not one of the model's classes"):
        explain_images(classifier, paths[:1], tmp_path / "out3", target="shipp")
