"""Explanations of a real trained model: `yingshe explain` writes overlays for real images, the
maps are not uniform, and they move with the object (shift the image, the peak follows)."""

import contextlib
import io

import numpy as np
import pytest
import torch
from PIL import Image

from yingshe.api import load
from yingshe.cli import main
from yingshe.config import RunConfig
from yingshe.data.dataset import build_dataset
from yingshe.evaluate.explain import Explainer
from yingshe.runs import load_checkpoint

N = 24


@pytest.fixture(scope="module")
def model_and_images(fashion_run):
    """The trained classifier and N test images it classifies correctly, uint8 (N, 28, 28, 1)."""
    classifier = load(fashion_run.run_dir, device="cpu")
    cfg = RunConfig.from_dict(load_checkpoint(fashion_run.run_dir).config)
    test = build_dataset(cfg.data, cfg.train.seed).test
    images, labels = test.images[:200], test.labels[:200]
    right = classifier.probabilities(images).argmax(1).numpy() == labels
    return classifier, images[right][:N]


def explainer(classifier, method: str) -> Explainer:
    return Explainer(classifier.model, classifier.normalize, 28, 1, method)


def rolled(images: np.ndarray, dx: int) -> np.ndarray:
    """Shift right by dx pixels (left when negative) inside the 28×28 frame, filling with black."""
    out = np.zeros_like(images)
    if dx > 0:
        out[:, :, dx:] = images[:, :, :-dx]
    else:
        out[:, :, :dx] = images[:, :, -dx:]
    return out


def peak_columns(maps: np.ndarray) -> np.ndarray:
    return np.array([np.unravel_index(m.argmax(), m.shape)[1] for m in maps])


@pytest.mark.parametrize("method", ["gradcam", "saliency"])
def test_maps_are_not_uniform(model_and_images, method):
    classifier, images = model_and_images
    maps = explainer(classifier, method)(images).heatmaps
    assert maps.shape == (N, 28, 28)
    assert (maps.max((1, 2)) == pytest.approx(1.0)) and (maps.min((1, 2)) < 0.3).all()
    assert (maps.std((1, 2)) > 0.05).all(), "every map singles out some regions (a uniform one has 0)"


def test_the_gradcam_peak_follows_the_object_when_the_image_shifts(model_and_images):
    """The same images shifted 5 px left and 5 px right: each map's peak moves right by about the
    10 px the object moved (the map is 7×7 upsampled to 28×28, so not to the pixel)."""
    classifier, images = model_and_images
    explain = explainer(classifier, "gradcam")
    right = peak_columns(explain(rolled(images, 5)).heatmaps)
    left = peak_columns(explain(rolled(images, -5)).heatmaps)
    moved = right - left
    assert np.mean(moved > 0) >= 0.7, moved
    assert 4 <= np.median(moved) <= 16, f"a 10-pixel shift moves the peak by {np.median(moved)} px"


def test_explain_command_writes_overlays_for_real_images(fashion_run, model_and_images, tmp_path):
    _, images = model_and_images
    paths = []
    for i in range(3):
        paths.append(tmp_path / "images" / f"item{i}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(images[i][..., 0]).save(paths[-1])
    run, out = str(fashion_run.run_dir), tmp_path / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(
            ["explain", run, str(tmp_path / "images"), "--out", str(out), "--top-k", "3", "--device", "cpu"]
        )
    assert code == 0
    for i in range(3):
        with Image.open(out / f"item{i}.gradcam.png") as image:
            assert image.format == "PNG" and image.size[0] > 600 and image.size[1] > 250
        assert f"item{i}.png" in printed.getvalue()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(
            ["explain", run, str(paths[0]), "--method", "saliency", "--out", str(out), "--device", "cpu"]
        )
    assert code == 0 and (out / "item0.saliency.png").is_file()


def test_explain_shows_what_predict_serves_under_the_runs_tta(model_and_images, tmp_path):
    """With the run's TTA (a mirror and 1 px shifts), the classes and probabilities an explanation
    shows are `predict`'s, not those of the plain forward the heat map is computed from."""
    from yingshe.evaluate.explain import explain_images

    classifier, images = model_and_images
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"item{i}.png")
        Image.fromarray(images[i][..., 0]).save(paths[-1])
    tta = (classifier.tta_flip, classifier.tta_translate)
    classifier.tta_flip, classifier.tta_translate = True, 1
    try:
        shown = explain_images(classifier, paths, tmp_path / "out", "gradcam", top_k=3)
        served = classifier.predict(paths, top_k=3)
        with torch.no_grad():
            plain = classifier.model(classifier.normalize(torch.from_numpy(images[:4]).permute(0, 3, 1, 2)))
    finally:
        classifier.tta_flip, classifier.tta_translate = tta
    for explanation, prediction, row in zip(shown, served, plain.softmax(1), strict=True):
        assert [name for name, _ in explanation.top] == [name for name, _ in prediction.top]
        assert [p for _, p in explanation.top] == pytest.approx([p for _, p in prediction.top], abs=1e-5)
        assert explanation.target == prediction.top[0][0]
        best = classifier.classes.index(prediction.top[0][0])
        assert abs(float(row[best]) - prediction.top[0][1]) > 1e-4, "TTA changes the probability"
