"""What prediction does with paths that are not readable image files: the same refusals as
training's reader (regular files only, bounded reads), so a FIFO or a device never hangs predict
or serve, and the message names the path."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from yingshe.data.images import UnreadableImage
from yingshe.inference import ImageClassifier


def classifier(size: int = 16, channels: int = 3) -> ImageClassifier:
    clf = ImageClassifier.__new__(ImageClassifier)  # preprocess needs only the input geometry
    clf.image_size, clf.channels, clf.classes = size, channels, ["a", "b"]
    return clf


def preprocess_within(clf: ImageClassifier, path: Path, seconds: float = 10.0) -> BaseException | None:
    """Run preprocess on a thread; fail the test if it is still blocked after `seconds`."""
    outcome: list[BaseException | None] = []

    def work() -> None:
        try:
            clf.preprocess(path)
            outcome.append(None)
        except BaseException as err:  # handed back to the test
            outcome.append(err)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"preprocess({path}) still blocked after {seconds} s"
    return outcome[0]


def test_a_fifo_is_refused_by_name_without_blocking(tmp_path: Path):
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    err = preprocess_within(classifier(), fifo)
    assert isinstance(err, UnreadableImage)
    assert "photo.png" in str(err) and "not a regular file" in str(err)


def test_a_character_device_is_refused(tmp_path: Path):
    err = preprocess_within(classifier(), Path("/dev/zero"))
    assert isinstance(err, UnreadableImage) and "/dev/zero" in str(err)


def test_a_real_jpeg_path_still_decodes(cifar_members, tmp_path: Path):
    photo = tmp_path / "ship.jpg"
    photo.write_bytes(cifar_members["test"]["ship"][0])
    array = classifier(size=24).preprocess(photo)
    assert array.shape == (24, 24, 3) and array.dtype.name == "uint8" and array.std() > 0


@pytest.mark.parametrize("name", [b"caf\xe9.png"])
def test_an_undecodable_name_is_printable_in_the_message(tmp_path: Path, name: bytes):
    path = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), name)))
    path.write_bytes(b"not an image")
    err = preprocess_within(classifier(), path)
    assert isinstance(err, UnreadableImage)
    str(err).encode("utf-8")  # writable to a UTF-8 report or terminal
    assert "caf\\xe9.png" in str(err)
