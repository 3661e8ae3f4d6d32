"""Every model yingshe builds answers the feature/head interface (timm's convention): the
registry's built-ins, a timm model, and each torchvision family the adapter names."""

import pytest
import torch

from yingshe.errors import YingsheError
from yingshe.models import MODELS, create_model

ZOO = ["timm:resnet10t", "torchvision:resnet18", "torchvision:mobilenet_v2", "torchvision:convnext_tiny"]


@pytest.mark.parametrize("name", [*MODELS.names(), *ZOO])
def test_features_head_and_classifier_reset(name):
    torch.manual_seed(0)
    model = create_model(name, 7, 3, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        torch.testing.assert_close(model.forward_head(features), model(x))
    assert pooled.shape == (2, model.num_features)
    assert model.get_classifier().out_features == 7
    model.reset_classifier(4)
    assert model(x).shape == (2, 4) and model.get_classifier().out_features == 4


@pytest.mark.parametrize("name", [*MODELS.names(), *ZOO[1:]])
def test_stages_cover_the_body_in_order(name):
    from yingshe.transfer.freeze import body_stages, classifier_names

    model = create_model(name, 7, 3, 32)
    stages = body_stages(model)
    head = classifier_names(model)
    owned = [n for _, names in stages for n in names]
    body = [n for n, _ in model.named_parameters() if n not in head]
    assert sorted(owned) == sorted(body), "every body parameter belongs to exactly one stage"
    order = {n: i for i, (n, _) in enumerate(model.named_parameters())}
    firsts = [min(order[n] for n in names) for _, names in stages]
    assert firsts == sorted(firsts), "stages run from the input to the output"


def test_an_unadapted_torchvision_family_is_a_clear_error():
    with pytest.raises(YingsheError, match="head layout") as err:
        create_model("torchvision:squeezenet1_0", 5)
    assert "mobilenet" in err.value.fix
