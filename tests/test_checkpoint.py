"""A trained model read back from its checkpoint, with its task and its run's config."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_config
from ntm_experiments import checkpoint
from ntm_experiments.errors import ConfigError
from ntm_experiments.train import train

TINY = ["task=copy", "model=ntm_ff", "model.controller_size=8", "model.memory_rows=8", "model.memory_width=4",
        "train.total_sequences=8", "train.batch_size=4", "train.log_every=4", "train.checkpoint_every=8",
        "eval.every=1000", "eval.pictures=false", "eval.lengths=[3]", "progress=false"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train(compose_config(*TINY), run)
    return run


def test_load_model_gives_the_trained_weights_task_and_config(run_dir):
    saved = checkpoint.load(run_dir)
    for source in (run_dir, run_dir / checkpoint.CHECKPOINT_NAME, saved):
        model, task, cfg, again = checkpoint.load_model(source)
        assert again["sequences_seen"] == 8
        assert (task.name, cfg.model.name, cfg.model.memory_rows, list(cfg.eval.lengths)) == ("copy", "ntm_ff", 8, [3])
        assert (task.input_width, task.output_width) == (10, 9)
        state = model.state_dict()
        assert all(torch.equal(state[key], value) for key, value in saved["model"].items())


def test_load_model_applies_overrides_and_refuses_a_bad_one(run_dir):
    cfg = checkpoint.load_model(run_dir, ["eval.lengths=[5,6]", "device=cpu"]).config
    assert list(cfg.eval.lengths) == [5, 6] and cfg.device == "cpu"
    with pytest.raises(ConfigError, match=r"^eval.sequences=0: must be > 0$"):
        checkpoint.load_model(run_dir, ["eval.sequences=0"])


def test_a_key_the_checkpoint_lacks_takes_todays_default_from_conf(run_dir):
    """A checkpoint written before a setting existed still loads: conf/ supplies that setting."""
    saved = checkpoint.load(run_dir)
    del saved["config"]["train"]["fast_path_core"], saved["config"]["objective"]
    cfg = checkpoint.load_model(saved).config
    assert cfg.train.fast_path_core == compose_config().train.fast_path_core
    assert cfg.objective == compose_config().objective
    only = checkpoint.load_model(saved, keys=("task", "model", "eval")).config  # the rest from conf/
    assert only.model.memory_rows == 8 and only.train.total_sequences == compose_config(*TINY[:2]).train.total_sequences
