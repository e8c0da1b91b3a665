"""Scoring a model on its task's generalisation suite, the pictures, in TensorBoard and from ntm-eval."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import TINY, build_task, compose_config, run_cli, run_dirs, scalars
from ntm_experiments.evaluate import eval_suite, evaluate, example_figure, setting_batch, used_rows
from ntm_experiments.tasks import cost_bits
from ntm_experiments.models import make_model
from ntm_experiments.runs import COST_TAG


def test_eval_lengths_replace_the_main_size_of_the_suite():
    task = build_task("associative_recall")
    assert eval_suite(task, compose_config().eval) == task.suite()  # eval.lengths: null
    lengths = compose_config("eval.lengths=[3,7]").eval
    assert [s.name for s in eval_suite(task, lengths)] == ["items_3", "items_7"] == [s.name for s in task.suite([3, 7])]


def test_evaluation_sees_the_same_sequences_every_time_and_scores_the_ngram_optimum():
    cfg = compose_config("task=ngrams", "model=ntm_ff", "model.controller_size=8", "model.memory_rows=8")
    task = build_task("ngrams")
    torch.manual_seed(0)
    model = make_model(cfg.model, 1, 1)
    first, again = evaluate(model, task, cfg.eval), evaluate(model, task, cfg.eval)
    assert first == again
    (result,) = first
    assert result.sequences == 1000 and result.target_bits == 200
    # eq. 10's estimator scores about 133.3 bits with all 200 bits scored (Fig 13's 131.6: the paper's own set)
    assert 131.3 < result.optimal_cost_bits < 135.3
    assert result.cost_bits > result.optimal_cost_bits  # an untrained network does worse than the optimum
    assert 0 <= result.wrong_bits <= 200


def test_wrong_bits_count_only_scored_bits():
    cfg = compose_config("task=copy", "model=lstm", "model.hidden_size=8", "eval.lengths=[3]", "eval.sequences=5")
    model = make_model(cfg.model, 10, 9)
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    torch.nn.init.constant_(model.output.bias, 10.0)  # always outputs 1 with confidence
    (result,) = evaluate(model, build_task("copy"), cfg.eval)
    batch = setting_batch(build_task("copy"), build_task("copy").suite([3])[0], 5, cfg.eval.seed, 0)
    zeros = ((batch.targets == 0).float() * batch.mask).sum().item() / 5
    assert result.wrong_bits == pytest.approx(zeros)  # every scored 0 is wrong, nothing else counts
    assert result.target_bits == 24


def test_example_figure_has_ntm_panels():
    cfg = compose_config("task=copy", "model=ntm_lstm", "model.controller_size=8", "model.memory_rows=16")
    model = make_model(cfg.model, 10, 9)
    figure = example_figure(model, build_task("copy"), build_task("copy").suite([4])[0], seed=0)
    labels = [ax.get_ylabel() for ax in figure.axes if ax.get_ylabel()]
    assert labels[:3] == ["inputs", "targets", "outputs"]
    assert any("write" in label for label in labels) and any("read" in label for label in labels)
    assert "add vectors" in labels


@pytest.mark.parametrize("task_name, model_name", [("copy", "ntm_ff"), ("ngrams", "lstm")])
def test_a_pictures_title_tells_the_examples_cost_from_the_evaluations_mean(task_name, model_name):
    """One example's cost beside a scalar averaged over the evaluation's sequences: each named."""
    cfg = compose_config(f"task={task_name}", f"model={model_name}", "eval.sequences=5", "eval.lengths=[4]",
                         *(["model.hidden_size=8"] if model_name == "lstm" else ["model.controller_size=8"]))
    task = build_task(task_name)
    torch.manual_seed(0)
    model = make_model(cfg.model, task.input_width, task.output_width)
    setting = eval_suite(task, cfg.eval)[0]
    example = task.example(cfg.eval.seed, **setting.setting)
    one = cost_bits(model(example.inputs), example.targets, example.mask).item()
    (result,) = evaluate(model, task, cfg.eval)[:1]
    assert f"{one:.2f}" != f"{result.cost_bits:.2f}"  # the two numbers differ, so the test can tell them apart

    def title(figure) -> str:
        text = figure._suptitle.get_text() if figure._suptitle is not None else figure.axes[0].get_title()
        return " ".join(text.split())  # wrapped to the figure's width

    with_mean = title(example_figure(model, task, setting, cfg.eval.seed, result=result))
    assert with_mean.startswith(f"{task_name}, {setting.name}: this example {one:.2f} bits; mean over the "
                                f"evaluation's {result.sequences} sequences {result.cost_bits:.2f} bits "
                                f"(eval/{setting.name}/cost_bits_per_sequence)")
    alone = title(example_figure(model, task, setting, cfg.eval.seed))
    assert alone.startswith(f"{task_name}, {setting.name}: this example {one:.2f} bits (one sequence, not an "
                            "evaluation's mean)")
    plt.close("all")


def test_weighting_pictures_show_the_used_rows_even_across_the_wrap():
    w = torch.zeros(10, 3)
    w[0, 0], w[9, 1], w[8, 2] = 1.0, 1.0, 0.5  # focus moving backwards across row 0
    assert used_rows(w, margin=1) == [7, 8, 9, 0, 1]
    w = torch.zeros(10, 2)
    w[3, 0], w[5, 1] = 1.0, 1.0
    assert used_rows(w, margin=1) == [2, 3, 4, 5, 6]
    assert used_rows(torch.full((4, 2), 0.25)) == [0, 1, 2, 3]


@pytest.mark.slow
def test_training_logs_evaluations_and_pictures_to_tensorboard(workdir):
    result = run_cli(["task=copy", "model=ntm_lstm", "train.total_sequences=64", "eval.every=32",
                      "eval.sequences=4", "eval.lengths=[3,12]", *TINY], cwd=workdir)
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(workdir / "outputs")
    for name in ("length_3", "length_12"):
        assert [s for s, _ in scalars(run_dir, f"eval/{name}/cost_bits_per_sequence")] == [32, 64]
        assert [s for s, _ in scalars(run_dir, f"eval/{name}/wrong_bits_per_sequence")] == [32, 64]
    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    acc.Reload()
    images = acc.Images("examples/length_12")
    assert [i.step for i in images] == [32, 64]
    assert images[0].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n" and images[0].width > 300
    # TensorBoard's HParams tab has the training cost and every evaluation cost as metrics
    experiment = plugin_data_pb2.HParamsPluginData.FromString(acc.PluginTagToContent("hparams")["_hparams_/experiment"])
    assert [m.name.tag for m in experiment.experiment.metric_infos] == [
        COST_TAG, "eval/length_3/cost_bits_per_sequence", "eval/length_12/cost_bits_per_sequence"]


@pytest.mark.slow
def test_ntm_eval_writes_table_pngs_json_and_csv(workdir):
    result = run_cli(["task=associative_recall", "model=ntm_ff", "train.total_sequences=32", "eval.every=1000",
                      "eval.pictures=false", *TINY], cwd=workdir)
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(workdir / "outputs")
    exe = str(Path(sys.executable).with_name("ntm-eval"))
    done = subprocess.run([exe, str(run_dir), "eval.lengths=[3,7]", "eval.sequences=6", "eval.pictures=true"],
                          capture_output=True, text=True, timeout=240, cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert "items_3" in done.stdout and "items_7" in done.stdout and "wrong bits/seq" in done.stdout
    (first,) = (run_dir / "eval").iterdir()  # a folder per call: <run>/eval/<date>_<time>/
    assert f"wrote {first}/results.json" in done.stdout
    payload = json.loads((first / "results.json").read_text())
    assert payload["sequences_seen"] == 32 and payload["task"] == "associative_recall"
    assert [r["setting"] for r in payload["results"]] == ["items_3", "items_7"]
    assert all(r["sequences"] == 6 and r["target_bits"] == 18 for r in payload["results"])
    csv_lines = (first / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("setting,sequences,cost_bits,wrong_bits") and len(csv_lines) == 3
    for name in ("items_3", "items_7"):
        assert (first / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    kept = {p.name: p.read_bytes() for p in first.iterdir()}

    # a checkpoint file works as well as its folder; without overrides the run's own config
    # applies (here: pictures off, the default Fig 11 item counts). The first call's results stay
    # as they were, and the second's folder holds no pictures of the first
    done = subprocess.run([exe, str(run_dir / "checkpoint.pt"), "eval.sequences=2"], capture_output=True,
                          text=True, timeout=240, cwd=workdir)
    assert done.returncode == 0, done.stderr
    (second,) = set((run_dir / "eval").iterdir()) - {first}
    assert {p.name: p.read_bytes() for p in first.iterdir()} == kept
    payload = json.loads((second / "results.json").read_text())
    assert [r["setting"] for r in payload["results"]] == ["items_6", "items_10", "items_15", "items_20"]
    assert sorted(p.name for p in second.iterdir()) == ["results.csv", "results.json"]


@pytest.mark.parametrize("make_path, message", [
    (lambda d: d / "missing", "no checkpoint there"),
    (lambda d: (d / "bad.pt").write_bytes(b"not a checkpoint") and d / "bad.pt", "not a readable checkpoint"),
])
def test_ntm_eval_refuses_a_missing_or_corrupt_checkpoint(workdir, make_path, message):
    exe = str(Path(sys.executable).with_name("ntm-eval"))
    done = subprocess.run([exe, str(make_path(workdir))], capture_output=True, text=True, timeout=120, cwd=workdir)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ntm-eval: error: ") and message in lines[0]
