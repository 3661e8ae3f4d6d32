"""Every source format read from real data, pixel for pixel where the format allows."""

import csv
import io
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from yingshe.config import DataConfig
from yingshe.data.dataset import build_dataset
from yingshe.data.images import decode_image
from yingshe.data.sources import FASHION_CLASSES, read_source
from yingshe.errors import YingsheError

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_fashion_mnist_idx_files(fashion_dir):
    data = read_source(fashion_dir)
    assert data.classes == FASHION_CLASSES
    train, test = data.splits["train"], data.splits["test"]
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert 60 < train.images.mean() < 80  # mostly dark background, as the real set is


def test_idx_reads_raw_files_too(fashion_dir, tmp_path):
    import gzip

    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(gzip.decompress((fashion_dir / f"{name}.gz").read_bytes()))
    raw = read_source(tmp_path).splits["train"]
    packed = read_source(fashion_dir).splits["train"]
    assert np.array_equal(raw.images, packed.images) and np.array_equal(raw.labels, packed.labels)


def test_cifar_jpeg_tar_is_read_without_extraction(cifar_tar):
    data = read_source(cifar_tar)
    assert data.classes == CIFAR_CLASSES
    assert len(data.splits["train"]) == 50000 and len(data.splits["test"]) == 10000
    blob = data.splits["test"].files.read(0)
    assert decode_image(blob, 32, 3).shape == (32, 32, 3)


def test_plain_tar_members_are_read_by_offset(cifar_folder, tmp_path):
    archive = tmp_path / "slice.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(cifar_folder, arcname="slice")
    from_tar = read_source(archive)
    from_folder = read_source(cifar_folder)
    assert from_tar.classes == from_folder.classes
    a, b = from_tar.splits["train"], from_folder.splits["train"]
    assert len(a) == len(b) == 400
    order = np.argsort([a.files.name(i).rsplit("slice/", 1)[1] for i in range(len(a))])
    names_b = [str(p).split(str(cifar_folder) + "/", 1)[1] for p in b.files.paths]
    assert [a.files.name(i).rsplit("slice/", 1)[1] for i in order] == sorted(names_b)
    assert a.files.read(int(order[0])) == b.files.read(0)


def test_folder_tree_with_train_and_test(cifar_folder):
    data = read_source(cifar_folder)
    assert data.classes == CIFAR_CLASSES
    assert len(data.splits["train"]) == 400 and len(data.splits["test"]) == 200


def test_csv_manifest_with_relative_paths_and_split_column(cifar_folder, tmp_path):
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for split in ("train", "test"):
            for cls in ("cat", "dog"):
                for image in sorted((cifar_folder / split / cls).glob("*.jpg"))[:5]:
                    writer.writerow([image, cls, split])
    data = read_source(manifest)
    assert data.classes == ["cat", "dog"]
    assert len(data.splits["train"]) == 10 and len(data.splits["test"]) == 10
    bad = tmp_path / "bad.csv"
    bad.write_text("only_one_column\n")
    with pytest.raises(YingsheError, match="expected rows of path,label"):
        read_source(bad)


def cifar_batch(images: np.ndarray, labels: list[int]) -> bytes:
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return pickle.dumps({b"data": data, b"labels": labels, b"batch_label": b"x"})


def test_cifar_python_pickles_folder_and_archive(cifar_members, tmp_path):
    """Real CIFAR pixels written in the original pickle layout read back exactly."""
    pixels, labels = [], []
    for label, cls in enumerate(CIFAR_CLASSES):
        for blob in cifar_members["test"][cls][:6]:
            pixels.append(np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")))
            labels.append(label)
    images = np.stack(pixels)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i in range(1, 6):
        (root / f"data_batch_{i}").write_bytes(cifar_batch(images[i::6], labels[i::6]))
    (root / "test_batch").write_bytes(cifar_batch(images[::6], labels[::6]))
    names = [c.encode() for c in CIFAR_CLASSES]
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    data = read_source(tmp_path)
    assert data.classes == CIFAR_CLASSES
    assert np.array_equal(data.splits["test"].images, images[::6])
    assert np.array_equal(data.splits["test"].labels, labels[::6])
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar-10-batches-py")
    again = read_source(archive)
    assert np.array_equal(again.splits["train"].images, data.splits["train"].images)


def test_incomplete_cifar_folder_names_the_missing_files(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    (root / "data_batch_1").write_bytes(
        pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]})
    )
    with pytest.raises(YingsheError, match="lacks data_batch_2, .*test_batch, batches.meta"):
        read_source(tmp_path)


def test_hostile_cifar_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (eval, ("1+1",))

    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in (
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ):
        (root / name).write_bytes(pickle.dumps({b"data": Evil()}))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a"]}))
    with pytest.raises(YingsheError, match="refusing to load builtins.eval"):
        read_source(tmp_path)


def test_digits_split_is_stratified_and_seeded():
    a = build_dataset(DataConfig(spec="digits"), seed=1)
    b = build_dataset(DataConfig(spec="digits"), seed=1)
    assert a.image_size == 8 and a.channels == 1 and a.flip_invariant is False
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert np.array_equal(a.test.labels, b.test.labels)
    assert abs(len(a.test) - 0.2 * 1797) < 10


def test_limits_and_resizing_of_real_data(fashion_dir):
    cfg = DataConfig(spec=str(fashion_dir), limit_train=500, limit_test=200, image_size=32, channels=3)
    data = build_dataset(cfg)
    assert len(data.train) + len(data.val) == 500 and len(data.test) == 200
    assert data.train.images.shape[1:] == (32, 32, 3)
    assert np.bincount(data.test.labels).tolist() == [20] * 10
    assert len(data.mean) == 3 and 0.2 < data.mean[0] < 0.4


def test_wrong_paths_and_names_get_a_fix():
    with pytest.raises(YingsheError, match="does not exist") as err:
        build_dataset(DataConfig(spec="/no/such/folder"))
    assert err.value.fix
    with pytest.raises(YingsheError, match="did you mean 'fashion-mnist'"):
        build_dataset(DataConfig(spec="fashion-mnsit"))
