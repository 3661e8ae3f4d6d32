"""Library plots never switch matplotlib's backend (a Jupyter inline backend must survive)."""

import matplotlib
import numpy as np
import pytest

from yingshe.transfer.features import draw_strip
from yingshe.tune.lr_find import draw


@pytest.fixture()
def svg_backend():
    previous = matplotlib.get_backend()
    matplotlib.use("svg")
    yield
    matplotlib.use(previous)


def test_lr_find_and_neighbour_strips_keep_the_callers_backend(svg_backend, tmp_path):
    lrs = [1e-4 * 10 ** (i / 10) for i in range(30)]
    draw(lrs, [2.0 - i / 30 for i in range(30)], 1e-3, tmp_path / "lr.png")
    hits = [{"path": str(tmp_path / "missing.png"), "label": "cat", "similarity": 0.9}]
    strip = draw_strip(tmp_path, tmp_path / "query.png", hits, np.zeros((8, 8, 3), np.uint8))
    assert matplotlib.get_backend() == "svg"
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG" and strip.read_bytes()[:4] == b"\x89PNG"
