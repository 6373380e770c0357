"""Which code made a run: vaelab's version and, where vaelab runs from a git checkout, its
commit and whether it had uncommitted changes. Recorded in the run's W&B config (beside W&B's
own record of the working directory's repository) so a figure links back to its code.

Only the standard library here.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from vaelab import __version__


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), *args],
                                capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):  # no git on this machine
        return None
    return result.stdout.strip() if result.returncode == 0 else None


@functools.cache
def code_state() -> dict[str, str | bool | None]:
    """``vaelab_version``, ``vaelab_git_commit`` and ``vaelab_git_dirty`` (tracked files changed
    since that commit); the git entries are None for an installed wheel, outside any checkout."""
    commit = _git("rev-parse", "HEAD")
    changes = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"vaelab_version": __version__, "vaelab_git_commit": commit, "vaelab_git_dirty": None if changes is None else bool(changes)}
