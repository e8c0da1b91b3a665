"""The native core's build (fast/native.py): a first use on a machine builds it, silently for 30 to
90 s, so it says so first; later uses load the cached build and say nothing."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace

from torch.utils import cpp_extension

from ntm_experiments.fast.native import SOURCE, load_extension


def test_a_build_is_announced_before_it_starts_and_a_cached_load_is_not(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))  # a machine that never built it
    source = tmp_path / "core.cpp"
    source.write_text(SOURCE.read_text())
    said_before: list[list[str]] = []

    def build(name, sources, **kwargs):  # stands in for the compiler: what had been said when it started
        said_before.append(list(caplog.messages))
        return SimpleNamespace()

    monkeypatch.setattr(cpp_extension, "load", build)
    with caplog.at_level(logging.INFO, logger="ntm_experiments.fast"):
        load_extension(source, name="ntm_test_core")
        (line,) = said_before[0]
        assert line.startswith("fast path: building the native CPU core from core.cpp, once per machine (30 to 90 s")
        assert str(tmp_path / "extensions" / "ntm_test_core") in line

        built = Path(cpp_extension._get_build_directory("ntm_test_core", verbose=False), "ntm_test_core.so")
        built.write_bytes(b"")  # what the build leaves, newer than its source: the next process only loads it
        caplog.clear()
        load_extension(source, name="ntm_test_core")
        assert said_before[1] == [] and caplog.messages == []

        source.write_text(source.read_text() + "\n// edited\n")  # an edited source is built again, and said so
        os.utime(source, ns=(built.stat().st_mtime_ns + 10**9,) * 2)  # newer than the build
        load_extension(source, name="ntm_test_core")
        assert any("building the native CPU core" in m for m in said_before[2])
