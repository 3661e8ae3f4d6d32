"""Each augmentation changes what it promises and nothing else: pixels (not shapes, dtypes or
labels) for the geometric and photometric ops; labels (as soft targets) only for mixup/cutmix."""

import pytest
import torch

from yingshe.config import AugmentConfig
from yingshe.data.augment import BatchAugment, Normalize, per_image_policy

SINGLE_OPS = {
    "rotate": {"rotate": 15.0},
    "translate": {"translate": 0.2},
    "scale": {"scale": 0.2},
    "erasing": {"erasing": 1.0},
}
NO_CROP_NO_FLIP = {"crop_padding": 0, "hflip": False}


def images(b=32, c=3, size=16):
    torch.manual_seed(0)
    return torch.randint(0, 256, (b, c, size, size), dtype=torch.uint8)


@pytest.mark.parametrize("op", sorted(SINGLE_OPS))
def test_a_pixel_op_changes_pixels_and_leaves_labels_and_shapes(op):
    x, y = images(), torch.arange(32) % 10
    norm = Normalize([0.5] * 3, [0.25] * 3)
    plain = BatchAugment(AugmentConfig(**NO_CROP_NO_FLIP), 16, True, 10)
    augmented = BatchAugment(AugmentConfig(**NO_CROP_NO_FLIP, **SINGLE_OPS[op]), 16, True, 10)
    base, base_targets = plain(x, y, norm)
    out, targets = augmented(x, y, norm)
    torch.testing.assert_close(base, norm(x))  # every op off: the input, normalised
    assert out.shape == base.shape and out.dtype == base.dtype
    assert torch.equal(targets, y) and torch.equal(base_targets, y)  # labels untouched
    assert not torch.allclose(out, base), f"{op} changed no pixel"


@pytest.mark.parametrize("mixing", [{"mixup": 0.4}, {"cutmix": 1.0}])
def test_mixing_turns_labels_into_soft_targets_that_sum_to_one(mixing):
    x, y = images(), torch.arange(32) % 10
    norm = Normalize([0.5] * 3, [0.25] * 3)
    out, targets = BatchAugment(AugmentConfig(**NO_CROP_NO_FLIP, **mixing), 16, True, 10)(x, y, norm)
    assert targets.shape == (32, 10)
    torch.testing.assert_close(targets.sum(1), torch.ones(32))
    own = targets[torch.arange(32), y]
    assert (own > 0).all() and (own < 1).any()  # each keeps a share of its label; some lose one
    assert not torch.allclose(out, norm(x))


@pytest.mark.parametrize("name", ["randaugment", "trivialaugment"])
def test_a_per_image_policy_changes_pixels_only(name):
    policy = per_image_policy(name)
    torch.manual_seed(0)
    x = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    outs = [policy(x) for _ in range(20)]
    assert all(o.shape == x.shape and o.dtype == torch.uint8 for o in outs)
    assert any(not torch.equal(o, x) for o in outs), f"{name} never changed the image"
    assert per_image_policy("none") is None
