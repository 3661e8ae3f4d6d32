"""Run-folder files: atomic writes, safe checkpoints, refusal of foreign files."""

import pickle
from dataclasses import replace

import pytest
import torch

from yingshe.errors import YingsheError
from yingshe.runs import (
    atomic_write_text,
    load_checkpoint,
    read_metrics_csv,
    save_checkpoint,
    write_metrics_csv,
)
from yingshe.schema import CHECKPOINT_VERSION, Checkpoint, CheckpointMeta, ModelRecord


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "report.md"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "config.yaml"
    atomic_write_text(target, "keep me")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "half")
    assert target.read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def small_checkpoint(**changes) -> Checkpoint:
    meta = CheckpointMeta(ModelRecord("seed-cnn", 2, 1, 8, {"widths": [4]}), ["a", "b"], 1, 8, [0.5], [0.25])
    return replace(Checkpoint(meta, {"w": torch.randn(3, 3)}, {"train": {"epochs": 1}}), **changes)


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    path = tmp_path / "best.pt"
    written = small_checkpoint()
    save_checkpoint(path, written)
    raw = torch.load(path, weights_only=True)  # loadable without trusting pickled code
    assert raw["format"] == "yingshe-checkpoint" and raw["version"] == CHECKPOINT_VERSION
    assert raw["classes"] == ["a", "b"]  # flat plain data on disk: other tools can read it
    loaded = load_checkpoint(path)
    torch.testing.assert_close(loaded.state_dict["w"], written.state_dict["w"])
    assert loaded.meta == written.meta
    assert loaded.meta.model.kwargs == {"widths": [4]} and loaded.train_config == {"epochs": 1}


def test_newer_or_versionless_or_incomplete_checkpoints_are_refused_with_a_fix(tmp_path):
    path = tmp_path / "last.pt"
    on_disk = small_checkpoint().to_dict()
    torch.save({**on_disk, "version": CHECKPOINT_VERSION + 1}, path)
    with pytest.raises(YingsheError, match="newer yingshe") as err:
        load_checkpoint(path)
    assert "upgrade" in err.value.fix
    torch.save({**on_disk, "version": None}, path)
    with pytest.raises(YingsheError, match="no valid checkpoint version"):
        load_checkpoint(path)
    torch.save({k: v for k, v in on_disk.items() if k != "classes"}, path)
    with pytest.raises(YingsheError, match="without its 'classes' field"):
        load_checkpoint(path)


class Payload:
    def __reduce__(self):
        return (print, ("this would run code",))


def test_foreign_and_hostile_files_are_refused_with_a_fix(tmp_path):
    hostile = tmp_path / "evil.pt"
    hostile.write_bytes(pickle.dumps({"model": Payload()}))
    with pytest.raises(YingsheError, match="not a loadable yingshe checkpoint"):
        load_checkpoint(hostile)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(YingsheError, match="not a yingshe checkpoint"):
        load_checkpoint(plain)
    with pytest.raises(YingsheError, match="holds no best.pt or last.pt"):
        load_checkpoint(tmp_path)
    with pytest.raises(YingsheError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_metrics_csv_round_trip(tmp_path):
    rows = [{"epoch": 1, "val_accuracy": 0.5}, {"epoch": 2, "val_accuracy": 0.75, "lr": 0.1}]
    write_metrics_csv(tmp_path / "metrics.csv", rows)
    back = read_metrics_csv(tmp_path / "metrics.csv")
    assert back[1] == {"epoch": 2.0, "val_accuracy": 0.75, "lr": 0.1}
    assert "lr" not in back[0]


def test_keeping_a_copy_twice_leaves_no_temporary_link(tmp_path):
    """A run killed after keeping last.prev.pt but before writing last.pt resumes with both names
    on one file; keeping the copy again must not leave its temporary link behind."""
    from yingshe.runs import keep_copy

    last, prev = tmp_path / "last.pt", tmp_path / "last.prev.pt"
    last.write_bytes(b"step 7")
    keep_copy(last, prev)
    keep_copy(last, prev)
    assert prev.read_bytes() == b"step 7"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.pt"]
