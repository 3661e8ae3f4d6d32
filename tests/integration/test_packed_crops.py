"""Random-resized crops cut straight from prepared shards (data/packed_crops.py): the same batches
as gathering, cropping and normalising step by step, and recycled buffers that never alias."""

import io

import pytest
import torch
from PIL import Image

from yingshe.api import prepare_data
from yingshe.config import DataConfig
from yingshe.data.augment import Normalize, ResizedCropAugment
from yingshe.data.box_resize import BoxResizer
from yingshe.data.dataset import build_dataset
from yingshe.data.loader import DeviceBatches
from yingshe.data.packed_crops import PackedCrops
from yingshe.data.stream import PackedBatches

CPU = torch.device("cpu")
NORM = Normalize([0.49, 0.48, 0.45], [0.25, 0.24, 0.26])


def prepare_photos(root, cifar_members, mode: str):
    """30 CIFAR photos of 3 classes upscaled to 60×45 JPEGs (`mode` RGB or L), prepared as 48-px
    uint8 shards: the train split."""
    for cls in ("cat", "dog", "ship"):
        (root / cls).mkdir(parents=True)
        for i, blob in enumerate(cifar_members["train"][cls][:10]):
            image = Image.open(io.BytesIO(blob)).convert(mode).resize((60, 45), Image.Resampling.BICUBIC)
            image.save(root / cls / f"{i:03d}.jpg", quality=90)
    cache = root.parent / f"{root.name}-cache"
    prepare_data(str(root), image_size=48, cache_dir=str(cache))
    data = build_dataset(DataConfig(spec=str(root), image_size=48, cache_dir=str(cache), val_fraction=0))
    assert data.train.packed is not None
    return data.train


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, cifar_members):
    return prepare_photos(tmp_path_factory.mktemp("packed-crops"), cifar_members, "RGB")


def reference(split, window: int) -> DeviceBatches:
    order = PackedBatches(split, 8, shuffle=True, seed=3, merge_tail=True)
    order.window_images = window
    return DeviceBatches(order, split, CPU, NORM, ResizedCropAugment(32))


def direct(split, window: int, threads: int, normalize: bool, channels_last: bool = False) -> DeviceBatches:
    norm = NORM if normalize else None
    options = dict(normalize=norm, threads=threads, channels_last=channels_last, resize="torch")
    crops = PackedCrops(split, 32, 8, seed=3, **options)
    crops.order.window_images = window
    return DeviceBatches(crops, split, CPU, NORM, channels_last=channels_last)


def epoch(batches: DeviceBatches, seed: int) -> list[tuple[torch.Tensor, ...]]:
    torch.manual_seed(seed)
    batches.set_epoch(1)
    return [tuple(t.clone() for t in out) for out in batches]


@pytest.mark.parametrize(
    ("threads", "normalize", "channels_last"),
    [(1, True, False), (2, True, False), (2, False, False), (2, True, True), (1, False, True)],
)
def test_batches_equal_gather_crop_normalise_value_for_value(prepared, threads, normalize, channels_last):
    # windows of 7 images: batches of 8 span two windows, so parts are cut before a window goes
    want = epoch(reference(prepared, 7), seed=11)
    got = epoch(direct(prepared, 7, threads, normalize, channels_last), seed=11)
    assert [len(b[2]) for b in got] == [len(b[2]) for b in want]
    assert sum(len(b[2]) for b in got) == len(prepared)
    for (inputs, targets, labels), (ref_inputs, ref_targets, ref_labels) in zip(got, want, strict=True):
        assert inputs.shape == ref_inputs.shape == (len(labels), 3, 32, 32)
        assert inputs.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert inputs.dtype == torch.float32 and torch.equal(inputs, ref_inputs)
        assert torch.equal(labels, ref_labels) and torch.equal(targets, ref_targets)
    assert float(torch.cat([b[0] for b in got]).std()) > 0.3  # real pixels, normalised


@pytest.mark.parametrize(
    ("mode", "normalize", "channels_last"),
    [("RGB", False, True), ("L", False, True), ("RGB", True, True), ("RGB", True, False)],
)
def test_opencv_crops_match_torch_crops_box_for_box(
    tmp_path, cifar_members, prepared, monkeypatch, mode, normalize, channels_last
):
    """`resize="opencv"` cuts the same boxes in the same order as `torch` and, mirrored or not,
    nearly the same pixels: a 48-px image to 32 px shrinks boxes by 0.67-1, so both kernels run
    (OpenCV's bilinear only down to 0.75, where it lacks torch's antialiasing)."""
    split = prepared if mode == "RGB" else prepare_photos(tmp_path / "grey", cifar_members, "L")
    sent: dict[str, list] = {"opencv": [], "torch": []}  # the boxes each kernel was given
    opencv_resize, torch_resize = BoxResizer._resize_opencv, BoxResizer._resize_torch

    def spy_opencv(self, image, box, plane, mirror):
        sent["opencv"].append(box)
        return opencv_resize(self, image, box, plane, mirror)

    def spy_torch(image, box, crop):
        sent["torch"].append(box)
        torch_resize(image, box, crop)

    monkeypatch.setattr(BoxResizer, "_resize_opencv", spy_opencv)
    monkeypatch.setattr(BoxResizer, "_resize_torch", staticmethod(spy_torch))

    def crops(resize: str) -> list[torch.Tensor]:
        options = dict(normalize=NORM if normalize else None, channels_last=channels_last)
        source = PackedCrops(split, 32, 8, seed=3, threads=2, resize=resize, **options)
        source.set_epoch(1)
        torch.manual_seed(11)
        return [batch.images.clone() for batch in source]

    got = crops("opencv")
    assert sent["opencv"] and all(0.75 * max(h, w) <= 32 for _, _, h, w, _ in sent["opencv"])
    assert sent["torch"] and all(0.75 * max(h, w) > 32 for _, _, h, w, _ in sent["torch"])
    want = crops("torch")
    assert [b.shape for b in got] == [b.shape for b in want]
    assert got[0].shape[1] == (3 if mode == "RGB" else 1)
    assert got[0].dtype == (torch.float32 if normalize else torch.uint8)
    assert got[0].is_contiguous(memory_format=torch.channels_last) == channels_last
    diff = (torch.cat(got).float() - torch.cat(want).float()).abs()
    if normalize:
        diff = diff / NORM.scale  # back to levels
    per_image = diff.flatten(1).mean(1)
    # rounding of the two fixed-point kernels, and a wider filter below 1×: measured at most 1.14
    # levels an image (0.33 on average); a box mirrored the wrong way is ~24-44 levels off (crops
    # of the photo corpus), one misplaced by a pixel tens
    assert float(per_image.max()) < 2.5 and float(diff.mean()) < 0.75, per_image


def test_opencv_is_asked_for_by_name_only_where_installed(prepared, monkeypatch):
    from yingshe.data import box_resize

    monkeypatch.setattr(box_resize, "opencv", lambda: None)
    with pytest.raises(ValueError, match="opencv-python-headless"):
        PackedCrops(prepared, 32, 8, resize="opencv")
    assert PackedCrops(prepared, 32, 8).resizer.cv2 is None  # auto falls back to torch's resize
    with pytest.raises(ValueError, match="auto, torch or opencv"):
        PackedCrops(prepared, 32, 8, resize="pil")


def test_batches_held_by_the_consumer_are_never_overwritten(prepared):
    """A ring of 2 buffers and a consumer that keeps every batch of two epochs: each batch still
    holds what it held when it was yielded (fresh memory was taken instead of a busy buffer)."""
    crops = PackedCrops(prepared, 32, 8, seed=3, normalize=NORM, ring=2)
    kept, snapshots = [], []
    for e in (1, 2):
        crops.set_epoch(e)
        for batch in crops:
            kept.append(batch.images)
            snapshots.append(batch.images.clone())
    assert crops.cutter.ring.recycled == 0 and len({t.data_ptr() for t in kept}) == len(kept) == 6
    assert all(torch.equal(k, s) for k, s in zip(kept, snapshots, strict=True))
    del kept, batch
    crops.set_epoch(3)
    # a consumer that holds one batch while the next is cut: two buffers take turns
    pointers = [batch.images.data_ptr() for batch in crops]
    assert crops.cutter.ring.recycled == 3 and len(set(pointers)) == 2


def test_a_split_that_is_not_prepared_is_refused(cifar_folder):
    data = build_dataset(DataConfig(spec=str(cifar_folder), prepared="off", image_size=32))
    with pytest.raises(ValueError, match="prepared"):
        PackedCrops(data.train, 24, 8)


def test_a_sampler_orders_the_batches_and_a_resumed_epoch_skips_without_drawing(prepared):
    """With the sampler the workers' loaders use (a global permutation per epoch), each batch is
    the gathered, cropped, normalised batch of its sorted indices; `skip_batches` leaves the
    first out without cutting them or drawing their boxes."""
    import numpy as np

    from yingshe.data.loader import EpochBatches, EpochShuffle
    from yingshe.data.stream import to_batch

    def crops(skip: int = 0) -> PackedCrops:
        sampler = EpochBatches(EpochShuffle(len(prepared), seed=5), 8, merge_tail=True)
        source = PackedCrops(prepared, 32, 8, normalize=NORM, threads=2, batches=sampler, resize="torch")
        source.set_epoch(2)
        source.skip_batches(skip)
        return source

    def reference(idx: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        positions = np.sort(idx.numpy())
        labels = prepared.labels[positions]
        batch = to_batch(prepared.packed.take(positions), labels, positions, positions >= 0)
        return positions, ResizedCropAugment(32)(batch.images, batch.labels, NORM)[0]

    torch.manual_seed(7)
    got = [(b.images.clone(), b.index) for b in crops()]
    order = EpochBatches(EpochShuffle(len(prepared), seed=5), 8, merge_tail=True)
    order.sampler.set_epoch(2)
    batches = list(order.batches())
    assert len(got) == len(batches) == 3
    torch.manual_seed(7)
    for (images, index), idx in zip(got, batches, strict=True):
        positions, want = reference(idx)
        assert index.tolist() == positions.tolist() and torch.equal(images, want)
    torch.manual_seed(7)
    resumed = [(b.images.clone(), b.index) for b in crops(skip=1)]
    torch.manual_seed(7)  # the skipped batch drew nothing: the next one gets the first draws
    positions, want = reference(batches[1])
    assert len(resumed) == 2 and resumed[0][1].tolist() == positions.tolist()
    assert torch.equal(resumed[0][0], want)


def test_yingshe_train_cuts_prepared_photos_with_packed_crops(tmp_path, cifar_members):
    from yingshe.api import training_batches
    from yingshe.config import RunConfig
    from yingshe.data.crop import resolve_crop_pct

    root = tmp_path / "photos"
    for cls in ("cat", "ship"):
        (root / cls).mkdir(parents=True)
        for i, blob in enumerate(cifar_members["train"][cls][:8]):
            image = Image.open(io.BytesIO(blob)).convert("RGB").resize((56, 44), Image.Resampling.BICUBIC)
            image.save(root / cls / f"{i:03d}.jpg", quality=90)
    cfg = RunConfig()
    cfg.augment.random_resized_crop = True
    cfg.data = DataConfig(
        spec=str(root), image_size=24, prepared="always", cache_dir=str(tmp_path / "c"), val_fraction=0
    )
    cfg.train.batch_size = 4
    resolve_crop_pct(cfg)
    data = build_dataset(cfg.data, 0)
    assert data.train.packed is not None and data.train.packed.image_size > 24
    batches = training_batches(cfg, data, CPU, Normalize(data.mean, data.std), False)
    assert isinstance(batches.batches, PackedCrops) and batches.batches.cutter.norm is not None
    assert batches.batches.resizer.cv2 is not None  # augment.crop_resize=auto, and the dev extras have cv2
    cfg.augment.crop_resize = "torch"
    exact = training_batches(cfg, data, CPU, Normalize(data.mean, data.std), False)
    assert exact.batches.resizer.cv2 is None
    seen = list(batches)
    assert sum(len(y) for _, y, _ in seen) == len(data.train)
    for x, y, _ in seen:
        assert x.shape == (len(y), 3, 24, 24) and x.dtype == torch.float32
    pixels = torch.cat([x for x, _, _ in seen])
    assert abs(float(pixels.mean())) < 0.6 and 0.5 < float(pixels.std()) < 1.6  # normalised once, not twice
