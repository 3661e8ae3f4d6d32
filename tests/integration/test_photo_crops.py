"""Photo training batches cropped at decode time (data/photo.py), from files and from shards."""

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


def test_decode_time_crops_are_crop_sized_and_drawn_from_the_photo(photos):
    data = build_dataset(DataConfig(spec=photos, prepared="off", image_size=64, val_fraction=0))
    batch = PhotoCrops(data.train, 32, 3).__getitems__(list(range(len(data.train))))
    assert batch.images.shape == (len(data.train), 3, 32, 32) and batch.images.dtype == torch.uint8
    names = [data.train.name(i) for i in range(len(data.train))]
    assert [not n.endswith("broken.jpg") for n in names] == batch.ok.tolist()  # the bad file is flagged
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


def test_opencv_and_torch_resize_crop_the_same_boxes_nearly_alike(photos, monkeypatch):
    """`resize="opencv"` (the default where cv2 is installed) takes the boxes shrunk by at most
    0.75, read in place from the decoded photo; the rest, and all with `torch`, go to torch's
    antialiased kernel. Same draws, same boxes: the crops differ by rounding only (a box
    mirrored the wrong way, or another box, is tens of levels off)."""
    from yingshe.data.box_resize import BoxResizer

    data = build_dataset(DataConfig(spec=photos, prepared="off", image_size=64, val_fraction=0))
    sent = []
    opencv_resize = BoxResizer._resize_opencv

    def spy(self, image, box, plane, mirror):
        sent.append(box)
        return opencv_resize(self, image, box, plane, mirror)

    monkeypatch.setattr(BoxResizer, "_resize_opencv", spy)
    indices = list(range(len(data.train)))
    batches = {}
    for resize in ("opencv", "torch"):
        torch.manual_seed(4)
        batches[resize] = PhotoCrops(data.train, 32, 3, channels_last=True, resize=resize).__getitems__(
            indices
        )
    assert sent and all(0.75 * max(h, w) <= 32 for _, _, h, w, _ in sent)  # and not every box
    assert len(sent) < int(batches["torch"].ok.sum())
    ok = batches["torch"].ok
    diff = (batches["opencv"].images[ok].float() - batches["torch"].images[ok].float()).abs()
    assert float(diff.flatten(1).mean(1).max()) < 2.5, diff.flatten(1).mean(1)


def test_crops_follow_torch_s_generator_and_survive_pickling(photos):
    """The boxes come from torch's generator (a DataLoader seeds it per worker from the run's
    seed): the same seed gives the same batch, in a copy sent to a spawned worker too."""
    import pickle

    data = build_dataset(DataConfig(spec=photos, prepared="off", image_size=64, val_fraction=0))
    crops = PhotoCrops(data.train, 32, 3)
    indices = list(range(8))
    torch.manual_seed(9)
    first = crops.__getitems__(indices).images
    torch.manual_seed(9)
    again = pickle.loads(pickle.dumps(crops)).__getitems__(indices).images
    other = crops.__getitems__(indices).images
    assert torch.equal(first, again) and not torch.equal(first, other)
