"""A missing optional package ends in a YingsheError naming the extra, not an import traceback."""

import sys

import numpy as np
import pytest

from yingshe.errors import YingsheError, require


def test_require_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # what an uninstalled package looks like to import
    with pytest.raises(YingsheError, match=r"ONNX export needs the onnx package") as err:
        require("onnx", "deploy", "ONNX export")
    assert err.value.fix == "pip install 'yingshe[deploy]'"
    assert require("json", "deploy").dumps(1) == "1"


def test_onnx_metadata_without_onnx(monkeypatch):
    from yingshe.export.onnx import with_metadata

    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(YingsheError, match=r"yingshe\[deploy\]"):
        with_metadata(b"", {})


def test_serve_without_uvicorn(monkeypatch):
    from yingshe.serve import serve
    from yingshe.serve.config import ServeConfig

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(YingsheError, match=r"yingshe serve needs the uvicorn package"):
        serve(ServeConfig(model="missing-run"))


def test_large_neighbour_search_without_faiss(monkeypatch):
    from yingshe.transfer.features import search

    index = np.eye(4, dtype=np.float32)
    monkeypatch.setitem(sys.modules, "faiss", None)
    assert search(index, index[:1], k=1)[1].tolist() == [[0]]  # small: exact, no faiss needed
    with pytest.raises(YingsheError, match=r"yingshe\[transfer\]"):
        search(index, index[:1], k=1, exact_limit=2)
