"""Checks across values that the schema's types cannot express: each bad value is refused in one line."""

from __future__ import annotations

import pytest

from conftest import compose_config
from ntm_experiments.errors import ConfigError
from ntm_experiments.validation import validate


@pytest.mark.parametrize("override, message", [
    ("train.lr=0", "train.lr=0"),
    ("train.lr=-1e-3", "train.lr=-0.001"),
    ("train.batch_size=0", "train.batch_size=0"),
    ("model.memory_rows=0", "model.memory_rows=0"),
    ("model.controller=gru", "model.controller=gru"),
    ("model.memory_init=zeros", "model.memory_init=zeros"),
    ("model.memory_init_value=0", "model.memory_init_value=0"),
    ("task.max_length=0", "task.max_length=0"),
    ("task.min_length=5", None),
    ("train.checkpoint_every=1500", "train.checkpoint_every=1500"),
    ("device=tpu", "device=tpu"),
    ("train.max_restores=-1", "train.max_restores=-1"),
    ("model.shift_range=64", "must be in [0, 64)"),
    ("train.lr_batch_scaling=cube", "train.lr_batch_scaling=cube: must be one of none, sqrt, linear"),
    ("train.lr=1e38", "train.lr=1e+38: scaled for the batch of 4 (train.lr_batch_scaling=linear) it is 4e+38"),
])
def test_validate_names_the_bad_value(override, message):
    extra = {"task.min_length=5": ["task.max_length=4"], "model.memory_init_value=0": ["model.memory_init=constant"]}
    overrides = [override] + extra.get(override, [])
    cfg = compose_config(*overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    text = str(info.value)
    assert "\n" not in text
    assert (message or "task.min_length=5") in text
