"""Command-line values reach the library as typed, and flags a resume would ignore are refused."""

import pytest

from yingshe.cli import main


@pytest.mark.parametrize("name", ["0123", "2024-05-01", "my data #2", "yes"])
def test_flag_values_are_taken_literally_not_as_yaml(tmp_path, monkeypatch, capsys, name):
    """YAML would read these as 123, a date, 'my data' (a comment) and True: the error must name
    the value as typed, which it can only do if nothing parsed it on the way."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", name, "--out", "run"]) == 2  # neither a dataset nor a path
    assert f"{name!r}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resume_refuses_flags_it_would_ignore(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--lr", "0.1"]) == 2
    assert "--lr would be ignored" in capsys.readouterr().err
