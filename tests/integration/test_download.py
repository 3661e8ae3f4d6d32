"""Named datasets: local folders first, Debian's install path next, then a checked download —
served here by a real HTTP server on 127.0.0.1 with the real Fashion-MNIST files."""

import functools
import http.server
import shutil
import threading

import numpy as np
import pytest

from yingshe.data import registry
from yingshe.data.registry import load_named
from yingshe.errors import YingsheError


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):
        CountingHandler.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture()
def mirror(tmp_path, fashion_dir, monkeypatch):
    """A local server over a copy of the real files; YINGSHE_MIRROR points yingshe at it."""
    served = tmp_path / "served"
    shutil.copytree(fashion_dir, served)
    handler = functools.partial(CountingHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    CountingHandler.requests = []
    monkeypatch.setenv("YINGSHE_MIRROR", f"http://127.0.0.1:{server.server_port}/")
    monkeypatch.setattr(registry, "DEBIAN_DATASETS", tmp_path / "no-debian")
    yield served
    server.shutdown()
    server.server_close()


def test_download_verifies_and_is_not_repeated(mirror, tmp_path):
    data_dir = tmp_path / "data"
    data = load_named("fashion-mnist", str(data_dir))
    assert len(data.splits["train"]) == 60000 and data.classes[0] == "T-shirt/top"
    assert len(CountingHandler.requests) == 4
    assert sorted(p.name for p in (data_dir / "fashion-mnist").iterdir()) == sorted(
        registry.DATASETS.get("fashion-mnist").files
    )
    load_named("fashion-mnist", str(data_dir))
    assert len(CountingHandler.requests) == 4, "a verified local copy must not be fetched again"


def test_a_tampered_file_is_rejected_and_not_kept(mirror, tmp_path):
    labels = mirror / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-10] + b"0123456789")
    data_dir = tmp_path / "data"
    with pytest.raises(YingsheError, match="expected 0ae29f65"):
        load_named("fashion-mnist", str(data_dir))
    folder = data_dir / "fashion-mnist"
    assert not (folder / "train-labels-idx1-ubyte.gz").exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".part")]


def test_offline_error_says_where_to_put_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("YINGSHE_MIRROR", "http://127.0.0.1:9/")  # nothing listens on port 9
    monkeypatch.setattr(registry, "DEBIAN_DATASETS", tmp_path / "no-debian")
    with pytest.raises(YingsheError) as err:
        load_named("mnist", str(tmp_path / "data"))
    assert "could not download" in err.value.problem
    assert str(tmp_path / "data" / "mnist") in err.value.fix
    with pytest.raises(YingsheError, match="was not found") as err:
        load_named("mnist", str(tmp_path / "data"), allow_download=False)
    assert "YINGSHE_DATA" in err.value.fix


def test_debian_package_location_is_used(tmp_path, fashion_dir, monkeypatch):
    debian = tmp_path / "usr-share-datasets"
    (debian / "fashion-mnist").mkdir(parents=True)
    for f in fashion_dir.iterdir():
        (debian / "fashion-mnist" / f.name).symlink_to(f)
    monkeypatch.setattr(registry, "DEBIAN_DATASETS", debian)
    monkeypatch.setenv("YINGSHE_MIRROR", "http://127.0.0.1:9/")
    data = load_named("fashion-mnist", str(tmp_path / "empty"), allow_download=False)
    assert np.bincount(data.splits["test"].labels).tolist() == [1000] * 10


def test_yingshe_data_environment_variable(datasets_dir, monkeypatch):
    monkeypatch.setenv("YINGSHE_DATA", str(datasets_dir))
    monkeypatch.setenv("YINGSHE_MIRROR", "http://127.0.0.1:9/")
    assert len(load_named("fashion-mnist", None, allow_download=False).splits["train"]) == 60000
