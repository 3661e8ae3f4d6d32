"""The feature space: penultimate features of a run's images (`forward_head(..., pre_logits=True)`),
nearest neighbours by cosine similarity, 2-D maps, and k-NN accuracy as a backbone quality figure.

A feature file is FEATURES.npy (N, D) float32, L2-normalised rows, plus FEATURES.json: the run, the
classes, and per row the image's path (or name) and label. Search is exact (one matrix product in
torch) up to `FAISS_ABOVE` rows and a faiss inner-product index above (see docs/benchmarks.md for
where they cross).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from yingshe.errors import YingsheError, require
from yingshe.runs import atomic_file, atomic_write_json

FAISS_ABOVE = 1_000_000  # rows: torch exact search won every size measured (docs/benchmarks.md); above
# this the (queries × rows) score matrix grows large and faiss's flat index streams it instead


@dataclass
class FeatureIndex:
    vectors: np.ndarray  # (N, D) float32, unit rows
    labels: np.ndarray  # (N,) int64
    paths: list[str]
    classes: list[str]
    meta: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> FeatureIndex:
        npy, index = feature_paths(path)
        if not npy.is_file() or not index.is_file():
            raise YingsheError(
                f"feature file {npy} (with {index.name}) does not exist", "write it with `yingshe embed`"
            )
        meta = json.loads(index.read_text())
        vectors = np.load(npy)
        if len(vectors) != len(meta["items"]):
            raise YingsheError(
                f"{npy} has {len(vectors)} rows but {index.name} lists {len(meta['items'])}", "embed again"
            )
        labels = np.array([item["label"] for item in meta["items"]], dtype=np.int64)
        return cls(vectors, labels, [item["path"] for item in meta["items"]], meta["classes"], meta)


def feature_paths(path: str | Path) -> tuple[Path, Path]:
    base = Path(path)
    if base.suffix in (".npy", ".json"):
        base = base.with_suffix("")
    return base.with_suffix(".npy"), base.with_suffix(".json")


@torch.no_grad()
def embed_batches(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Unit-length penultimate features of a normalised batch."""
    pooled = model.forward_head(model.forward_features(inputs), pre_logits=True)
    return F.normalize(pooled.float().flatten(1), dim=1)


def embed(
    run: str | Path,
    data: str | None = None,
    split: str = "test",
    out: str | Path = "features",
    batch_size: int = 128,
    limit: int | None = None,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write the features of one split of `data` (default: the run's own data) under `out`."""
    from yingshe.config import RunConfig
    from yingshe.data.augment import Normalize
    from yingshe.data.crop import checkpoint_crop_pct
    from yingshe.data.dataset import build_dataset, stage_rng
    from yingshe.data.images import centre_crop
    from yingshe.data.loader import make_batches
    from yingshe.data.splits import stratified_subset
    from yingshe.inference import model_from_checkpoint
    from yingshe.runs import load_checkpoint
    from yingshe.runtime import resolve_device

    checkpoint = load_checkpoint(run)
    meta_in = checkpoint.meta
    cfg = RunConfig.from_dict(checkpoint.config)
    size, channels = meta_in.image_size, meta_in.channels
    side = meta_in.resize or size  # decoded at the side evaluation uses, then centre-cropped
    cfg.data.crop_pct = checkpoint_crop_pct(size, meta_in.resize)
    if data is None or data == cfg.data.spec:
        dataset = build_dataset(cfg.data, cfg.train.seed, stats=(meta_in.mean, meta_in.std))
        chosen = {"test": dataset.test, "val": dataset.val, "train": dataset.train}.get(split)
        classes = list(dataset.classes)
    else:
        from yingshe.api import other_data_split

        chosen, classes, _, _ = other_data_split(data, split, cfg.data, side, channels)
    if chosen is None:
        raise YingsheError(f"split {split!r} is not available", "use test, val or train")
    if limit:
        chosen = chosen.subset(stratified_subset(chosen.labels, limit, stage_rng(cfg.train.seed, "embed")))
    torch_device = resolve_device(device)
    model = model_from_checkpoint(checkpoint).to(torch_device).eval()
    normalize = Normalize(meta_in.mean, meta_in.std).to(torch_device)
    batches = make_batches(chosen, side, channels, batch_size, train=False, workers=cfg.data.workers)
    vectors, items, done = [], [], 0
    for batch in batches:
        keep = batch.ok
        images = centre_crop(batch.images[keep], size).to(torch_device)
        if len(images):
            vectors.append(embed_batches(model, normalize(images)).cpu().numpy())
        for index, label in zip(batch.index[keep].tolist(), batch.labels[keep].tolist(), strict=True):
            items.append({"path": chosen.name(index), "label": int(label)})
        done += len(batch.index)
        if progress:
            progress(done, len(chosen))
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)
    npy, index = feature_paths(out)
    npy.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(npy) as handle:
        np.save(handle, matrix.astype(np.float32))
    meta = {
        "run": str(run),
        "model": meta_in.model.name,
        "data": data or cfg.data.spec,
        "split": split,
        "dim": int(matrix.shape[1]) if matrix.size else 0,
        "classes": classes,
        "items": items,
    }
    atomic_write_json(index, meta)
    return {"features": str(npy), "index": str(index), "count": len(items), "dim": meta["dim"]}


def search(
    index: np.ndarray, queries: np.ndarray, k: int, exact_limit: int = FAISS_ABOVE
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine similarities and row numbers of unit `queries` among unit `index` rows."""
    k = min(k, len(index))
    if len(index) > exact_limit:
        faiss = require("faiss", "transfer", f"searching more than {exact_limit} features")
        flat = faiss.IndexFlatIP(index.shape[1])
        flat.add(np.ascontiguousarray(index, dtype=np.float32))
        scores, rows = flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, rows
    scores = torch.from_numpy(queries) @ torch.from_numpy(index).T
    top = scores.topk(k, dim=1)
    return top.values.numpy(), top.indices.numpy()


def neighbors(
    run: str | Path,
    index_path: str | Path,
    images: list[str | Path],
    k: int = 5,
    out: str | Path | None = None,
) -> list[dict[str, Any]]:
    """The k nearest indexed images of each query image, and a PNG strip per query under `out`."""
    from yingshe.inference import Classifier, expand_paths

    index = FeatureIndex.load(index_path)
    clf = Classifier.load(run, device="cpu")
    paths = expand_paths(images)
    arrays = np.stack([clf.preprocess(p) for p in paths])
    x = torch.from_numpy(arrays).permute(0, 3, 1, 2).to(clf.device)
    queries = embed_batches(clf.model.eval(), clf.normalize(x)).cpu().numpy()
    if queries.shape[1] != index.vectors.shape[1]:
        raise YingsheError(
            f"the run's features have {queries.shape[1]} dimensions "
            f"but {index_path} has {index.vectors.shape[1]}",
            "search an index embedded with the same run",
        )
    scores, rows = search(index.vectors, queries, k)
    results = []
    for i, path in enumerate(paths):
        hits = [
            {"path": index.paths[r], "label": index.classes[index.labels[r]], "similarity": float(s)}
            for s, r in zip(scores[i], rows[i], strict=True)
        ]
        entry = {"query": str(path), "neighbors": hits}
        if out is not None:
            entry["strip"] = str(draw_strip(Path(out), path, hits, arrays[i]))
        results.append(entry)
    return results


def draw_strip(folder: Path, query: Path, hits: list[dict[str, Any]], query_array: np.ndarray) -> Path:
    """query | neighbour 1 … k, each titled (class, cosine similarity)."""
    from PIL import Image

    from yingshe.evaluate.plots import new_figure, save

    folder.mkdir(parents=True, exist_ok=True)
    fig = new_figure(1.8 * (len(hits) + 1), 2.2)  # no pyplot: the caller's backend is left alone
    axes = fig.subplots(1, len(hits) + 1)
    panels = [(query_array, f"query\n{query.name[:18]}")]
    for hit in hits:
        try:
            image = np.asarray(Image.open(hit["path"]).convert("RGB"))
        except (OSError, ValueError):
            image = np.zeros_like(query_array)
        panels.append((image, f"{hit['label']}\n{hit['similarity']:.3f}"))
    for ax, (image, title) in zip(np.atleast_1d(axes), panels, strict=True):
        ax.imshow(image.squeeze(), cmap="gray" if image.ndim == 2 or image.shape[-1] == 1 else None)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    return save(fig, folder / f"{query.stem}-neighbors.png")


def project(
    features: str | Path, method: str = "pca", out: str | Path = "map.png", seed: int = 0
) -> dict[str, Any]:
    """A 2-D map of the features coloured by class: PCA, t-SNE (sklearn) or UMAP (umap-learn)."""
    index = FeatureIndex.load(features)
    x = index.vectors
    if len(x) < 3:
        raise YingsheError(f"{features} has {len(x)} rows; a map needs at least 3", "embed more images")
    if method == "pca":
        from sklearn.decomposition import PCA

        points = PCA(2, random_state=seed).fit_transform(x)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        points = TSNE(2, perplexity=min(30.0, (len(x) - 1) / 3), random_state=seed, init="pca").fit_transform(
            x
        )
    elif method == "umap":
        umap = require("umap", "umap", "--method umap")
        points = umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
    else:
        raise YingsheError(f"unknown projection {method!r}", "use pca, tsne or umap")
    import matplotlib

    from yingshe.evaluate.plots import new_figure, save

    fig = new_figure(7, 6)  # no pyplot: the caller's backend is left alone
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["tab10" if len(index.classes) <= 10 else "tab20"]
    for c, name in enumerate(index.classes):
        mask = index.labels == c
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], s=8, color=cmap(c % cmap.N), label=name)
    ax.set_title(f"{index.meta.get('model', '')} features, {method.upper()} ({len(x)} images)")
    ax.legend(fontsize=7, markerscale=2, loc="best")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save(fig, out)
    return {"out": str(out), "method": method, "count": len(x)}


def knn_accuracy(train: FeatureIndex, test: FeatureIndex, k: int = 5) -> float:
    """Accuracy of a cosine k-NN vote (similarity-weighted) of the train features on the test ones."""
    if train.classes != test.classes:
        raise YingsheError("the two feature files list different classes", "embed both splits of one dataset")
    scores, rows = search(train.vectors, test.vectors, k)
    votes = np.zeros((len(test.vectors), len(train.classes)))
    for j in range(rows.shape[1]):
        np.add.at(votes, (np.arange(len(rows)), train.labels[rows[:, j]]), np.maximum(scores[:, j], 0) + 1e-6)
    return float((votes.argmax(1) == test.labels).mean())


def knn(
    run: str | Path,
    data: str | None = None,
    k: int = 5,
    out: str | Path | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Embed the train and test splits, then the k-NN accuracy of test on train."""
    folder = Path(out) if out else Path(run) / "knn"
    parts = {}
    for split in ("train", "test"):
        embed(run, data, split, folder / f"{split}-features", limit=limit, progress=progress)
        parts[split] = FeatureIndex.load(folder / f"{split}-features")
    accuracy = knn_accuracy(parts["train"], parts["test"], k)
    return {
        "knn_accuracy": accuracy,
        "k": k,
        "train": len(parts["train"].labels),
        "test": len(parts["test"].labels),
    }
