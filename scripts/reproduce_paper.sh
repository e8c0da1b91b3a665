#!/usr/bin/env bash
# Run every paper experiment (conf/experiment/paper_*.yaml): NTM-FF, NTM-LSTM and LSTM on the
# five tasks, each a sweep over the three models and the budget's seeds.
#
#   scripts/reproduce_paper.sh                     # paper budget (1,000k sequences; repeat copy 500k), 3 seeds
#   BUDGET=smoke scripts/reproduce_paper.sh        # the whole pipeline in minutes on a CPU (1 seed)
#   BUDGET=cpu scripts/reproduce_paper.sh hydra/launcher=joblib   # Figs 3, 7, 10's NTMs: 250k, 5 seeds, one CPU session
#   BUDGET=short scripts/reproduce_paper.sh hydra/launcher=joblib     # extra arguments go to every sweep
#   scripts/reproduce_paper.sh hydra/launcher=slurm                   # on a cluster (edit conf/hydra/launcher/slurm.yaml once)
#   # both cores of a CPU machine, one stack per model, resumable (run the same lines again after a kill):
#   SWEEP_ROOT=outputs/reproduction/runs BUDGET=cpu scripts/reproduce_paper.sh hydra/launcher=stacked model=ntm_ff &
#   SWEEP_ROOT=outputs/reproduction/runs BUDGET=cpu scripts/reproduce_paper.sh hydra/launcher=stacked model=ntm_lstm
#
# Each experiment's jobs land in outputs/multirun/<date>_<time>/<overrides>, e.g.
# budget=paper,experiment=paper_copy,model=ntm_lstm,seed=2; with SWEEP_ROOT set, in
# $SWEEP_ROOT/<experiment>/<overrides>, and resume=true: each run goes on from its own checkpoint
# (a finished run ends at once), so the same command continues an interrupted reproduction, in
# this session or a later one. A failing job does not stop its sweep; the script goes on with the
# next experiment and exits non-zero if any sweep had failures.
set -u
BUDGET="${BUDGET:-paper}"
# the cpu budget covers the NTM landmarks of Figs 3, 7 and 10 (conf/budget/cpu.yaml); the others, all five
if [ "$BUDGET" = cpu ]; then
    EXPERIMENTS="${EXPERIMENTS:-paper_copy paper_repeat_copy paper_associative_recall}"
else
    EXPERIMENTS="${EXPERIMENTS:-paper_copy paper_repeat_copy paper_associative_recall paper_ngrams paper_priority_sort}"
fi
status=0
for experiment in $EXPERIMENTS; do
    where=()
    if [ -n "${SWEEP_ROOT:-}" ]; then
        where=("hydra.sweep.dir=$SWEEP_ROOT/$experiment" "resume=true")
    fi
    echo "== ntm-train -m experiment=$experiment budget=$BUDGET${where:+ ${where[*]}} $*"
    started=$SECONDS
    ntm-train -m "experiment=$experiment" "budget=$BUDGET" "${where[@]}" "$@" || status=$?
    echo "== $experiment: $((SECONDS - started)) s"
done
exit "$status"
