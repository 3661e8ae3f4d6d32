"""`yingshe cv --folds 3` end to end on a small slice of Fashion-MNIST: the fold runs, their
held-out folds (disjoint, covering the pool), and the mean ± std report."""

import json
from collections import Counter

import numpy as np
import pytest

from yingshe.config import RunConfig, load_config
from yingshe.data.dataset import build_dataset


def test_cv_reports_each_fold_and_mean_and_std(fashion_cv):
    cv_dir, printed = fashion_cv
    report = json.loads((cv_dir / "report.json").read_text())
    folds = report["folds"]
    assert [f["fold"] for f in folds] == [1, 2, 3]
    for key in ("accuracy", "f1_macro", "ece", "loss", "top5_accuracy"):
        values = np.array([f["validation"][key] for f in folds])
        assert report["mean"][key] == pytest.approx(values.mean())
        assert report["std"][key] == pytest.approx(values.std(ddof=1))
    assert all(f["num_val"] == 200 and f["num_train"] == 400 for f in folds), "600 images in 3 folds"
    assert report["mean"]["accuracy"] > 0.3, "two epochs on 400 images learn well above chance (10%)"
    md = (cv_dir / "report.md").read_text()
    assert "**mean ± std**" in md and md.count("](fold-") == 3 and "![curves.png](curves.png)" in md
    assert "± " in printed and "fold 3/3" in printed
    for fold in (1, 2, 3):
        run = cv_dir / f"fold-{fold}"
        for name in ("best.pt", "config.yaml", "metrics.csv", "report.json", "report.md"):
            assert (run / name).is_file(), (fold, name)
        assert not (run / "confusion_matrix.png").exists(), "the train.plots=false override reached the folds"
        saved = json.loads((run / "report.json").read_text())
        assert saved["validation"]["accuracy"] == folds[fold - 1]["validation"]["accuracy"]


def images_of(split) -> Counter:
    """A split as a multiset of (image bytes, label): identity that survives re-reading the data."""
    return Counter((img.tobytes(), int(y)) for img, y in zip(split.images, split.labels, strict=True))


def test_held_out_folds_are_disjoint_and_cover_the_pool(fashion_cv):
    cv_dir, _ = fashion_cv
    pool, held = None, []
    for fold in (1, 2, 3):
        cfg: RunConfig = load_config(cv_dir / f"fold-{fold}" / "config.yaml")
        assert (cfg.data.cv_folds, cfg.data.cv_fold) == (3, fold), (
            "each fold run is reproducible from its config"
        )
        data = build_dataset(cfg.data, cfg.train.seed)
        train, val = images_of(data.train), images_of(data.val)
        assert not train & val, "no image is trained on and held out in the same fold"
        pool = pool or train + val
        assert train + val == pool, "every fold cuts the same pool"
        held.append(val)
    assert held[0] + held[1] + held[2] == pool, "the held-out folds are disjoint and cover the pool"
    assert all(sum(h.values()) == 200 for h in held)
