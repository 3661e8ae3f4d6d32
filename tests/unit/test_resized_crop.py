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
