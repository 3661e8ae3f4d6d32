"""Photos trained the timm way from the CLI (data/crop.py): random-resized-crop in training, and
one resize-then-centre-crop for evaluation, predict, export (ONNX) and prepared shards."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import yingshe
from yingshe.api import eval_batches, training_batches
from yingshe.config import DataConfig, RunConfig, apply_overrides
from yingshe.data.augment import Normalize
from yingshe.data.crop import PhotoTrainBatches, resize_side, resolve_crop_pct
from yingshe.data.dataset import build_dataset
from yingshe.errors import YingsheError
from yingshe.evaluate.metrics import predict_batches
from yingshe.inference import Classifier, model_from_checkpoint
from yingshe.runs import load_checkpoint, save_checkpoint

SIZE, SIDE = 32, 36  # image_size and floor(32 / 0.875): the short side before the centre crop


@pytest.fixture(scope="module")
def photos(tmp_path_factory, cifar_members) -> str:
    """Three classes of CIFAR photos upscaled to 72×56 JPEGs (a photo's shape, kept small)."""
    root = tmp_path_factory.mktemp("photo-train")
    for split, count in (("train", 12), ("test", 4)):
        for cls in ("cat", "ship", "truck"):
            (root / split / cls).mkdir(parents=True)
            for i, blob in enumerate(cifar_members[split][cls][:count]):
                image = Image.open(io.BytesIO(blob)).convert("RGB").resize((72, 56), Image.Resampling.BICUBIC)
                image.save(root / split / cls / f"{i:03d}.jpg", quality=90)
    return str(root)


@pytest.fixture(scope="module")
def photo_run(photos, tmp_path_factory):
    """`yingshe train --recipe fast` on the photos, as a user runs it (large family), kept tiny."""
    out = tmp_path_factory.mktemp("photo-run") / "run"
    command = [sys.executable, "-m", "yingshe", "train", "--data", photos, "--recipe", "fast:large"]
    overrides = [
        f"train.out={out}",
        f"data.image_size={SIZE}",
        "model.name=seed-cnn",
        "model.kwargs={}",
        "finetune.source=null",  # the recipe may pick a cached pretrained backbone: not here
        "train.epochs=1",
        "train.max_steps=3",
        "train.batch_size=8",
        "data.workers=0",
        "data.prepared=off",
        "train.plots=false",
        "train.device=cpu",
    ]
    env = {**os.environ, "YINGSHE_CACHE": str(out.parent / "cache")}
    done = subprocess.run([*command, *overrides], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (out.parent / "cli.log").write_text(done.stdout + done.stderr)
    return out


def test_the_cli_trains_photos_with_random_resized_crop_and_records_it(photo_run):
    config = yaml.safe_load((photo_run / "config.yaml").read_text())
    assert config["augment"]["random_resized_crop"] is True and config["augment"]["rrc_scale"] == 0.08
    assert config["data"]["crop_pct"] == 0.875  # resolved from random_resized_crop, written down
    report = json.loads((photo_run / "report.json").read_text())
    assert report["data"]["image_size"] == SIZE and report["data"]["resize"] == SIDE
    assert report["data"]["crop_pct"] == 0.875
    meta = load_checkpoint(photo_run).meta
    assert (meta.image_size, meta.resize) == (SIZE, SIDE)
    header = (photo_run.parent / "cli.log").read_text()
    assert (
        f"input   {SIZE} px, 3 channel(s), random-resized-crop; evaluated on the centre of {SIDE} px"
        in header
    )


def test_predict_equals_evaluate_on_the_centre_crop(photo_run):
    checkpoint = load_checkpoint(photo_run)
    cfg = RunConfig.from_dict(checkpoint.config)
    data = build_dataset(cfg.data, cfg.train.seed, stats=(checkpoint.meta.mean, checkpoint.meta.std))
    assert data.resize == SIDE
    normalize = Normalize(checkpoint.meta.mean, checkpoint.meta.std)
    batches = eval_batches(data.test, data, cfg, torch.device("cpu"), normalize, False)
    evaluated = predict_batches(model_from_checkpoint(checkpoint), batches, tta_flip=True).logits
    names = [data.test.files.name(i) for i in range(len(data.test))]
    classifier = yingshe.load(photo_run, device="cpu")
    assert classifier.resize == SIDE
    served = classifier.logits(np.stack([classifier.preprocess(n) for n in names]))
    torch.testing.assert_close(served, evaluated, atol=1e-5, rtol=1e-5)
    report = yingshe.evaluate(photo_run, out=photo_run.parent / "evaluated")
    predicted = [p.label for p in classifier.predict(names, top_k=1)]
    truth = [data.classes[int(label)] for label in data.test.labels]
    accuracy = float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))
    assert report["accuracy"] == pytest.approx(accuracy) and report["data"]["resize"] == SIDE


def test_onnx_export_and_serve_carry_the_crop_and_predict_as_pytorch(photo_run, photos):
    pytest.importorskip("onnxruntime")
    from yingshe.export.onnx import OnnxClassifier

    result = yingshe.export(photo_run, "onnx", out=photo_run.parent / "model.onnx", parity_images=8)
    assert result.metadata["image_size"] == SIZE and result.metadata["resize"] == SIDE
    assert f"centre {SIZE}×{SIZE}" in result.metadata["preprocessing"]
    onnx = OnnxClassifier(result.path)
    assert (onnx.image_size, onnx.resize) == (SIZE, SIDE)
    files = [os.path.join(photos, "test", "cat", f"{i:03d}.jpg") for i in range(4)]
    torch_probs = Classifier.load(photo_run, device="cpu").predict(files, top_k=3)
    onnx_probs = onnx.predict(files, top_k=3)
    for a, b in zip(torch_probs, onnx_probs, strict=True):
        assert [c for c, _ in a.top] == [c for c, _ in b.top]
        np.testing.assert_allclose([p for _, p in a.top], [p for _, p in b.top], atol=1e-4)
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from yingshe.serve import ServeConfig
    from yingshe.serve.app import create_app

    upload = Path(files[0]).read_bytes()
    with TestClient(create_app(ServeConfig(model=str(result.path), max_wait_ms=1))) as client:
        answer = client.post("/v1/predict", content=upload, headers={"content-type": "image/jpeg"})
        info = client.get("/v1/model").json()
    assert (info["image_size"], info["resize"]) == (SIZE, SIDE)
    assert answer.status_code == 200, answer.text
    served = answer.json()["top"][0]
    assert served["class"] == torch_probs[0].top[0][0]
    assert served["probability"] == pytest.approx(torch_probs[0].top[0][1], abs=1e-4)


def framed(size: int, border: int) -> Image.Image:
    """A blue square inside a red frame: the centre crop at crop_pct sees blue only, a resize of
    the whole image sees the frame too."""
    array = np.zeros((size, size, 3), np.uint8)
    array[...] = (255, 0, 0)
    array[border:-border, border:-border] = (0, 0, 255)
    return Image.fromarray(array)


def test_evaluation_crops_the_centre_and_the_classifier_crops_the_same(tmp_path):
    for split, cls in (("train", "a"), ("train", "b"), ("test", "a"), ("test", "b")):
        (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            framed(64, 12).save(tmp_path / split / cls / f"{i}.png")
    cfg = RunConfig()
    cfg.data = DataConfig(spec=str(tmp_path), image_size=16, crop_pct=0.5, val_fraction=0, prepared="off")
    data = build_dataset(cfg.data, 0)
    assert data.resize == 32
    identity = Normalize([0.0] * 3, [1 / 255] * 3)  # pixels through unchanged
    cpu = torch.device("cpu")
    batches = eval_batches(data.test, data, cfg, cpu, identity, False)
    images = torch.cat([x for x, _, _ in batches])
    assert images.shape[1:] == (3, 16, 16)
    assert bool((images[:, 2] == 255).all() and (images[:, 0] == 0).all()), "the crop is inside the frame"
    whole = build_dataset(DataConfig(spec=str(tmp_path), image_size=16, val_fraction=0, prepared="off"), 0)
    plain = torch.cat(
        [x for x, _, _ in eval_batches(whole.test, whole, cfg, torch.device("cpu"), identity, False)]
    )
    assert float(plain[:, 0].max()) > 100, "without the crop the red frame is in the picture"

    class Probe(Classifier):  # preprocess only: the pixels a prediction is made from
        def __init__(self):
            self.image_size, self.resize, self.channels = 16, 32, 3

    blob = io.BytesIO()
    framed(64, 12).save(blob, "PNG")
    for given in (blob.getvalue(), framed(64, 12)):  # bytes are decoded, a PIL image only fitted
        predicted = torch.from_numpy(np.array(Probe().preprocess(given))).permute(2, 0, 1).float()
        torch.testing.assert_close(predicted, images[0])


def test_prepared_shards_hold_the_larger_side_and_crop_to_the_same_pixels(photos, tmp_path):
    cfg = RunConfig()
    options = dict(spec=photos, image_size=SIZE, crop_pct=0.875, val_fraction=0, cache_dir=str(tmp_path))
    cfg.data = DataConfig(**options, prepared="always")
    packed = build_dataset(cfg.data, 0)
    assert packed.test.packed is not None and packed.test.packed.image_size == SIDE
    files = build_dataset(DataConfig(**options, prepared="off"), 0, stats=(packed.mean, packed.std))
    identity = Normalize([0.0] * 3, [1 / 255] * 3)
    cpu = torch.device("cpu")
    a = torch.cat([x for x, _, _ in eval_batches(packed.test, packed, cfg, cpu, identity, False)])
    b = torch.cat([x for x, _, _ in eval_batches(files.test, files, cfg, cpu, identity, False)])
    assert a.shape[1:] == (3, SIZE, SIZE)
    torch.testing.assert_close(a, b)


def test_a_checkpoint_from_before_crop_pct_loads_and_fits_the_whole_image(photo_run, tmp_path):
    checkpoint = load_checkpoint(photo_run)
    checkpoint.meta.resize = None  # written without the field, as before
    for section, key in (("data", "crop_pct"), ("augment", "random_resized_crop"), ("augment", "rrc_scale")):
        del checkpoint.config[section][key]
    save_checkpoint(tmp_path / "old.pt", checkpoint)
    payload = torch.load(tmp_path / "old.pt", weights_only=True)
    assert "resize" not in payload and "crop_pct" not in payload["config"]["data"]
    old = Classifier.load(tmp_path / "old.pt", device="cpu")
    assert old.resize is None and RunConfig.from_dict(old.checkpoint.config).data.crop_pct is None
    image = framed(64, 12)
    pixels = old.preprocess(image)
    assert pixels.shape == (SIZE, SIZE, 3) and pixels[..., 0].max() > 100  # the whole image, frame too


def test_random_resized_crop_batches_come_at_the_crop_size(photos):
    """Files are cropped in the loader's workers as they are decoded; in-memory arrays (digits)
    come at the stored side and are cropped on the device."""
    cpu = torch.device("cpu")
    for spec, size, channels in ((photos, SIZE, 3), ("digits", 16, 1)):
        cfg = RunConfig()
        cfg.augment.random_resized_crop = True
        cfg.data = DataConfig(spec=spec, image_size=size, prepared="off", workers=0)
        resolve_crop_pct(cfg)
        data = build_dataset(cfg.data, 0)
        assert data.resize == resize_side(size, 0.875) > size
        batches = training_batches(cfg, data, cpu, Normalize(data.mean, data.std), False)
        assert isinstance(batches.batches, PhotoTrainBatches) == (spec == photos)
        x, y, _ = next(iter(batches))
        assert x.shape == (len(y), channels, size, size) and x.dtype == torch.float32
        cfg.augment.random_resized_crop = False  # crop_pct alone: the padded crop of the centre
        plain = training_batches(cfg, data, cpu, Normalize(data.mean, data.std), False)
        x, y, _ = next(iter(plain))
        assert x.shape == (len(y), channels, size, size)


def test_resize_side_follows_timm():
    assert resize_side(224, 0.875) == 256 and resize_side(32, 0.875) == 36
    assert resize_side(224, None) == 224 and resize_side(224, 1.0) == 224
    for bad in ("data.crop_pct=0", "data.crop_pct=1.5", "augment.rrc_scale=0"):
        with pytest.raises(YingsheError, match=bad.split("=")[0]):
            apply_overrides(RunConfig(), [bad])


@pytest.mark.parametrize(
    "augment",
    [
        ["augment.random_resized_crop=true"],  # photo.PhotoCrops
        ["augment.random_resized_crop=false", "augment.policy=randaugment"],  # SplitDataset's transform
    ],
    ids=["random-resized-crop", "randaugment"],
)
def test_a_run_augmented_in_workers_killed_mid_epoch_and_resumed_ends_bit_identical(
    photos, tmp_path, augment
):
    """Augmentation drawn in 2 DataLoader workers: killed (SIGKILL) before step 7, resumed from
    the mid-epoch last.pt of step 6 (epochs of 4 steps), the run ends with the uninterrupted
    run's weights. The workers restart with the resume, so this holds only because each batch's
    draws come from (seed, epoch, batch number, images), not from a worker's generator."""
    overrides = [
        f"data.image_size={SIZE}",
        "model.name=seed-cnn",
        "model.kwargs={widths: [8, 8, 8, 8]}",
        *augment,
        "train.epochs=2",
        "train.batch_size=8",
        "train.checkpoint_every=3",
        "data.workers=2",
        "data.prepared=off",
        "train.plots=false",
        "train.device=cpu",
        "train.deterministic=true",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YINGSHE_CACHE": str(tmp_path / "cache")}

    def train(*args: str, **extra: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "yingshe", "train", *args]
        return subprocess.run(command, capture_output=True, text=True, env={**env, **extra}, timeout=300)

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = train("--data", photos, *overrides, f"train.out={whole}")
    assert done.returncode == 0, done.stderr[-3000:]
    done = train("--data", photos, *overrides, f"train.out={killed}", YINGSHE_DEBUG_KILL_AT="0:7")
    assert done.returncode == -9, done.stderr[-3000:]
    saved = load_checkpoint(killed / "last.pt")
    assert saved.fit_state["step"] == 6 and saved.fit_state["progress"] is not None  # mid-epoch 2
    done = train("--resume", str(killed))
    assert done.returncode == 0, done.stderr[-3000:]
    want, got = load_checkpoint(whole / "last.pt"), load_checkpoint(killed / "last.pt")
    assert got.fit_state["step"] == want.fit_state["step"] == 8
    assert want.state_dict.keys() == got.state_dict.keys()
    assert all(torch.equal(want.state_dict[k], got.state_dict[k]) for k in want.state_dict)
