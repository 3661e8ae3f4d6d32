"""CSV manifests: a header with a byte-order mark, unknown splits and files listed twice."""

import pytest

from yingshe.data.sources import read_source
from yingshe.errors import YingsheError


def test_csv_manifest_header_bom_unknown_split_and_duplicates(cifar_folder, tmp_path):
    images = sorted((cifar_folder / "train" / "cat").glob("*.jpg"))[:4]
    dogs = sorted((cifar_folder / "train" / "dog").glob("*.jpg"))[:4]
    rows = [f"{p},cat,train" for p in images] + [f"{p},dog,test" for p in dogs]
    manifest = tmp_path / "m.csv"
    manifest.write_text("\ufefffilename,class,split\n" + "\n".join(rows) + "\n")
    data = read_source(manifest)
    assert data.classes == ["cat", "dog"] and len(data.splits["test"]) == 4
    manifest.write_text("\n".join([*rows, f"{images[0]},cat,holdout"]))
    with pytest.raises(YingsheError, match="line 9: unknown split 'holdout'"):
        read_source(manifest)
    manifest.write_text("\n".join([*rows, f"{images[0]},cat,test"]))
    with pytest.raises(YingsheError, match="listed in both train and test"):
        read_source(manifest)
