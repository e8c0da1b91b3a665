"""Sweeps from the shell: launchers, failing jobs, the Optuna search, paper experiments and budgets."""

from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from conftest import MODELS, TINY, compose_config, ntm_train_exe, run_cli, run_dirs, scalars
from ntm_experiments.sweep import FAILED_NAME, SUMMARY_NAME, cpu_threads_per_job, parallel_jobs
from ntm_experiments.train import COST_TAG

REPO = Path(__file__).resolve().parents[1]
TINY_RUN = [*TINY, "eval.pictures=false", "eval.every=64", "train.total_sequences=64"]
# one torch thread per training process: tiny models gain nothing from more, and on a shared,
# busy machine OpenMP threads waiting on one another make a run many times slower
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
EXPERIMENTS = {"paper_copy": "copy", "paper_repeat_copy": "repeat_copy",
               "paper_associative_recall": "associative_recall", "paper_ngrams": "ngrams",
               "paper_priority_sort": "priority_sort"}


# ---------------------------------------------------------------- pure functions
def test_parallel_jobs_one_per_gpu_else_one_per_core_with_one_thread_each():
    assert parallel_jobs(cuda_devices=4, cpus=16) == 4
    assert parallel_jobs(cuda_devices=0, cpus=16) == 16
    assert parallel_jobs(cuda_devices=0, cpus=0) == 1
    assert cpu_threads_per_job(16, cpus=16) == 1
    assert cpu_threads_per_job(4, cpus=16) == 4
    assert cpu_threads_per_job(-1, cpus=8) == 1     # joblib's "all cores"
    assert cpu_threads_per_job(32, cpus=8) == 1


# ---------------------------------------------------------------- configs
def test_runs_without_a_budget_are_custom():
    cfg = compose_config()
    assert cfg.budget == "custom"
    assert cfg.objective == "final_train_cost"


@pytest.mark.parametrize("budget, total, log_every, every", [
    ("smoke", 320, 32, 160), ("short", 20000, 200, 2000), ("cpu", 250_000, 1000, 10000), ("paper", 1_000_000, 1000, 10000)])
def test_budgets_set_the_length_and_scale_logging_evaluation_and_checkpoints(budget, total, log_every, every):
    cfg = compose_config(f"budget={budget}", "task=copy", "model=ntm_ff")
    assert cfg.budget == budget
    assert cfg.train.total_sequences == total
    assert cfg.train.log_every == log_every
    assert cfg.eval.every == every == cfg.train.checkpoint_every
    assert total // log_every >= 10   # at least ten points on every curve


def test_paper_budget_keeps_repeat_copys_500k():
    assert compose_config("budget=paper", "task=repeat_copy", "model=lstm").train.total_sequences == 500_000


@pytest.mark.parametrize("experiment, task", EXPERIMENTS.items())
def test_paper_experiments_sweep_the_three_models_and_three_seeds_at_the_papers_budget(experiment, task):
    cfg = compose_config(f"experiment={experiment}", return_hydra_config=True)
    assert cfg.task.name == task
    assert cfg.budget == "paper"
    assert cfg.train.total_sequences == (500_000 if task == "repeat_copy" else 1_000_000)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    params = cfg.hydra.sweeper.params
    assert params.model.split(",") == MODELS
    assert params.seed == "1,2,3"
    # each job gets its model's row of the paper's tables
    for model in MODELS:
        job = compose_config(f"experiment={experiment}", f"model={model}")
        assert job.paper.table and job.paper.params, (experiment, model)
        assert job.model.name == model


@pytest.mark.parametrize("experiment, task", EXPERIMENTS.items())
def test_the_cpu_budget_sweeps_the_two_ntms_over_five_seeds_to_250k_on_every_task(experiment, task):
    cfg = compose_config(f"experiment={experiment}", "budget=cpu", return_hydra_config=True)
    assert cfg.budget == "cpu" and cfg.task.name == task
    assert cfg.train.total_sequences == 250_000  # repeat copy's 500k (its task_model row) included
    assert cfg.hydra.sweeper.params.model.split(",") == ["ntm_ff", "ntm_lstm"]
    assert cfg.hydra.sweeper.params.seed == "0,1,2,3,4"
    # every NTM landmark of Figs 3, 7 and 10 lies inside the runs (compare.py's windows: 10k wide)
    from ntm_experiments.report import LANDMARKS
    if task in ("copy", "repeat_copy", "associative_recall"):
        for model in ("ntm_ff", "ntm_lstm"):
            for kind, a, b in LANDMARKS[task][model]:
                at_k = b if kind == "below" else a  # thousands of sequences
                assert at_k * 1000 <= cfg.train.total_sequences, (task, model, kind, a, b)


def test_smoke_budget_runs_a_paper_experiment_with_one_seed():
    cfg = compose_config("experiment=paper_ngrams", "budget=smoke", return_hydra_config=True)
    assert cfg.budget == "smoke"
    assert cfg.train.total_sequences == 320
    assert cfg.hydra.sweeper.params.seed == "1"


def test_launcher_presets_compose():
    slurm = compose_config("hydra/launcher=slurm", return_hydra_config=True).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert slurm.gpus_per_node == 1 and slurm.array_parallelism > 0 and "partition" in slurm
    assert slurm.timeout_min > 0
    assert slurm.max_num_timeout > 0 and slurm.signal_delay_s > 0  # a job at its time limit is requeued and resumes
    joblib = compose_config("hydra/launcher=joblib", return_hydra_config=True).hydra.launcher
    assert joblib._target_.endswith("JoblibLauncher")
    assert joblib.n_jobs == parallel_jobs() >= 1
    local = compose_config("hydra/launcher=submitit_local", return_hydra_config=True).hydra.launcher
    assert local._target_.endswith("LocalLauncher")


def test_optuna_search_space():
    cfg = compose_config("search=optuna", "task=copy", "model=ntm_lstm", return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "minimize"
    assert set(sweeper.params) == {"train.lr", "model.controller_size", "train.batch_size"}
    assert "hydra.job.num" in OmegaConf.to_container(cfg.hydra.sweep)["subdir"]  # repeated points of the space get their own folder


@pytest.mark.slow
def test_bad_objective_is_one_clear_line(workdir):
    result = run_cli(["objective=lowest", *TINY_RUN], cwd=workdir, timeout=120, env=ONE_THREAD)
    assert result.returncode == 2
    assert result.stderr.strip() == ("ntm-train: error: objective=lowest: allowed values are "
                                     "final_train_cost, best_eval_cost")


# ---------------------------------------------------------------- real sweeps from the shell
def _job_dirs(workdir):
    (sweep,) = (workdir / "outputs" / "multirun").iterdir()
    return sweep, sorted(p.parent for p in sweep.rglob(".hydra"))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_failing_job_is_reported_and_the_other_runs(workdir, launcher):
    result = run_cli(["-m", f"hydra/launcher={launcher}", "task=copy", "model=ntm_ff", "train.lr=1e-4,0", *TINY_RUN],
                     cwd=workdir, env=ONE_THREAD)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    sweep, jobs = _job_dirs(workdir)
    assert len(jobs) == 2
    good, bad = sorted(jobs, key=lambda d: "train.lr=0," in d.name)
    assert [s for s, _ in scalars(good, COST_TAG)] == [32, 64]
    assert (good / "checkpoint.pt").is_file() and not (good / FAILED_NAME).exists()
    assert (bad / FAILED_NAME).read_text() == "train.lr=0.0: must be > 0\n"
    assert "job failed: train.lr=0.0: must be > 0" in (bad / "train.log").read_text()
    assert (sweep / SUMMARY_NAME).read_text() == f"{bad.name}: train.lr=0.0: must be > 0\n"
    assert f"1 of 2 jobs of the sweep in outputs/multirun/{sweep.name} failed" in result.stderr
    assert f"  {bad.name}: train.lr=0.0: must be > 0" in result.stderr
    if launcher == "joblib":  # each parallel CPU job got its share of the cores
        assert "torch thread(s)" in (good / "train.log").read_text()


@pytest.mark.slow
def test_submitit_local_launcher_runs_two_jobs(workdir):
    result = run_cli(["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "task=copy",
                      "model=ntm_ff", "seed=1,2", *TINY_RUN], cwd=workdir, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    sweep, jobs = _job_dirs(workdir)
    assert sorted(next(o for o in d.name.split(",") if o.startswith("seed=")) for d in jobs) == ["seed=1", "seed=2"]
    assert run_dirs(sweep) == jobs
    for job in jobs:
        cost = scalars(job, COST_TAG)
        assert [s for s, _ in cost] == [32, 64] and all(math.isfinite(v) for _, v in cost)
    assert scalars(jobs[0], COST_TAG) != scalars(jobs[1], COST_TAG)  # different seeds, different runs
    assert (sweep / ".submitit").is_dir()  # the jobs really went through submitit


def test_only_a_submitit_job_with_the_same_settings_resumes_the_checkpoint_in_its_folder(tmp_path, monkeypatch):
    from ntm_experiments.sweep import resume_requeued_job
    from ntm_experiments.train import train

    job = [*TINY, "task=copy", "model=ntm_ff", "train.total_sequences=64", "eval.pictures=false"]
    train(compose_config(*job), tmp_path)
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert not resume_requeued_job(compose_config(*job), tmp_path)  # not a submitit job: refused as before
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    other = compose_config(*job, "train.lr=3e-4")
    assert not resume_requeued_job(other, tmp_path) and other.resume is False  # another run's checkpoint
    again = compose_config(*job, "device=cpu", "progress=true")  # what may differ between a job and its requeue
    assert resume_requeued_job(again, tmp_path) and again.resume == str(tmp_path)
    assert not resume_requeued_job(compose_config(*job), tmp_path / "elsewhere")  # no checkpoint there


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux: /proc/<pid>/stat)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text() if proc.name.isdigit() else ""
        except OSError:  # gone meanwhile
            continue
        if stat and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(proc.name))
    return found


@pytest.mark.slow
def test_a_preempted_submitit_job_is_requeued_and_resumes_its_own_run_to_the_uninterrupted_curve(workdir):
    """Slurm's pre-emption, on this machine: the job of a submitit_local sweep gets SIGTERM (what
    Slurm sends first; submitit ignores it, we checkpoint and train on), then SIGUSR2, the signal
    submitit's Slurm jobs get on a pre-emption (and submitit_local's at its time limit). The job
    writes a checkpoint at the step it reached, submitit calls the launcher's checkpoint method and
    requeues it (submitit_local restarts it as Slurm would), and the requeued job resumes its own
    folder: its curve equals an uninterrupted run's. timeout_min=60, so submitit counts the signal
    as a pre-emption, not a time-out."""
    import signal
    import time

    settings = [*TINY, "task=copy", "model=ntm_ff", "seed=1", "train.log_every=64", "train.checkpoint_every=64",
                "eval.every=1000000", "eval.pictures=false", "train.fast_path=false", "train.total_sequences=1600"]
    env = {**os.environ, **ONE_THREAD, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen([ntm_train_exe(), "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=60",
                             "hydra.sweep.subdir=job", *settings], cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait_for(ready):
        deadline = time.monotonic() + 120
        while not ready():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the job never got there"
            time.sleep(0.02)

    wait_for(lambda: run_dirs(workdir / "outputs"))  # the job is training: its first checkpoint
    (job,) = run_dirs(workdir / "outputs")
    (controller,) = [int(p.name) for p in job.parent.glob(".submitit/*") if p.name.isdigit()]
    (task,) = _children(controller)
    log = job / "train.log"
    os.kill(task, signal.SIGTERM)
    wait_for(lambda: "SIGTERM at" in log.read_text())
    os.kill(task, signal.SIGUSR2)
    assert proc.wait(timeout=240) == 0, proc.stderr.read()
    assert not (job / FAILED_NAME).exists()

    text = log.read_text()
    at_term = int(re.search(r"SIGTERM at (\d+) sequences: checkpoint written to .*; training goes on", text).group(1))
    at_usr2 = int(re.search(r"SIGUSR2 \(submitit: pre-empted or near the time limit\) at (\d+) sequences: "
                            r"checkpoint written to ", text).group(1))
    assert 0 < at_term <= at_usr2 < 1600, "the job finished before it was pre-empted: nothing was tested"
    assert f"this job's folder holds its checkpoint at {at_usr2} sequences (a requeued submitit job): resuming it" in text
    assert re.search(rf"resumed .*checkpoint.pt at {at_usr2} sequences", text)
    assert text.count("finished: 1600 sequences") == 1
    submitit_log = "".join(p.read_text() for p in job.parent.glob(".submitit/*/*_0_log.*"))
    assert "this job is preempted" in submitit_log and "Requeued job" in submitit_log

    straight = run_cli([*settings, "hydra.run.dir=straight"], cwd=workdir, env=ONE_THREAD)
    assert straight.returncode == 0, straight.stderr
    for tag in (COST_TAG, "train/grad_norm"):
        a, b = scalars(workdir / "straight", tag), scalars(job, tag)
        assert [s for s, _ in b] == [s for s, _ in a] == [*range(64, 1600, 64), 1600]
        assert [v for _, v in b] == pytest.approx([v for _, v in a], rel=1e-6)


@pytest.mark.slow
def test_optuna_search_goes_on_past_a_failed_trial(workdir):
    # a discrete space where lr=0 fails: the seeded sampler draws it first, then a good value
    result = run_cli(["-m", "search=optuna", "hydra.sweeper.n_trials=2", "train.lr=choice(1e-4,0)",
                      "train.batch_size=choice(8)", "model.controller_size=choice(16)", "task=copy",
                      "model=ntm_ff", "objective=best_eval_cost", *TINY_RUN], cwd=workdir, env=ONE_THREAD)
    sweep, jobs = _job_dirs(workdir)
    assert [d.name for d in jobs] == ["trial_0", "trial_1"]
    failed = [d for d in jobs if (d / FAILED_NAME).exists()]
    assert len(failed) == 1, result.stderr
    assert result.returncode == 1 and "1 of 2 jobs" in result.stderr
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"]["train.lr"] == pytest.approx(1e-4)
    (good,) = set(jobs) - set(failed)
    saved = torch.load(good / "checkpoint.pt", weights_only=False)
    assert best["best_value"] == pytest.approx(saved["best_eval_cost"])  # what main() returned


@pytest.mark.slow
def test_reproduce_script_runs_a_paper_experiment_at_the_smoke_budget(workdir):
    env = {**os.environ, **ONE_THREAD, "PYTHONUNBUFFERED": "1", "BUDGET": "smoke", "EXPERIMENTS": "paper_copy",
           "PATH": f"{Path(ntm_train_exe()).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run(["bash", str(REPO / "scripts" / "reproduce_paper.sh"), "model=ntm_ff", *TINY],
                            cwd=workdir, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr
    assert "== ntm-train -m experiment=paper_copy budget=smoke model=ntm_ff" in result.stdout
    sweep, (job,) = _job_dirs(workdir)
    assert set(job.name.split(",")) == {"budget=smoke", "experiment=paper_copy", "model=ntm_ff", "seed=1",
                                        *(a for a in TINY if not a.startswith("progress"))}
    composed = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
    assert composed["budget"] == "smoke" and composed["task"]["name"] == "copy" and composed["seed"] == 1
    assert [s for s, _ in scalars(job, COST_TAG)][-1] == 320


@pytest.mark.slow
def test_reproduce_script_with_a_sweep_root_resumes_its_runs(workdir):
    """SWEEP_ROOT: each experiment's sweep in a fixed folder with resume=true, so the same command
    continues the runs (here: a run stopped at 160 sequences goes on to the smoke budget's 320)."""
    env = {**os.environ, **ONE_THREAD, "PYTHONUNBUFFERED": "1", "BUDGET": "smoke", "EXPERIMENTS": "paper_copy",
           "SWEEP_ROOT": "outputs/reproduction", "PATH": f"{Path(ntm_train_exe()).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("HYDRA_FULL_ERROR", None)
    # the run's length is left out of its folder's name, so the longer run is the same folder
    command = ["bash", str(REPO / "scripts" / "reproduce_paper.sh"), "model=ntm_ff", *TINY,
               "hydra.job.config.override_dirname.exclude_keys=[resume,device,progress,train.total_sequences]"]
    first = subprocess.run([*command, "train.total_sequences=160"], cwd=workdir, capture_output=True, text=True,
                           timeout=240, env=env)
    assert first.returncode == 0, first.stderr
    assert ("== ntm-train -m experiment=paper_copy budget=smoke hydra.sweep.dir=outputs/reproduction/paper_copy "
            "resume=true model=ntm_ff") in first.stdout
    assert re.search(r"^== paper_copy: \d+ s$", first.stdout, re.M)
    (job,) = [d for d in (workdir / "outputs" / "reproduction" / "paper_copy").iterdir() if d.is_dir()]
    assert [s for s, _ in scalars(job, COST_TAG)][-1] == 160
    again = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=240, env=env)
    assert again.returncode == 0, again.stderr
    assert [d for d in (workdir / "outputs" / "reproduction" / "paper_copy").iterdir() if d.is_dir()] == [job]
    steps = [s for s, _ in scalars(job, COST_TAG)]
    assert steps[-1] == 320 and steps == sorted(set(steps))  # resumed: one curve, no point written twice
