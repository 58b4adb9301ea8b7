"""Progress bars (tqdm), off when stderr is not a terminal unless DEEPPATCH_PROGRESS=1."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def progress_enabled(enable: bool | None = None) -> bool:
    if enable is not None:
        return enable
    env = os.environ.get("DEEPPATCH_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "no", "")
    return sys.stderr.isatty()


def progress(total: int | None = None, desc: str = "", unit: str = "it", enable: bool | None = None,
             leave: bool = False, **kwargs) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, disable=not progress_enabled(enable), leave=leave,
                dynamic_ncols=True, **kwargs)
