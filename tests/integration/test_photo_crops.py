"""Photo training batches cropped at decode time (data/photo.py) in DataLoader workers."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from yingshe.config import DataConfig
from yingshe.data.dataset import build_dataset
from yingshe.data.photo import PhotoCrops, decode_crop


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


def test_decode_time_crops_are_crop_sized_and_drawn_from_the_photo(photos, monkeypatch):
    from yingshe.data import batch as batch_module
    from yingshe.data import photo

    # the batch comes from torch.empty: make its memory non-zero, so a slot left unwritten shows
    filled = lambda *args, **kwargs: batch_module.image_batch(*args, **kwargs).fill_(255)  # noqa: E731
    monkeypatch.setattr(photo, "image_batch", filled)
    # a test split of one image a class: the broken file stays in train
    config = DataConfig(spec=photos, prepared="off", image_size=64, val_fraction=0, test_fraction=0.01)
    data = build_dataset(config)
    batch = PhotoCrops(data.train, 32, 3).__getitems__(list(range(len(data.train))))
    assert batch.images.shape == (len(data.train), 3, 32, 32) and batch.images.dtype == torch.uint8
    names = [data.train.name(i) for i in range(len(data.train))]
    assert [not n.endswith("broken.jpg") for n in names] == batch.ok.tolist()  # the bad file is flagged
    assert int((~batch.ok).sum()) == 1
    assert not bool(batch.images[~batch.ok].any())  # and its slot zeroed, not left as it was
    assert float(batch.images[batch.ok].float().std()) > 10  # real pixels, not zeros


def test_a_big_box_is_decoded_at_reduced_scale_with_the_same_content():
    """A 512×512 photo cropped to 64: draft decodes at 1/8 or so; the crop still matches a full
    decode's (a smooth gradient, so scales agree to a few levels)."""
    ramp = np.tile(np.linspace(0, 255, 512, dtype=np.float32), (512, 1))
    image = Image.fromarray(np.stack([ramp, ramp.T, np.full_like(ramp, 128)], -1).astype(np.uint8))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    crops = torch.stack(
        [decode_crop(out.getvalue(), 64, 3, np.random.default_rng(s).random(5), "ramp") for s in range(20)]
    )
    assert crops.shape == (20, 3, 64, 64)
    assert bool((crops[:, 2].float() - 128).abs().max() <= 3)  # the flat channel stays flat
    assert float(crops[:, 0].float().std()) > 20  # crops from different places of the gradient


@pytest.mark.parametrize(("channels", "channels_last"), [(3, True), (3, False), (1, True)])
def test_opencv_and_torch_resize_crop_the_same_boxes_nearly_alike(
    photos, monkeypatch, channels, channels_last
):
    """`resize="opencv"` (the default where cv2 is installed) takes the boxes shrunk by at most
    0.75, read in place from the decoded photo; the rest, and all with `torch`, go to torch's
    antialiased kernel. Same draws, same boxes: the crops differ by rounding only (a box
    mirrored the wrong way, or another box, is tens of levels off)."""
    from yingshe.data.box_resize import BoxResizer

    data = build_dataset(
        DataConfig(spec=photos, prepared="off", image_size=64, val_fraction=0, channels=channels)
    )
    sent = []
    opencv_resize = BoxResizer._resize_opencv

    def spy(self, image, box, plane, mirror):
        sent.append(box)
        return opencv_resize(self, image, box, plane, mirror)

    monkeypatch.setattr(BoxResizer, "_resize_opencv", spy)
    indices = list(range(len(data.train)))
    batches = {}
    for resize in ("opencv", "torch"):
        crops = PhotoCrops(data.train, 32, channels, channels_last=channels_last, resize=resize)
        batches[resize] = crops.__getitems__(indices)
    assert sent and all(0.75 * max(h, w) <= 32 for _, _, h, w, _ in sent)  # and not every box
    assert len(sent) < int(batches["torch"].ok.sum())
    ok = batches["torch"].ok
    assert batches["opencv"].images.shape[1] == channels
    assert batches["opencv"].images.is_contiguous(memory_format=torch.channels_last) == channels_last
    diff = (batches["opencv"].images[ok].float() - batches["torch"].images[ok].float()).abs()
    assert float(diff.flatten(1).mean(1).max()) < 2.5, diff.flatten(1).mean(1)


def test_a_batch_s_crops_follow_the_seed_epoch_and_images_not_the_worker(photos):
    """The boxes come from (run seed, epoch, the batch's images): the same batch crops alike in
    any worker, whatever its own generator has drawn, and in a copy sent to a spawned worker;
    another epoch or seed crops it differently."""
    import pickle

    from yingshe.data.loader import IndexBatch

    data = build_dataset(DataConfig(spec=photos, prepared="off", image_size=64, val_fraction=0))
    crops = PhotoCrops(data.train, 32, 3, seed=5)
    indices = IndexBatch(list(range(8)), epoch=2, number=0)
    torch.manual_seed(1)
    first = crops.__getitems__(indices).images
    torch.manual_seed(2)  # another worker's generator state
    again = pickle.loads(pickle.dumps(crops)).__getitems__(pickle.loads(pickle.dumps(indices))).images
    assert torch.equal(first, again)
    other_epoch = crops.__getitems__(IndexBatch(list(range(8)), epoch=3, number=0)).images
    other_number = crops.__getitems__(IndexBatch(list(range(8)), epoch=2, number=1)).images
    other_seed = PhotoCrops(data.train, 32, 3, seed=6).__getitems__(indices).images
    assert not torch.equal(first, other_epoch) and not torch.equal(first, other_seed)
    assert not torch.equal(first, other_number)
    negative = PhotoCrops(data.train, 32, 3, seed=-3).__getitems__(indices).images  # train.seed may be < 0
    assert negative.shape == first.shape


class EpochOf(torch.utils.data.Dataset):
    """What a worker's `__getitems__` is handed: the batch's epoch and number."""

    def __len__(self) -> int:
        return 20

    def __getitems__(self, indices):
        return [(indices.epoch, indices.number, len(indices))]


def test_the_epoch_and_batch_number_reach_persistent_workers():
    """Persistent workers keep their own copy of the dataset, which never sees `set_epoch`: the
    epoch travels with each batch of indices, through the real DataLoader queues."""
    from yingshe.data.loader import EpochBatches, EpochShuffle

    batches = EpochBatches(EpochShuffle(20, seed=1), batch_size=8, merge_tail=True)
    loader = torch.utils.data.DataLoader(
        EpochOf(), batch_sampler=batches, num_workers=2, persistent_workers=True, collate_fn=lambda b: b[0]
    )
    seen = []
    for epoch in (3, 4):
        batches.sampler.set_epoch(epoch)
        seen.append(list(loader))
    batches.skip = 1  # a resumed epoch: the batches it runs keep their numbers
    seen.append(list(loader))
    assert seen == [
        [(3, 0, 8), (3, 1, 8), (3, 2, 4)],
        [(4, 0, 8), (4, 1, 8), (4, 2, 4)],
        [(4, 1, 8), (4, 2, 4)],
    ]


@pytest.mark.parametrize("decoder", ["fast", "torchvision", "pillow"])
@pytest.mark.parametrize("channels", [3, 1])
def test_boxes_lie_inside_the_decoded_photo_whichever_decoder_and_scale(monkeypatch, decoder, channels):
    """Landscape and portrait JPEGs, crops small enough that big boxes decode at 1/2 or 1/4
    scale: every box lies inside the pixels it is cut from (a height and width swapped would
    overrun on one side, which slicing would hide), and the crop has the asked shape."""
    from yingshe.data import photo
    from yingshe.data.box_resize import BoxResizer

    if decoder != "fast":
        monkeypatch.setattr(photo, "decode_jpeg_fast", lambda *args, **kwargs: None)
    if decoder == "pillow":
        monkeypatch.setattr(photo, "decode_jpeg", None)
    rng = np.random.default_rng(0)
    for width, height in ((400, 250), (250, 400)):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "JPEG", quality=90)
        for size in (48, 160):
            resizer = BoxResizer(size, channels)
            for _ in range(40):
                image, (top, left, bh, bw, _) = photo.decode_box(
                    out.getvalue(), size, channels, rng.random(5), "p"
                )
                h, w = image.shape[:2]
                assert image.shape[2] == channels and abs(h / w - height / width) < 0.02  # its shape
                assert top >= 0 and top + bh <= h and left >= 0 and left + bw <= w, (h, w, top, left, bh, bw)
                assert resizer(image, (top, left, bh, bw, False)).shape == (size, size, channels)


def test_a_jpeg_header_claiming_a_huge_picture_is_refused_before_decoding(photos, tmp_path, monkeypatch):
    """A decompression bomb: a small file whose frame header says 60000×60000. Refused from the
    header (data.max_pixels) before any decoder is handed it, and flagged not ok in its batch."""
    from yingshe.data import photo
    from yingshe.data.images import UnreadableImage

    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, "JPEG", quality=90)
    data = bytearray(out.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2  # height, width
    bomb = bytes(data)

    def refusing(decoder):
        def guarded(blob, *args, **kwargs):
            if blob == bomb:
                pytest.fail("a decoder was handed a file its header already refuses")
            return decoder(blob, *args, **kwargs)

        return guarded

    monkeypatch.setattr(photo, "decode_jpeg_fast", refusing(photo.decode_jpeg_fast))
    monkeypatch.setattr(photo, "open_image", refusing(photo.open_image))
    with pytest.raises(UnreadableImage, match="max_pixels"):
        photo.decode_box(bomb, 32, 3, [0.5] * 5, "bomb.jpg")
    root = tmp_path / "bomb"
    for part, cls in (("train", "a"), ("train", "b"), ("test", "a"), ("test", "b")):
        (root / part / cls).mkdir(parents=True)
        for i in range(3):
            (root / part / cls / f"{i}.jpg").write_bytes(out.getvalue())
    (root / "train" / "a" / "bomb.jpg").write_bytes(bomb)
    split = build_dataset(DataConfig(spec=str(root), prepared="off", image_size=32, val_fraction=0)).train
    batch = PhotoCrops(split, 32, 3).__getitems__(list(range(len(split))))
    flagged = [split.name(i) for i in range(len(split)) if not batch.ok[i]]
    assert len(split) == 7 and len(flagged) == 1 and flagged[0].endswith("bomb.jpg")
