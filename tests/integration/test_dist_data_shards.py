"""WebDataset shard lists for many machines: brace ranges, globs and URLs (http on 127.0.0.1,
file://), each (rank, worker) reading its own part, together every sample exactly once."""

from __future__ import annotations

import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from yingshe.config import DataConfig
from yingshe.data.dataset import read_spec
from yingshe.data.remote import expand_braces, is_shard_list, shard_list
from yingshe.data.sources import read_folder
from yingshe.data.stream import ShardStream, StreamBatches
from yingshe.data.webdataset import write_webdataset
from yingshe.errors import YingsheError


class RangeHandler(SimpleHTTPRequestHandler):
    """http.server plus HTTP range requests (what object stores and static web servers answer);
    records every request so a test can see who fetched what."""

    requests: list[tuple[str, str | None]]

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = Path(self.directory) / unquote(self.path.split("?")[0]).lstrip("/")
        rng = self.headers.get("Range")
        self.requests.append((self.path, rng))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        match = re.match(r"bytes=(\d+)-(\d*)", rng or "")
        if match:
            a = int(match[1])
            b = min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
            part = data[a : b + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
        else:
            part = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if body:
            self.wfile.write(part)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def wds_dir(tmp_path_factory, cifar_folder) -> Path:
    """WebDataset tars of 400 train and 200 test real CIFAR JPEGs, 50 samples a shard (8 + 4 shards)."""
    out = tmp_path_factory.mktemp("wds") / "shards"
    write_webdataset(read_folder(cifar_folder), out, maxcount=50)
    return out


@pytest.fixture(scope="module")
def server(wds_dir):
    handler = type("Handler", (RangeHandler,), {"requests": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(wds_dir)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.requests
    httpd.shutdown()
    httpd.server_close()


def test_brace_expansion():
    assert expand_braces("train-{000000..000002}.tar") == [f"train-00000{i}.tar" for i in range(3)]
    assert expand_braces("{8..10}") == ["8", "9", "10"]
    assert expand_braces("{08..10}") == ["08", "09", "10"]
    assert expand_braces("{3..1}") == ["3", "2", "1"]
    assert expand_braces("{a,b}-{0..1}") == ["a-0", "a-1", "b-0", "b-1"]
    assert expand_braces("x{a,b{1..2}}y") == ["xay", "xb1y", "xb2y"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    assert expand_braces("{abc}.tar") == ["{abc}.tar"]
    for bad in ("a{1..2", "a}1{", "{{1..2}"):
        with pytest.raises(YingsheError, match="unbalanced braces"):
            expand_braces(bad)


def test_shard_list_local_patterns(wds_dir):
    names = sorted(p.name for p in wds_dir.glob("*.tar"))
    assert shard_list(f"{wds_dir}/train-{{000000..000007}}.tar") == [
        f"{wds_dir}/train-{i:06d}.tar" for i in range(8)
    ]
    assert [Path(p).name for p in shard_list(f"{wds_dir}/*.tar")] == names
    files = shard_list(f"file://{wds_dir}/*.tar")
    assert [f.rsplit("/", 1)[1] for f in files] == names and all(f.startswith("file:///") for f in files)
    assert is_shard_list(f"{wds_dir}/train-{{000000..000001}}.tar") and not is_shard_list(str(wds_dir))
    with pytest.raises(YingsheError, match="no shard matches"):
        shard_list(f"{wds_dir}/nothing-*.tar")


def _keys_labels(data) -> dict[str, tuple[list[str], list[int]]]:
    return {name: (split.files.keys, split.labels.tolist()) for name, split in data.splits.items()}


def test_http_and_file_urls_read_like_the_folder(wds_dir, server):
    base, _ = server
    local = read_spec(DataConfig(spec=str(wds_dir)))
    spec = f"{base}/{{train-{{000000..000007}},test-{{000000..000003}}}}.tar"  # nested groups
    http = read_spec(DataConfig(spec=spec))
    assert http.classes == local.classes  # classes.txt fetched from beside the first shard
    assert _keys_labels(http) == _keys_labels(local)
    train = http.splits["train"]
    for i in (0, 57, 399):  # the same encoded bytes, read by range request
        assert train.files.read(i) == local.splits["train"].files.read(i)
    files = read_spec(DataConfig(spec=f"file://{wds_dir}/{{train,test}}-*.tar"))
    assert _keys_labels(files) == _keys_labels(local)


def test_two_ranks_two_workers_cover_every_sample_once(server):
    base, requests = server
    data = read_spec(DataConfig(spec=f"{base}/train-{{000000..000007}}.tar"))
    train = data.splits["train"]
    assert len(train) == 400
    seen: list[np.ndarray] = []
    requests.clear()
    for rank in range(2):
        stream = ShardStream(train, 24, 3, 32, shuffle=True, seed=3, rank=rank, world=2, buffer_images=64)
        loader = StreamBatches(stream, workers=2, merge_tail=False, train=False)
        got = [b for b in loader]
        assert (
            sum(len(b.labels) for b in got)
            == stream.slot_counts(4)[2 * rank] + stream.slot_counts(4)[2 * rank + 1]
        )
        for b in got:
            assert b.ok.all() and b.images.shape[1:] == (3, 24, 24)
            assert b.labels.tolist() == train.labels[b.index.numpy()].tolist()
        seen.append(np.concatenate([b.index.numpy() for b in got]))
    both = np.concatenate(seen)
    assert sorted(both.tolist()) == list(range(400))  # every sample once: no overlap, none missing
    assert not set(seen[0]) & set(seen[1])
    # each shard is fetched in ranges by the slots that own its samples, not downloaded whole by all
    ranged = [r for r in requests if r[1] is not None]
    assert ranged and all(r[0].startswith("/train-") for r in ranged)


def test_training_reads_an_http_shard_list(tmp_path, server):
    """`yingshe train --data 'http://…/{train-…,test-…}.tar' data.stream=true` end to end."""
    import yingshe
    from yingshe.config import RunConfig, apply_overrides

    base, requests = server
    cfg = RunConfig()
    apply_overrides(
        cfg,
        [
            f"data.spec={base}/{{train-{{000000..000007}},test-{{000000..000003}}}}.tar",
            "data.stream=true",
            "data.workers=1",
            "data.image_size=16",
            "data.limit_train=120",
            "data.limit_test=60",
            "train.plots=false",
            "train.epochs=1",
            "train.max_steps=3",
            "train.batch_size=32",
            "train.device=cpu",
            "model.kwargs={widths: [8, 16, 32, 64]}",
            f"train.out={tmp_path / 'run'}",
        ],
    )
    requests.clear()
    yingshe.train(cfg)
    assert (tmp_path / "run" / "last.pt").is_file() and (tmp_path / "run" / "report.json").is_file()
    assert any(r[1] for r in requests)  # images came over HTTP by range request


def test_a_server_without_range_requests_and_an_unreachable_one(wds_dir):
    """`python -m http.server` ignores Range: reads are still right (whole shard, then sliced);
    a dead server is an error naming the shard."""
    quiet = type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(quiet, directory=str(wds_dir)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        data = read_spec(DataConfig(spec=f"{base}/train-{{000000..000001}}.tar"))
        local = read_spec(DataConfig(spec=f"{wds_dir}/train-{{000000..000001}}.tar"))
        assert _keys_labels(data) == _keys_labels(local)
        files = data.splits["train"].files
        assert files.read(63) == local.splits["train"].files.read(63)
        assert files.read_range(45, 55) == local.splits["train"].files.read_range(45, 55)
    finally:
        httpd.shutdown()
        httpd.server_close()
    with pytest.raises(YingsheError, match=r"train-000000\.tar"):
        read_spec(DataConfig(spec=f"{base}/train-{{000000..000001}}.tar"))
