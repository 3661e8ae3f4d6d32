"""The CUDA path, for a machine with a GPU: `pytest -m gpu` (skipped, with this reason, elsewhere).

What the CPU suite cannot show: training on the device with bf16 autocast and channels-last,
augmentation and normalisation on the device, and predict agreeing with evaluate when evaluation
runs under bf16. Written on a CPU-only machine: first run on a GPU is its first real test.
"""

import numpy as np
import pytest
import torch

import yingshe
from yingshe.api import eval_batches, uses_channels_last
from yingshe.config import AugmentConfig, RunConfig, apply_overrides
from yingshe.data.augment import BatchAugment, Normalize
from yingshe.data.dataset import build_dataset
from yingshe.evaluate.metrics import predict_batches
from yingshe.inference import model_from_checkpoint
from yingshe.runs import load_checkpoint
from yingshe.train.trainer import autocast_dtype

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (pytest -m gpu on a GPU)"),
]
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory):
    cfg = RunConfig()
    out = tmp_path_factory.mktemp("cuda-run")
    small = "model.kwargs={widths: [8, 16, 32, 32]}"
    apply_overrides(cfg, [f"train.out={out}", "train.batch_size=64", small, "train.epochs=6"])
    cfg.train.device = "cuda"
    return yingshe.train(cfg, progress=False)


def test_a_run_on_the_gpu_uses_bf16_autocast_and_channels_last_and_learns(cuda_run):
    cfg = RunConfig.from_dict(load_checkpoint(cuda_run.run_dir).config)
    assert uses_channels_last(cfg, CUDA)
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert autocast_dtype(cfg.train.amp, CUDA) == expected
    assert cuda_run.report["accuracy"] > 0.85, "six epochs on digits classify most test images"


def test_predict_agrees_with_evaluate_under_bf16(cuda_run):
    """Evaluation on the GPU runs under autocast; the classifier predicts in float32: the same
    top-1 class for all but near ties, and the same probabilities to bf16's precision. (cuDNN's
    TF32 and the two paths' layouts and batch sizes make even float32 differ slightly.)"""
    payload = load_checkpoint(cuda_run.run_dir)
    cfg = RunConfig.from_dict(payload.config)
    data = build_dataset(cfg.data, cfg.train.seed)
    model = model_from_checkpoint(payload).to(CUDA, memory_format=torch.channels_last)
    batches = eval_batches(data.test, data, cfg, CUDA, Normalize(data.mean, data.std), True)
    evaluated = predict_batches(model, batches, autocast_dtype(cfg.train.amp, CUDA)).logits.softmax(1)
    exact = predict_batches(model, batches, None).logits.softmax(1)
    predicted = yingshe.load(cuda_run.run_dir, device="cuda").predict(list(data.test.images), top_k=1)
    labels = np.array([int(p.label) for p in predicted])
    assert (labels == exact.argmax(1).numpy()).mean() >= 0.995  # float32 both ways
    np.testing.assert_allclose([p.top[0][1] for p in predicted], exact.max(1).values, atol=5e-3)
    assert (labels == evaluated.argmax(1).numpy()).mean() >= 0.99
    assert float((evaluated - exact).abs().mean()) < 0.01


def test_batch_augmentation_and_normalisation_run_on_the_device():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (16,))
    norm = Normalize([0.49, 0.48, 0.45], [0.25, 0.24, 0.26])
    augment = BatchAugment(AugmentConfig(), 32, True, 10)
    x, y = augment(images.to(CUDA), labels.to(CUDA), norm.to(CUDA))
    assert x.device.type == "cuda" and x.dtype == torch.float32 and x.shape == (16, 3, 32, 32)
    assert y.device.type == "cuda"
    nhwc = images.contiguous(memory_format=torch.channels_last)
    on_gpu = norm.to(CUDA)(nhwc.to(CUDA))
    assert on_gpu.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(on_gpu.cpu(), norm.cpu()(images), rtol=0, atol=1e-6)
