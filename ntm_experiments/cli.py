"""Console scripts. Configuration mistakes end in one line on stderr and exit code 2.

Hydra normally prints a multi-line report for a bad override; we ask it to raise
instead (HYDRA_FULL_ERROR) and print one line naming the bad value and what is allowed.
Set HYDRA_FULL_ERROR=1 yourself to see Hydra's full report and stack trace.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from typing import Callable

from hydra.errors import HydraException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from .config import ConfigError

_DETAIL = re.compile(r"^\s*(full_key|object_type|reference_type|Config search path|provider=|To append)")


def _allowed_keys(error: BaseException) -> str:
    """For an unknown key, the keys its dataclass schema does allow."""
    schema = getattr(error, "object_type", None)
    if isinstance(error, (ConfigKeyError, ConfigAttributeError)) and dataclasses.is_dataclass(schema):
        return f" (allowed: {', '.join(f.name for f in dataclasses.fields(schema))})"
    return ""


def one_line(error: BaseException) -> str:
    """Condense a Hydra/OmegaConf/our error (and its causes) into a single line."""
    link: BaseException | None = error
    while link is not None:  # our own messages are already one clear line
        if isinstance(link, ConfigError):
            return str(link)
        link = link.__cause__ or link.__context__
    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__
    parts: list[str] = []
    suffix = "".join(_allowed_keys(link) for link in chain)
    for link in chain:
        lines = [ln.strip() for ln in str(link).splitlines()]
        text, options = [], []
        for ln in lines:
            if not ln or _DETAIL.match(ln):
                continue
            if ln.startswith("Available options"):
                text.append(ln.rstrip(":").lower() + ":")
                continue
            if text and text[-1].endswith(":") and re.fullmatch(r"[\w./-]+", ln):
                options.append(ln)
                continue
            text.append(ln)
        if options:
            text[-1] = f"{text[-1]} {', '.join(options)}"
        message = " ".join(text).rstrip(".")
        message = message.replace("Key '", "key '").replace("is not in struct", "is not a known setting")
        if message and message not in parts:
            parts.append(message)
    return (": ".join(parts) if parts else "unknown error") + suffix


def run_cli(entry: Callable[[], object], prog: str) -> None:
    user_wants_full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        entry()
    except (ConfigError, HydraException, OmegaConfBaseException) as error:
        if user_wants_full_error:
            raise
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the last checkpoint is kept (resume=true continues it)", file=sys.stderr)
        sys.exit(130)


def train() -> None:
    from .train import main

    run_cli(main, "ntm-train")
