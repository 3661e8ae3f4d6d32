"""Batch augmentation: each op does per image what its per-image definition says."""

import torch
import torch.nn.functional as F

from yingshe.config import AugmentConfig
from yingshe.data.augment import (
    BatchAugment,
    Normalize,
    mix,
    random_affine,
    random_crop,
    random_erase,
    random_flip,
)


def batch(b=16, c=3, h=12, w=12):
    return torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8)


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    torch.manual_seed(0)
    x, pad = batch(), 3
    out = random_crop(x, pad)
    padded = F.pad(x, (pad,) * 4)
    offsets = set()
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 12, dx : dx + 12])
        ]
        assert matches, f"image {i} is not a crop of its padded input"
        offsets.add(matches[0])
    assert len(offsets) > 4, "offsets should vary across the batch"


def test_random_flip_flips_some_images_and_keeps_the_rest():
    torch.manual_seed(0)
    x = batch(b=64)
    out = random_flip(x)
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 16 < sum(flipped) < 48


def test_affine_without_rotation_translation_or_zoom_is_identity():
    x = torch.rand(4, 3, 16, 16)
    torch.testing.assert_close(random_affine(x, 0.0, 0.0, 0.0), x, atol=1e-5, rtol=0)


def test_affine_rotation_changes_images():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 16, 16)
    assert not torch.allclose(random_affine(x, 30.0, 0.0, 0.0), x)


def test_erasing_zeroes_a_box_only_with_its_probability():
    torch.manual_seed(0)
    x = torch.ones(64, 3, 16, 16)
    assert torch.equal(random_erase(x, 0.0), x)
    out = random_erase(x, 1.0)
    erased = (out == 0).flatten(1).any(1)
    assert erased.all()
    assert (out == 0).float().mean() < 0.3


def test_mixup_target_weights_are_the_pixel_weights():
    torch.manual_seed(0)
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 4  # the reversed partner has another class
    mixed, target = mix(x, y, 4, mixup=0.4, cutmix=0.0)
    torch.testing.assert_close(target.sum(1), torch.ones(8))
    lam = target[0, y[0]]
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))


def test_cutmix_target_weights_are_the_pasted_area():
    torch.manual_seed(1)
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 4
    mixed, target = mix(x, y, 4, mixup=0.0, cutmix=1.0)
    from_partner = (mixed[0] != x[0]).any(0).float().mean()
    torch.testing.assert_close(target[0, y[7]], from_partner, atol=1e-6, rtol=0)
    torch.testing.assert_close(target.sum(1), torch.ones(8))


def test_normalize_matches_the_formula():
    norm = Normalize([0.5, 0.25, 0.1], [0.2, 0.3, 0.4])
    x = batch(b=2)
    expected = (x.float() / 255 - torch.tensor([0.5, 0.25, 0.1]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2, 0.3, 0.4]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)


def test_digit_like_data_is_not_flipped_by_default():
    aug = BatchAugment(AugmentConfig(), image_size=28, flip_invariant=False, num_classes=10)
    assert aug.hflip is False and aug.padding == 3
    forced = BatchAugment(AugmentConfig(hflip=True), 28, flip_invariant=False, num_classes=10)
    assert forced.hflip is True


def test_alternating_flip_mirrors_half_the_images_and_each_one_every_other_epoch():
    from yingshe.data.augment import alternate_mirror

    index = torch.arange(10_000)
    first, second, third = (alternate_mirror(index, epoch) for epoch in (1, 2, 3))
    assert 4_800 < int(first.sum()) < 5_200, "a fixed half starts mirrored"
    assert torch.equal(second, ~first) and torch.equal(third, first)
    assert torch.equal(alternate_mirror(index.flip(0), 1), first.flip(0)), "a function of the position only"


def test_alternating_flip_through_device_batches_shows_each_image_both_ways():
    """Two epochs in a row through `DeviceBatches` (which hands the augmentation the images'
    positions and the epoch): every image arrives mirrored in exactly one of them, whatever the
    order of the batches; a random flip shows about half of them the same way twice."""
    from yingshe.data.augment import alternate_mirror
    from yingshe.data.batch import Batch
    from yingshe.data.loader import DeviceBatches

    torch.manual_seed(0)
    images = batch(b=64)
    plain = Normalize([0.0] * 3, [1.0] * 3)(images)

    class Shuffled:
        def set_epoch(self, epoch):
            self.order = torch.randperm(64)

        def __len__(self):
            return 4

        def __iter__(self):
            for part in self.order.split(16):  # labels 100 + position; position 5 unreadable
                yield Batch(images[part], part + 100, part.clone(), part != 5)

    def mirrored_by_epoch(alternate: bool) -> list[set[int]]:
        cfg = AugmentConfig(crop_padding=0, hflip=True, alternate_flip=alternate)
        loader = DeviceBatches(
            Shuffled(),
            None,
            torch.device("cpu"),
            Normalize([0.0] * 3, [1.0] * 3),
            BatchAugment(cfg, 12, True, 10),
        )
        loader.record_bad = lambda indices: None  # no split to name the unreadable one from
        seen = []
        for epoch in (1, 2):
            loader.set_epoch(epoch)
            seen.append(set())
            for x, _, labels in loader:
                for image, i in zip(x, (labels - 100).tolist(), strict=True):
                    if torch.equal(image, plain[i].flip(-1)):
                        seen[-1].add(i)
                    else:
                        assert torch.equal(image, plain[i])
        return seen

    first, second = mirrored_by_epoch(True)
    assert 16 < len(first) < 48 and first.isdisjoint(second) and len(first | second) == 63
    positions = torch.tensor([i for i in range(64) if i != 5])
    assert first == set(positions[alternate_mirror(positions, 1)].tolist()), "mirrored by position"
    first, second = mirrored_by_epoch(False)
    assert len(first & second) + len(set(range(64)) - {5} - first - second) > 8


def test_random_crop_mirrors_exactly_the_images_a_mask_names():
    """With padding (the recipes' path), a bool mask as `flip`: rows that ramp left to right
    keep ramping up inside the crop unless mirrored."""
    ramp = torch.arange(12, dtype=torch.uint8).mul(20).expand(32, 3, 12, 12).contiguous()
    mask = torch.arange(32) % 3 == 0
    out = random_crop(ramp, 2, flip=mask).float()
    rising = out[:, 0, 6, 4:8].diff().mean(1) > 0  # an interior stretch: no zero padding there
    assert torch.equal(rising, ~mask)


def test_alternating_flip_is_refused_with_random_resized_crops():
    import pytest

    from yingshe.config import RunConfig, validate
    from yingshe.errors import YingsheError

    cfg = RunConfig()
    cfg.augment.alternate_flip, cfg.augment.random_resized_crop = True, True
    with pytest.raises(YingsheError, match="alternate_flip applies to the padded crop"):
        validate(cfg)


def test_normalize_keeps_the_gradient_of_an_input_that_asks_for_one():
    """The fast path writes in place with `out=`, which autograd refuses; an input that requires
    grad (a saliency map of the pixels) takes the out-of-place form and gets d/dx = scale."""
    norm = Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    x = (torch.rand(2, 3, 5, 5) * 255).requires_grad_()
    y = norm(x)
    y.sum().backward()
    assert torch.allclose(x.grad, norm.scale.expand_as(x))
    with torch.no_grad():
        assert torch.equal(norm(x), y.detach())  # the in-place form: the same values
