"""What a regular install ships: a wheel of the project, built offline, holds every file of the
package and every config under conf/ (a cluster node installs it with `pip install .`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_every_config_and_every_file_of_the_package(tmp_path):
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("ntm_experiments", "conf", "hydra_plugins"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "--no-index", "-w", str(tmp_path / "wheel"), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "wheel").glob("ntm_experiments-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())

    configs = {"ntm_experiments/conf/" + p.relative_to(source / "conf").as_posix()
               for p in (source / "conf").rglob("*.yaml")}
    assert "ntm_experiments/conf/hydra/launcher/slurm.yaml" in configs  # two folders down
    assert sorted(configs - shipped) == []
    package = {p.relative_to(source).as_posix() for p in (source / "ntm_experiments").rglob("*") if p.is_file()}
    assert "ntm_experiments/data/figure_curves.csv" in package
    assert sorted(package - shipped) == []  # modules of every subpackage, the data, the native core's source
    plugin = {p.relative_to(source).as_posix() for p in (source / "hydra_plugins").rglob("*.py")}
    assert "hydra_plugins/ntm_stacked_launcher/stacked_launcher.py" in plugin
    assert sorted(plugin - shipped) == []  # hydra/launcher=stacked, where Hydra's plugin scan looks
