"""`train.balance` and `finetune.strategy` are checked choices like the config's other words."""

import pytest

from yingshe.config import RunConfig, apply_overrides
from yingshe.errors import YingsheError


@pytest.mark.parametrize("key", ["train.balance", "finetune.strategy"])
def test_unknown_choice_is_refused_when_set(key):
    with pytest.raises(YingsheError, match="bogus"):
        apply_overrides(RunConfig(), [f"{key}=bogus"])


def test_known_choices_are_accepted():
    config = RunConfig()
    apply_overrides(config, ["train.balance=logit-adjust", "finetune.strategy=linear-probe"])
    assert (config.train.balance, config.finetune.strategy) == ("logit-adjust", "linear-probe")
