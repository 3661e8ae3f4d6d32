"""Dataset names → local files: the data directory, Debian's packages, then a checked download.

A name such as `fashion-mnist` resolves, in order, to
1. `<data_dir>/fashion-mnist` (a folder or an archive of that name, or the canonical file names),
   where data_dir is the setting, else `$YINGSHE_DATA`, else `~/.cache/yingshe/data`;
2. the folder Debian's `dataset-<name>` package installs (`/usr/share/datasets/<name>`);
3. a download from the canonical location into data_dir, verified by SHA-256.
`$YINGSHE_MIRROR` replaces the canonical base URL (tests point it at a local server).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from yingshe.data.download import ProgressFn, download
from yingshe.data.sources import ReadOptions, read_digits, read_source
from yingshe.data.splits import SourceData
from yingshe.errors import YingsheError
from yingshe.registry import Registry

DEBIAN_DATASETS = Path("/usr/share/datasets")


@dataclass(frozen=True)
class NamedDataset:
    """A standard dataset: where it is published and how its files are recognised."""

    name: str
    base_url: str
    files: dict[str, str]  # file name → SHA-256
    folder: str  # the folder the files are read from (inside data_dir/<name>)
    aliases: tuple[str, ...] = ()  # other names the data may be stored under
    flip_invariant: bool = True
    local_only: bool = False


DATASETS: Registry[NamedDataset] = Registry("dataset")

_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DATASETS.register("fashion-mnist")(
    NamedDataset(
        "fashion-mnist",
        _FASHION,
        {
            "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        },
        folder="fashion-mnist",
        aliases=("fashion_mnist", "FashionMNIST"),
    )
)
DATASETS.register("mnist")(
    NamedDataset(
        "mnist",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        folder="mnist",
        aliases=("MNIST",),
        flip_invariant=False,
    )
)
DATASETS.register("cifar10")(
    NamedDataset(
        "cifar10",
        "https://www.cs.toronto.edu/~kriz/",
        {"cifar-10-python.tar.gz": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"},
        folder="cifar10",
        aliases=("cifar-10", "cifar-10-batches-py", "cifar10-jpeg"),
    )
)
DATASETS.register("cifar100")(
    NamedDataset(
        "cifar100",
        "https://www.cs.toronto.edu/~kriz/",
        {"cifar-100-python.tar.gz": "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"},
        folder="cifar100",
        aliases=("cifar-100", "cifar-100-python"),
    )
)
DATASETS.register("digits")(NamedDataset("digits", "", {}, folder="", flip_invariant=False, local_only=True))

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", "")


def data_root(setting: str | None) -> Path:
    if setting:
        return Path(setting).expanduser()
    env = os.environ.get("YINGSHE_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "yingshe" / "data"


def is_named(spec: str) -> bool:
    return spec in DATASETS and not Path(spec).exists()


def load_named(
    name: str,
    data_dir: str | None,
    allow_download: bool = True,
    progress: ProgressFn | None = None,
    options: ReadOptions | None = None,
) -> SourceData:
    """Find (or fetch) the named dataset and read it."""
    entry = DATASETS.get(name)
    if entry.local_only:
        return read_digits()
    root = data_root(data_dir)
    local = find_local(entry, root)
    if local is None and allow_download:
        local = fetch(entry, root, progress)
    if local is None:
        raise YingsheError(
            f"dataset {name!r} was not found in {root} or {DEBIAN_DATASETS / entry.folder}",
            f"put its files ({', '.join(entry.files)}) in {root / entry.folder}, "
            "set YINGSHE_DATA to the folder that holds them, or allow the download",
        )
    data = read_source(local, options=options)
    data.flip_invariant = entry.flip_invariant
    return data


def find_local(entry: NamedDataset, root: Path) -> Path | None:
    """The first existing folder or archive that holds the dataset."""
    for stem in (entry.name, *entry.aliases):
        for suffix in ARCHIVE_SUFFIXES:
            candidate = root / f"{stem}{suffix}"
            if candidate.exists() and _holds_data(candidate, entry):
                return candidate
    for file_name in entry.files:  # the canonical archive straight in data_dir
        if (root / file_name).is_file():
            return root / file_name
    debian = DEBIAN_DATASETS / entry.folder
    if debian.is_dir() and _holds_data(debian, entry):
        return debian
    return None


def _holds_data(candidate: Path, entry: NamedDataset) -> bool:
    """An archive, or a folder that isn't empty (an empty one is a failed earlier attempt)."""
    return candidate.is_file() or any(candidate.iterdir())


def fetch(entry: NamedDataset, root: Path, progress: ProgressFn | None = None) -> Path:
    base = os.environ.get("YINGSHE_MIRROR", entry.base_url)
    target_dir = root / entry.folder
    for file_name, sha in entry.files.items():
        download(base.rstrip("/") + "/" + file_name, target_dir / file_name, sha, progress=progress)
    if len(entry.files) == 1:
        return target_dir / next(iter(entry.files))
    return target_dir
