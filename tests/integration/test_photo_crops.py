"""Photo training batches cropped at decode time (data/photo.py), from files and from shards."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from yingshe.api import prepare_data
from yingshe.config import DataConfig
from yingshe.data.dataset import build_dataset
from yingshe.data.photo import PhotoBatches, PhotoCrops, decode_crop


@pytest.fixture(scope="module")
def photos(tmp_path_factory, cifar_members) -> str:
    """Two classes of CIFAR photos upscaled to 120×90 JPEGs (a photo's shape, kept small)."""
    root = tmp_path_factory.mktemp("photo-crops")
    for cls in ("cat", "ship"):
        (root / cls).mkdir()
        for i, blob in enumerate(cifar_members["train"][cls][:12]):
            image = Image.open(io.BytesIO(blob)).convert("RGB").resize((120, 90), Image.Resampling.BICUBIC)
            image.save(root / cls / f"{i:03d}.jpg", quality=90)
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return str(root)


def test_decode_time_crops_are_crop_sized_and_drawn_from_the_photo(photos):
    data = build_dataset(DataConfig(spec=photos, prepared="off", image_size=64, val_fraction=0))
    batch = PhotoCrops(data.train, 32, 3).__getitems__(list(range(len(data.train))))
    assert batch.images.shape == (len(data.train), 3, 32, 32) and batch.images.dtype == torch.uint8
    names = [data.train.name(i) for i in range(len(data.train))]
    assert [not n.endswith("broken.jpg") for n in names] == batch.ok.tolist()  # the bad file is flagged
    assert float(batch.images[batch.ok].float().std()) > 10  # real pixels, not zeros


def test_a_big_box_is_decoded_at_reduced_scale_with_the_same_content():
    """A 512×512 photo cropped to 64: draft decodes at 1/8 or so; the crop still matches a full
    decode's (a smooth gradient, so scales agree to a few levels)."""
    ramp = np.tile(np.linspace(0, 255, 512, dtype=np.float32), (512, 1))
    image = Image.fromarray(np.stack([ramp, ramp.T, np.full_like(ramp, 128)], -1).astype(np.uint8))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    crops = torch.stack(
        [decode_crop(out.getvalue(), 64, 3, np.random.default_rng(s), "ramp") for s in range(20)]
    )
    assert crops.shape == (20, 3, 64, 64)
    assert bool((crops[:, 2].float() - 128).abs().max() <= 3)  # the flat channel stays flat
    assert float(crops[:, 0].float().std()) > 20  # crops from different places of the gradient


def test_prepared_shards_are_cropped_in_workers_as_normalisable_batches(photos, tmp_path):
    prepare_data(photos, image_size=48, cache_dir=str(tmp_path))
    data = build_dataset(DataConfig(spec=photos, image_size=48, cache_dir=str(tmp_path), val_fraction=0))
    assert data.train.packed is not None
    batches = PhotoBatches(data.train, 32, 3, batch_size=8, workers=0)
    seen = [b for b in batches]
    assert sum(len(b.labels) for b in seen) == len(data.train)
    assert all(b.images.shape[1:] == (3, 32, 32) and bool(b.ok.all()) for b in seen)
