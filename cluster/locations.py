"""Where xalign reads shared data and keeps its caches.

Every path a user can move is an environment variable, so the same code works in a checkout,
under `ray job submit --working-dir .` and in a container image.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class DataNotFoundError(FileNotFoundError):
    """The shared corpora are not where XALIGN_DATA (or the default) says."""


def cache_dir() -> Path:
    """Root of xalign's caches (converted models, compiled ops): `XALIGN_CACHE` or ~/.cache/xalign."""
    root = Path(os.environ.get("XALIGN_CACHE") or Path.home() / ".cache" / "xalign").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_cache() -> Path:
    path = cache_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_root(required: bool = True) -> Path | None:
    """The shared corpora: `XALIGN_DATA`, else `../shared/data` beside the checkout."""
    env = os.environ.get("XALIGN_DATA")
    candidate = Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "data"
    if candidate.is_dir():
        return candidate.resolve()
    if required:
        hint = "XALIGN_DATA" if env else "XALIGN_DATA is unset and the default ../shared/data"
        raise DataNotFoundError(
            f"shared data not found: {hint} points to {candidate}, which is not a directory. "
            "Set XALIGN_DATA to the folder holding flores200/, ntrex128/, wmt22/ and instructions/."
        )
    return None


def resolve_data_path(path: str | Path) -> Path:
    """A recipe path: absolute, relative to the cwd if it exists, else relative to the data root."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    root = data_root()
    assert root is not None
    return root / p


def comet_python() -> Path:
    """The interpreter of the isolated COMET environment (`cluster/setup.sh` builds `.venv-comet`)."""
    return Path(os.environ.get("XALIGN_COMET_PYTHON") or REPO_ROOT / ".venv-comet" / "bin" / "python")
