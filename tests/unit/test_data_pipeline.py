"""The pieces of the large-data pipeline, on small synthetic inputs."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from yingshe.data.augment import random_crop
from yingshe.data.decode import jpeg_frame
from yingshe.data.shards import PackedImages, ShardFiles
from yingshe.data.stream import ShuffleBuffer, batch_bounds, regroup
from yingshe.data.webdataset import sample_key, sniff_ext


def arrays(start: int, n: int) -> tuple[np.ndarray, ...]:
    index = np.arange(start, start + n)
    return np.repeat(index[:, None], 4, axis=1).astype(np.uint8), index % 10, index, np.ones(n, dtype=bool)


def test_shuffle_buffer_emits_every_item_once_in_a_mixed_order(rng):
    buffer = ShuffleBuffer(100, rng)
    out = [part for start in range(0, 1000, 64) for part in buffer.push(arrays(start, min(64, 1000 - start)))]
    out += list(buffer.flush())
    index = np.concatenate([part[2] for part in out])
    assert sorted(index.tolist()) == list(range(1000))
    assert not np.array_equal(index, np.arange(1000))
    for images, labels, idx, _ in out:  # fields stay aligned through the buffer
        assert np.array_equal(images[:, 0], idx.astype(np.uint8)) and np.array_equal(labels, idx % 10)
    assert np.abs(index - np.arange(1000)).max() < 400  # a bounded buffer only mixes nearby items


def test_shuffle_buffer_of_zero_passes_through(rng):
    buffer = ShuffleBuffer(0, rng)
    parts = [p for start in (0, 10) for p in buffer.push(arrays(start, 10))] + list(buffer.flush())
    assert np.array_equal(np.concatenate([p[2] for p in parts]), np.arange(20))


def test_regroup_cuts_exact_sizes_and_passes_whole_parts_through():
    parts = [arrays(0, 8), arrays(8, 3), arrays(11, 5), arrays(16, 8)]
    groups = list(regroup(iter(parts), [8, 8, 8]))
    assert [len(g[2]) for g in groups] == [8, 8, 8]
    assert groups[0][0] is parts[0][0]  # no copy when a part already has the size
    assert np.array_equal(np.concatenate([g[2] for g in groups]), np.arange(24))
    assert [len(g[2]) for g in regroup(iter(parts), [5, 5])] == [5, 5]  # the rest is dropped


@pytest.mark.parametrize(
    ("n", "size", "merge", "expected"),
    [
        (10, 4, False, [(0, 4), (4, 8), (8, 10)]),
        (9, 4, True, [(0, 4), (4, 9)]),
        (11, 4, True, [(0, 4), (4, 8), (8, 11)]),
    ],
)
def test_batch_bounds(n, size, merge, expected):
    assert batch_bounds(n, size, merge) == expected


def jpeg(width: int, height: int, mode: str = "RGB", **options) -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), 128).save(out, format="JPEG", **options)
    return out.getvalue()


def test_jpeg_frame_reads_the_header_of_every_jpeg_kind():
    assert jpeg_frame(jpeg(40, 30)) == (40, 30, 3)
    assert jpeg_frame(jpeg(17, 9, "L")) == (17, 9, 1)
    assert jpeg_frame(jpeg(33, 20, "CMYK")) == (33, 20, 4)
    assert jpeg_frame(jpeg(64, 48, progressive=True)) == (64, 48, 3)
    assert jpeg_frame(b"\x89PNG\r\n\x1a\n") is None and jpeg_frame(b"") is None
    assert jpeg_frame(jpeg(40, 30)[:20]) is None  # cut before the frame header


def test_random_crop_with_flip_is_a_window_of_the_padded_image_or_its_mirror():
    torch.manual_seed(0)
    x, pad = torch.randint(0, 256, (64, 3, 10, 10), dtype=torch.uint8), 2
    out = random_crop(
        x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2), pad, flip=True
    )  # channels-last in
    padded = F.pad(x, (pad,) * 4)
    mirrored = 0
    for i in range(len(x)):
        windows = [padded[i, :, dy : dy + 10, dx : dx + 10] for dy in range(5) for dx in range(5)]
        plain = any(torch.equal(out[i], w) for w in windows)
        flipped = any(torch.equal(out[i], w.flip(-1)) for w in windows)
        assert plain or flipped
        mirrored += flipped and not plain
    assert 16 < mirrored < 48


def test_packed_positions_map_back_to_source_files_around_skipped_ones(tmp_path):
    images = np.arange(6 * 2 * 2 * 1, dtype=np.uint8).reshape(6, 2, 2, 1)
    shards = []
    for k, (a, b) in enumerate(((0, 4), (4, 6))):
        np.save(tmp_path / f"i{k}.npy", images[a:b])
        np.save(tmp_path / f"l{k}.npy", np.arange(a, b, dtype=np.int64))
        shards.append(ShardFiles(str(tmp_path / f"i{k}.npy"), str(tmp_path / f"l{k}.npy"), b - a))
    packed = PackedImages(shards, (2, 2, 1), "src", skipped=np.array([1, 2, 6]))
    assert [packed.name(i) for i in range(6)] == ["src#0", "src#3", "src#4", "src#5", "src#7", "src#8"]
    view = packed.subset(np.array([5, 0, 3]))
    assert np.array_equal(view.take(np.arange(3)), images[[5, 0, 3]])  # any order, across shards
    assert view.name(0) == "src#8"
    mean, std = packed.pixel_stats(np.arange(6))
    assert mean[0] == pytest.approx(images.mean() / 255) and std[0] == pytest.approx(images.std() / 255)


def test_webdataset_keys_and_image_types():
    assert sample_key("a/b/000123.seg.png") == ("a/b/000123", "seg.png")
    assert sample_key("x.CLS") == ("x", "cls")
    assert sniff_ext(jpeg(4, 4)) == "jpg"
    png = io.BytesIO()
    Image.new("L", (4, 4)).save(png, format="PNG")
    assert sniff_ext(png.getvalue()) == "png" and sniff_ext(b"hello") is None
