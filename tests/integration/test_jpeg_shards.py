"""`yingshe data prepare --format webdataset --image-size N --jpeg-quality Q`: re-encoded shards."""

import io
import tarfile

import pytest
from PIL import Image

from yingshe.api import prepare_data
from yingshe.config import DataConfig
from yingshe.data.dataset import build_dataset
from yingshe.errors import YingsheError


def test_images_are_stored_as_square_jpegs_of_the_size_and_train_reads_them(tmp_path, cifar_folder):
    out = tmp_path / "shards"
    summary = prepare_data(str(cifar_folder), str(out), 48, fmt="webdataset", jpeg_quality=80)
    assert summary["jpeg_quality"] == 80 and summary["splits"]["train"]["samples"] == 400
    with tarfile.open(out / summary["splits"]["train"]["shards"][0]) as tar:
        member = next(m for m in tar if m.name.endswith(".jpg"))
        image = Image.open(io.BytesIO(tar.extractfile(member).read()))
        assert image.format == "JPEG" and image.size == (48, 48)
    data = build_dataset(DataConfig(spec=str(out), image_size=48, val_fraction=0))
    assert len(data.train) == 400 and len(data.test) == 200 and data.image_size == 48


def test_a_quality_without_webdataset_or_size_is_refused(tmp_path, cifar_folder):
    with pytest.raises(YingsheError, match="jpeg-quality"):
        prepare_data(str(cifar_folder), str(tmp_path / "a"), 48, jpeg_quality=80)
    with pytest.raises(YingsheError, match="image-size"):
        prepare_data(str(cifar_folder), str(tmp_path / "b"), fmt="webdataset", jpeg_quality=80)
    with pytest.raises(YingsheError, match="1-100"):
        prepare_data(str(cifar_folder), str(tmp_path / "c"), 48, fmt="webdataset", jpeg_quality=101)
