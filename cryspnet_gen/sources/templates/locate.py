"""Which template store a call uses: a store or library folder, ``$CRYSPNET_GEN_TEMPLATES``, or the shipped
prototype library.

:func:`resolve_store` is what generation asks: an explicit store wins, then the environment variable, then the
prototype library shipped in the package (``cryspnet_gen.bundles/prototypes-mp-v1``), so template candidates are
on by default on a fresh install. ``source="cryspnet"`` turns templates off.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryspnet_gen.bundle import bundles_root
from cryspnet_gen.sources.templates.prototypes import LIBRARY_MANIFEST, PrototypeLibrary, load_library
from cryspnet_gen.sources.templates.store import (
    ENV_VAR,
    STORE_TABLE,
    TemplateStore,
    TemplateStoreError,
    load_store_folder,
)

__all__ = [
    "BENCH_LIBRARY",
    "DEFAULT_LIBRARY",
    "available_libraries",
    "load_store",
    "resolve_store",
    "shipped_library",
]

# $CRYSPNET_GEN_TEMPLATES values that turn the default library off (templates only when a store is passed).
_OFF = ("none", "off", "0", "false")
#: The prototype library used when no store is given (all Materials Project data).
DEFAULT_LIBRARY = "prototypes-mp-v1"
#: Its benchmark variant: no formula of the MPTS-52 / MP-20 validation and test sets.
BENCH_LIBRARY = "prototypes-bench"


def available_libraries() -> list[str]:
    """Names of the prototype libraries shipped in ``cryspnet_gen.bundles``."""
    root = bundles_root()
    if root is None:
        return []
    return sorted(
        p.name for p in root.iterdir() if (p / LIBRARY_MANIFEST).is_file() and p.name.startswith("prototypes")
    )


def shipped_library(name: str = DEFAULT_LIBRARY) -> PrototypeLibrary | None:
    """A shipped prototype library by name, or ``None`` when the package has none of that name."""
    root = bundles_root()
    if root is None or not (root / name / LIBRARY_MANIFEST).is_file():
        return None
    return load_library(root / name)


def load_store(path: str | os.PathLike[str]) -> TemplateStore:
    """Open a template store folder, a prototype library folder, or a shipped library by name."""
    folder = Path(path).expanduser()
    if (folder / LIBRARY_MANIFEST).is_file() and not (folder / STORE_TABLE).is_file():
        return load_library(folder)
    if not folder.exists() and str(path) in available_libraries():
        library = shipped_library(str(path))
        assert library is not None
        return library
    return load_store_folder(folder)


def resolve_store(
    templates: TemplateStore | str | os.PathLike[str] | None, *, default: bool = True
) -> TemplateStore | None:
    """A store from an argument, else from ``$CRYSPNET_GEN_TEMPLATES``, else the shipped prototype library
    (``default=True``), else ``None``. ``CRYSPNET_GEN_TEMPLATES=none`` turns the default library off."""
    if isinstance(templates, TemplateStore):
        return templates
    if templates is not None:
        return load_store(templates)
    env = os.environ.get(ENV_VAR)
    if env and env.strip().lower() in _OFF:
        return None
    if env:
        return load_store(env)
    if not default:
        return None
    try:
        return shipped_library()
    except TemplateStoreError:
        raise
