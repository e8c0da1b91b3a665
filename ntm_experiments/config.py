"""The Hydra config tree: where ``conf/`` is, and what Hydra needs before it composes a config.

Importing this module registers the dataclass schemas (``ntm_experiments.schema``) and the
resolvers the YAML calls (``${ntm_run_dir:...}``, ``${ntm_paper_seeds:...}``, ``${ntm_paper_models:...}``,
``${ntm_parallel_jobs:}``), and silences one expected Hydra warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from .errors import ConfigError
from .schema import register_configs


def _find_stacked_launcher() -> None:
    """Make Hydra's plugin scan see hydra/launcher=stacked (hydra_plugins/ntm_stacked_launcher) in a
    source checkout or an editable install too: there the package sits beside ntm_experiments/,
    behind an import hook whose path Hydra's scan (pkgutil.walk_packages) cannot list. A regular
    install puts it in site-packages/hydra_plugins/, where the scan finds it anyway."""
    import hydra_plugins  # a namespace package (hydra-core ships its own portion)

    beside = Path(__file__).resolve().parent.parent / "hydra_plugins"
    if (beside / "ntm_stacked_launcher").is_dir() and str(beside) not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(str(beside))


_find_stacked_launcher()


def config_dir() -> str:
    """Absolute path of the Hydra config tree.

    A regular install ships ``conf/`` inside the package (``ntm_experiments/conf``, see
    ``pyproject.toml``); an editable install or a source checkout reads the top-level
    ``conf/`` beside the package. The packaged copy wins when both exist.
    """
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise ConfigError(f"no Hydra config tree found (looked in {package / 'conf'} and {package.parent / 'conf'})")


def resume_kind(resume: Any) -> str:
    """What ``resume=`` asks for: "no" (false or null), "newest" (true: the newest run of the task
    and model holding a checkpoint; in a sweep, each job's own folder) or "folder" (a run directory)."""
    if resume is False or resume is None or str(resume).lower() == "false":
        return "no"
    if resume is True or str(resume).lower() == "true":
        return "newest"
    return "folder"


def _resolve_run_dir(resume: Any, fresh: str) -> str:
    """Hydra run directory: ``fresh`` for a new run; for ``resume=true`` the newest run of
    the same task and model that holds a checkpoint; for ``resume=<dir>`` that directory."""
    kind = resume_kind(resume)
    if kind == "no":
        return fresh
    from .checkpoint import CHECKPOINT_NAME  # imports torch: only when a run resumes

    if kind == "newest":
        parent = Path(fresh).parent
        runs = sorted(p for p in parent.glob("*") if (p / CHECKPOINT_NAME).is_file()) if parent.is_dir() else []
        if not runs:
            raise ConfigError(f"resume=true: no run with a {CHECKPOINT_NAME} under {parent}/ "
                              "(start a fresh run, or pass resume=<run dir>)")
        return str(runs[-1])
    path = Path(str(resume)).expanduser()
    if not (path / CHECKPOINT_NAME).is_file():
        raise ConfigError(f"resume={resume}: no {CHECKPOINT_NAME} in that directory (allowed: true, false, or a run "
                          f"directory holding {CHECKPOINT_NAME})")
    return str(path)


def paper_seeds(budget: str) -> str:
    """The seeds a paper experiment sweeps (conf/experiment/): one for the smoke budget, five for the
    cpu budget (0-4: the batch-size study's seeds, so its runs at the default setting are the
    first 60k-100k sequences of these), else three."""
    return {"smoke": "1", "cpu": "0,1,2,3,4"}.get(str(budget), "1,2,3")


def paper_models(budget: str) -> str:
    """The models a paper experiment sweeps: the two NTMs at the cpu budget, else the LSTM baseline too."""
    return "ntm_ff,ntm_lstm" if str(budget) == "cpu" else "ntm_ff,ntm_lstm,lstm"


def _parallel_jobs() -> int:
    from .sweep import parallel_jobs  # jobs the joblib launcher runs at once (conf/hydra/launcher/joblib.yaml)

    return parallel_jobs()


# conf/hydra/launcher/joblib.yaml stands in for the joblib plugin's config of the same name on
# purpose (a sensible n_jobs) and is still checked against the plugin's schema: not news to users
warnings.filterwarnings("ignore", message=r"(?s).*hydra/launcher/joblib' is validated against ConfigStore schema")

if not OmegaConf.has_resolver("ntm_parallel_jobs"):
    OmegaConf.register_new_resolver("ntm_parallel_jobs", _parallel_jobs)
if not OmegaConf.has_resolver("ntm_paper_seeds"):
    OmegaConf.register_new_resolver("ntm_paper_seeds", paper_seeds)
if not OmegaConf.has_resolver("ntm_paper_models"):
    OmegaConf.register_new_resolver("ntm_paper_models", paper_models)
if not OmegaConf.has_resolver("ntm_run_dir"):
    OmegaConf.register_new_resolver("ntm_run_dir", _resolve_run_dir)
register_configs()


__all__ = ["config_dir", "paper_models", "paper_seeds"]
