"""`tune --out`: never a run folder, an earlier study folder is reused, one study per folder."""

import pytest

from yingshe.config import RunConfig
from yingshe.errors import YingsheError
from yingshe.tune.tuner import check_study_folder, claim_study_name, tune


def test_tune_refuses_a_run_folder_before_writing(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"checkpoint")
    with pytest.raises(YingsheError, match="run folder"):
        tune(RunConfig(), {"lr": [0.1]}, out=run, trials=1)
    assert sorted(p.name for p in run.iterdir()) == ["last.pt"]


def test_an_earlier_study_folder_is_reused_other_files_are_not(tmp_path):
    (tmp_path / "base.yaml").write_text("{}")
    (tmp_path / "trials.csv").write_text("number\n")
    check_study_folder(tmp_path)  # an earlier study: fine
    other = tmp_path / "other"
    other.mkdir()
    (other / "trials.csv").write_text("mine\n")
    with pytest.raises(YingsheError, match="trials.csv"):
        check_study_folder(other)


def test_a_second_study_name_in_one_folder_is_refused(tmp_path):
    claim_study_name(tmp_path, "first")
    claim_study_name(tmp_path, "first")  # the same study again: fine
    with pytest.raises(YingsheError, match="holds study 'first'"):
        claim_study_name(tmp_path, "second")
