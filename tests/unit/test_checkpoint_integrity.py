"""Checkpoint checksums, last.pt rotation, the resume fallback, RNG capture and mid-epoch skips."""

import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from yingshe.data.loader import DeviceBatches, EpochBatches, EpochShuffle
from yingshe.errors import YingsheError
from yingshe.integrity import payload_digest
from yingshe.runs import DamagedCheckpoint, RunDir, load_checkpoint, load_resume_checkpoint, save_checkpoint
from yingshe.schema import Checkpoint, CheckpointMeta, ModelRecord
from yingshe.train.checkpointing import capture_rng, check_every, checkpoint_due, restore_rng


def small_checkpoint(step: int) -> Checkpoint:
    meta = CheckpointMeta(ModelRecord("seed-cnn", 2, 1, 8, {}), ["a", "b"], 1, 8, [0.5], [0.25])
    weights = {"w": torch.full((3, 3), float(step)), "n": torch.tensor(step)}
    return Checkpoint(meta, weights, {"train": {}}, fit_state={"step": step}, rng=capture_rng())


def test_a_tensor_changed_after_writing_fails_the_checksum_by_name(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, small_checkpoint(3))
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["w"][1, 1] = 0.5  # one weight changed, the stored checksum kept
    torch.save(payload, path)
    with pytest.raises(DamagedCheckpoint, match="last.pt fails its sha256 checksum"):
        load_checkpoint(path)


def test_the_digest_sees_values_types_and_order():
    base = {"a": torch.zeros(2), "b": [1, 2.0, "x", None]}
    assert payload_digest(base) == payload_digest({"a": torch.zeros(2), "b": [1, 2.0, "x", None]})
    assert payload_digest(base) != payload_digest({"a": torch.zeros(2, dtype=torch.float64), "b": base["b"]})
    assert payload_digest(base) != payload_digest({"a": torch.zeros(2), "b": [1.0, 2.0, "x", None]})
    assert payload_digest(base) != payload_digest({"b": base["b"], "a": torch.zeros(2)})


def test_last_pt_keeps_its_previous_version(tmp_path):
    last = tmp_path / "last.pt"
    save_checkpoint(last, small_checkpoint(1), keep_previous=True)
    assert not (tmp_path / "last.prev.pt").exists()
    save_checkpoint(last, small_checkpoint(2), keep_previous=True)
    save_checkpoint(last, small_checkpoint(3), keep_previous=True)
    assert load_checkpoint(last).fit_state["step"] == 3
    assert load_checkpoint(tmp_path / "last.prev.pt").fit_state["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.pt"]


def test_resume_falls_back_to_the_previous_checkpoint_and_says_which_was_damaged(tmp_path):
    run = RunDir(tmp_path)
    save_checkpoint(run.last, small_checkpoint(1), keep_previous=True)
    save_checkpoint(run.last, small_checkpoint(2), keep_previous=True)
    run.last.write_bytes(run.last.read_bytes()[:-100])  # truncated
    (tmp_path / ".last.pt.abc.tmp").write_bytes(b"half a write")
    checkpoint, notes = load_resume_checkpoint(run)
    assert checkpoint.fit_state["step"] == 1
    assert len(notes) == 1 and notes[0].startswith("last.pt was damaged")
    assert (tmp_path / "last.damaged.pt").is_file() and not run.last.exists()
    assert not (tmp_path / ".last.pt.abc.tmp").exists()
    (tmp_path / "last.prev.pt").write_bytes(b"garbage")
    with pytest.raises(YingsheError, match="no usable checkpoint"):
        load_resume_checkpoint(run)


def test_a_run_without_checkpoints_resumes_from_nothing(tmp_path):
    assert load_resume_checkpoint(RunDir(tmp_path)) == (None, [])


def test_every_generator_continues_where_it_was_after_a_round_trip(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    np.random.normal()  # a cached Gaussian in NumPy's state too
    save_checkpoint(tmp_path / "last.pt", replace(small_checkpoint(0), rng=capture_rng()))
    expected = (random.random(), np.random.normal(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng(load_checkpoint(tmp_path / "last.pt").rng)
    got = (random.random(), np.random.normal(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_a_resumed_epoch_skips_its_first_batches_at_the_source():
    full = EpochBatches(EpochShuffle(50, seed=3), 8, merge_tail=True)
    full.sampler.set_epoch(2)
    tail = EpochBatches(EpochShuffle(50, seed=3), 8, merge_tail=True)
    tail.sampler.set_epoch(2)
    tail.skip = 4
    assert [b.tolist() for b in tail.batches()] == [b.tolist() for b in full.batches()][4:]


class Numbered:
    """A batch source without `skip_batches`: DeviceBatches reads and drops the skipped ones."""

    def set_epoch(self, epoch):
        pass

    def __len__(self):
        return 5

    def __iter__(self):
        from yingshe.data.batch import Batch

        for i in range(5):
            yield Batch(
                torch.full((1, 1, 2, 2), i, dtype=torch.uint8),
                torch.tensor([i]),
                torch.tensor([i]),
                torch.tensor([True]),
            )


def test_device_batches_skip_any_source_and_count_the_position():
    from yingshe.data.augment import Normalize

    batches = DeviceBatches(Numbered(), None, torch.device("cpu"), Normalize([0.0], [1.0]))
    batches.set_epoch(1, skip=3)
    assert [int(labels[0]) for _, _, labels in batches] == [3, 4]
    assert batches.position == 5


def test_checkpoint_every_is_checked_and_spares_the_epoch_end():
    with pytest.raises(YingsheError, match="checkpoint_every"):
        check_every(0)
    assert checkpoint_due(14, 7, batches=14, steps_per_epoch=20)
    assert not checkpoint_due(21, 7, batches=20, steps_per_epoch=20)  # the epoch's own checkpoint
    assert not checkpoint_due(14, None, batches=14, steps_per_epoch=20)
