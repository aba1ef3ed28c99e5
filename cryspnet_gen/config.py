"""Where cryspnet-gen finds its data and keeps its caches.

The data folder is resolved, in order, from an explicit argument, the ``CRYSPNET_GEN_DATA_DIR`` environment
variable, and ``../shared/data`` relative to the current working directory. Caches go under
``CRYSPNET_GEN_CACHE_DIR`` or ``~/.cache/cryspnet-gen``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

DATA_DIR_ENV = "CRYSPNET_GEN_DATA_DIR"
CACHE_DIR_ENV = "CRYSPNET_GEN_CACHE_DIR"
DEFAULT_DATA_DIR = Path("..") / "shared" / "data"


class DataDirError(FileNotFoundError):
    """The data folder (or a file expected in it) is missing."""


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None, *, must_exist: bool = True) -> Path:
    """Return the data folder to read.

    Parameters
    ----------
    data_dir
        Explicit folder; wins over the environment variable and the default.
    must_exist
        Raise :class:`DataDirError` with a hint when the folder does not exist.
    """
    if data_dir is not None:
        path, origin = Path(data_dir), "--data-dir"
    elif os.environ.get(DATA_DIR_ENV):
        path, origin = Path(os.environ[DATA_DIR_ENV]), f"${DATA_DIR_ENV}"
    else:
        path, origin = DEFAULT_DATA_DIR, "the default"
    path = path.expanduser()
    if must_exist and not path.is_dir():
        raise DataDirError(
            f"data folder {str(path)!r} (from {origin}) does not exist: pass --data-dir DIR or set "
            f"{DATA_DIR_ENV} to a folder laid out like ../shared/data (see its README.md)"
        )
    return path


def cache_dir(create: bool = True) -> Path:
    """Return the cache folder (``$CRYSPNET_GEN_CACHE_DIR`` or ``~/.cache/cryspnet-gen``)."""
    root = os.environ.get(CACHE_DIR_ENV)
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "cryspnet-gen"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def cached_json(name: str, build: Callable[[], Any]) -> Any:
    """``build()``'s JSON-serialisable result, kept in the cache folder as ``<name>.json`` (put the versions of
    what it depends on in ``name``). A missing or unreadable file is rebuilt; a cache folder that cannot be
    written just means building again next time."""
    path = cache_dir(create=False) / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    value = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(value))
        tmp.replace(path)
    except OSError:
        pass
    return value


def package_version(name: str) -> str:
    """Installed version of a distribution (``"unknown"`` when it has no metadata), without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"
