"""Batch random-resized-crop (data/augment.py) for photos prepared above the crop size."""

import torch

from yingshe.data.augment import Normalize, ResizedCropAugment, random_resized_crop


def ramp(b: int = 4, side: int = 64) -> torch.Tensor:
    """Images whose value is the column index: where a crop came from shows in its pixels."""
    return torch.arange(side, dtype=torch.uint8).view(1, 1, 1, side).expand(b, 3, side, side).contiguous()


def test_shape_and_dtype_follow_the_crop_size_and_input():
    out = random_resized_crop(torch.randint(0, 256, (5, 3, 80, 60), dtype=torch.uint8), 32, flip=True)
    assert out.shape == (5, 3, 32, 32) and out.dtype == torch.uint8


def test_the_full_box_without_flip_is_the_image():
    x = ramp()
    assert torch.equal(random_resized_crop(x, 64, scale=(1, 1), ratio=(1, 1)), x)


def test_flip_mirrors_about_half_the_images():
    torch.manual_seed(0)
    x = ramp(b=200)
    out = random_resized_crop(x, 64, scale=(1, 1), ratio=(1, 1), flip=True)
    mirrored = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x, strict=True)])
    assert bool((mirrored | kept).all()) and 70 < int(mirrored.sum()) < 130


def test_small_boxes_zoom_into_part_of_the_image():
    torch.manual_seed(1)
    out = random_resized_crop(ramp(b=50), 64, scale=(0.1, 0.1), ratio=(1, 1))
    spans = out[:, 0, 32].float().amax(1) - out[:, 0, 32].float().amin(1)  # columns one row covers
    assert bool((spans < 30).all())  # a 10% box spans about 20 of the 64 columns, never the whole


def test_the_augment_normalises_the_cropped_batch():
    norm = Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    x = torch.full((3, 3, 40, 40), 255, dtype=torch.uint8)
    inputs, targets = ResizedCropAugment(24)(x, torch.tensor([0, 1, 2]), norm)
    assert inputs.shape == (3, 3, 24, 24) and inputs.dtype == torch.float32
    assert torch.allclose(inputs, torch.full_like(inputs, 2.0)) and targets.tolist() == [0, 1, 2]


def test_resize_box_is_interpolate_on_any_view():
    """The contiguous channels-last copy (torch's fast uint8 path) changes speed, not values."""
    import torch.nn.functional as F

    from yingshe.data.augment import resize_box

    torch.manual_seed(2)
    shard_image = torch.randint(0, 256, (90, 70, 3), dtype=torch.uint8)  # NHWC, as shards store it
    for top, left, h, w in [(3, 5, 40, 50), (0, 0, 90, 70), (60, 1, 9, 13)]:
        box = shard_image[top : top + h, left : left + w].permute(2, 0, 1)[None]
        want = F.interpolate(box, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
        assert torch.equal(resize_box(box, 32), want)
        assert torch.equal(resize_box(box.contiguous(), 32), want)  # channels-first input too


def test_boxes_lie_inside_the_image_and_follow_the_seed():
    from yingshe.data.augment import draw_boxes

    torch.manual_seed(4)
    boxes = draw_boxes(500, 60, 80, scale=(0.08, 1.0), flip=True)
    for top, left, h, w, _ in boxes:
        assert 1 <= h <= 60 and 1 <= w <= 80 and 0 <= top <= 60 - h and 0 <= left <= 80 - w
    areas = [h * w / (60 * 80) for _, _, h, w, _ in boxes]
    assert min(areas) < 0.15 and max(areas) > 0.8  # the whole range of scales is drawn
    assert 200 < sum(m for *_, m in boxes) < 300
    torch.manual_seed(4)
    assert draw_boxes(500, 60, 80, scale=(0.08, 1.0), flip=True) == boxes
