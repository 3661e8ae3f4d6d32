"""Export a trained run to ONNX or TorchScript, proven to answer like PyTorch before it is written.

`yingshe.export(run, "onnx")` and `yingshe export RUN --format onnx` both land in `export_model`.
`yingshe.export` is this package and also callable, forwarding calls to `export_model` (see
yingshe/_callable.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yingshe._callable import make_callable

if TYPE_CHECKING:
    from yingshe.inference import Classifier

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


@dataclass
class ExportResult:
    path: Path  # the model file
    metadata_path: Path  # <path>.json beside it
    metadata: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] | None = None  # None when the check was turned off


def default_path(run: Path, fmt: str) -> Path:
    folder = run if run.is_dir() else run.parent
    return folder / ("model.onnx" if fmt == "onnx" else "model.torchscript.pt")


def export_model(
    run: str | Path,
    format: str = "onnx",
    out: str | Path | None = None,
    dynamic_batch: bool = False,
    opset: int | None = None,
    parity_images: int | None = None,
    tolerance: float | None = None,
    exporter: str = "auto",
) -> ExportResult:
    """Export `run` (a run folder or checkpoint) and return where it went and the parity figures.

    The model and `<file>.json` appear only after parity passed on `parity_images` real test images
    (default 64; 0 skips the check); on a failure nothing is written and YingsheError says why.
    """
    import torch

    from yingshe.errors import YingsheError, close_matches
    from yingshe.export import parity as par
    from yingshe.export.graph import DeployModule
    from yingshe.inference import Classifier
    from yingshe.runs import atomic_write_bytes, atomic_write_json, checkpoint_in

    if format not in FORMATS:
        raise YingsheError(f"unknown export format {format!r}", close_matches(format, FORMATS))
    if exporter not in ("auto", "legacy", "dynamo"):
        raise YingsheError(f"unknown ONNX exporter {exporter!r}", "use auto, legacy or dynamo")
    run = Path(run)
    checkpoint = checkpoint_in(run) if run.is_dir() else run
    classifier = Classifier.load(checkpoint, device="cpu")
    require_known_task(classifier, checkpoint)
    target = Path(out) if out else default_path(run, format)
    if target.is_dir():
        raise YingsheError(f"--out {target} is a folder", f"name a file, e.g. {target / target.name}.onnx")
    count = par.DEFAULT_IMAGES if parity_images is None else parity_images
    tol = par.DEFAULT_TOLERANCE if tolerance is None else tolerance
    images = par.split_images(classifier, count) if count > 0 else None
    size, channels = classifier.image_size, classifier.channels
    if images is not None and len(images) >= 2:
        example = torch.from_numpy(images[:2])
    else:
        example = torch.zeros((2, size, size, channels), dtype=torch.uint8)
    module = DeployModule(classifier)
    batch = 0 if dynamic_batch else 1
    if not dynamic_batch:
        example = example[:1]
    if format == "onnx":
        data, meta, candidate = _onnx(module, example, classifier, checkpoint, opset, dynamic_batch, exporter)
    else:
        data, meta, candidate = _torchscript(module, example, classifier, checkpoint, dynamic_batch)
    result = None
    if images is not None:
        thresholds = meta.get("thresholds")  # multi-label: scores and label sets are compared
        result = par.check_parity(classifier.logits, candidate, images, tol, batch or len(images), thresholds)
        par.require_parity(result, format)
        meta["parity"] = result.as_dict()
    if format == "onnx":  # the parity figures go into the file too, not only beside it
        from yingshe.export.onnx import with_metadata

        data = with_metadata(data, meta)
    meta_path = target.with_name(target.name + ".json")
    atomic_write_bytes(target, data)
    atomic_write_json(meta_path, meta)
    return ExportResult(target, meta_path, meta, result.as_dict() if result else None)


def require_known_task(classifier: Classifier, checkpoint: Path) -> None:
    """Single- and multi-label models export; a task this version has no reader for is refused
    before any work, since its readers would score it as one of those two."""
    from yingshe.errors import YingsheError
    from yingshe.export.metadata import MULTI_LABEL, SINGLE_LABEL

    task = classifier.checkpoint.meta.task
    if task not in (SINGLE_LABEL, MULTI_LABEL):
        raise YingsheError(
            f"{checkpoint} is a {task!r} model; export handles single- and multi-label models only",
            "serve it from the run folder (`yingshe serve RUN`) or predict with `yingshe predict RUN`",
        )


def _onnx(module, example, classifier, checkpoint, opset, dynamic_batch, exporter):
    from yingshe.errors import require

    for name in ("onnx", "onnxruntime"):  # before any work: the export and its parity check need both
        require(name, "deploy", "ONNX export")
    from yingshe.export.metadata import export_metadata
    from yingshe.export.onnx import DEFAULT_OPSET, export_onnx, session, with_metadata

    opset = opset or DEFAULT_OPSET
    data, exporter = export_onnx(module, example, opset, dynamic_batch, exporter)
    meta = export_metadata(
        classifier, checkpoint, "onnx", opset=opset, exporter=exporter, dynamic_batch=dynamic_batch
    )
    runner = session(with_metadata(data, meta))

    def candidate(arrays):
        return runner.run(None, {"image": arrays})[0]

    return data, meta, candidate


def _torchscript(module, example, classifier, checkpoint, dynamic_batch):
    import torch

    from yingshe.export.metadata import export_metadata
    from yingshe.export.torchscript import export_torchscript, load_torchscript

    meta = export_metadata(
        classifier, checkpoint, "torchscript", exporter="torch.jit.trace", dynamic_batch=dynamic_batch
    )
    data = export_torchscript(module, example, meta)
    loaded, _ = load_torchscript(data)

    @torch.no_grad()
    def candidate(arrays):
        return loaded(torch.from_numpy(arrays)).numpy()

    return data, meta, candidate


make_callable(__name__, "yingshe.export:export_model")
