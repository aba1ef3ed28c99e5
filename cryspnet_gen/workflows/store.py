"""Where workflows and their results live: an embedded store folder (no server), or MongoDB.

Embedded store
--------------
A folder (``--store DIR``, else ``$CRYSPNET_GEN_STORE``, else ``$XDG_DATA_HOME/cryspnet-gen/store``, i.e.
``~/.local/share/cryspnet-gen/store``) holding::

    launchpad.json   the FireWorks LaunchPad database (mongomock, in mongomock-persistence's format)
    jobs.json        jobflow JobStore documents (job outputs)
    data.json        jobflow's additional "data" store (trajectories, ionic steps)
    *.bak            the last good copy of each of them (``cryspnet-gen restore`` puts it back)
    holder.json      who is writing the store now (see :mod:`~cryspnet_gen.workflows.lock`)
    launches/        FireWorks launch folders

How it works, and why:

- The embedded LaunchPad runs on a mongomock client built here from the checked contents of ``launchpad.json``,
  so fireworks itself keeps pymongo (a real ``--launchpad`` still works in the same process) and each store
  reads its own file. mongomock-persistence's exit-time write is never armed: the file is written explicitly.
- Every file is read strictly and written atomically with a backup (:mod:`~cryspnet_gen.workflows.storefiles`):
  a damaged file is refused with one line naming it and the remedy, never skipped or replaced by an empty store.
- Writers (``submit``, ``run``, ``restore``) lock the store folder (:class:`~cryspnet_gen.workflows.lock.StoreLock`)
  for as long as they have it open and wait (bounded) for each other; ``run`` hands the store to waiting
  processes between jobs and re-reads it afterwards. The LaunchPad file is written when the store is closed,
  after every job of ``run`` and before a hand-over.
- Readers (``status``, ``results``) take no lock: they read the last snapshot, which is always whole because
  every file is replaced atomically, and never write.
- Paths inside the store are relative to it (job outputs are found through the store being run), so a store
  folder can be moved or copied.

Limits: POSIX only (``fcntl``); ``flock`` is not reliable on some network file systems, so keep the store on a
local disk; one writer at a time per store (use MongoDB for many workers); every write serialises the whole
database, which is fine for thousands of jobs, not millions; open stores from one thread.

MongoDB
-------
``open_store(launchpad="my_launchpad.yaml")`` reads the file as ``LaunchPad.from_file`` does (a short server
selection timeout is added unless the file sets one, and the server is pinged at once, so an unreachable host
fails in seconds) and uses jobflow's configured ``JOB_STORE`` (``$JOBFLOW_CONFIG_FILE`` or ``~/.jobflow.yaml``),
exactly as atomate2 users set them up; no lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryspnet_gen.workflows.errors import (
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    describe_holder,
)
from cryspnet_gen.workflows.lock import StoreLock, WaitCallback
from cryspnet_gen.workflows.storefiles import (
    DATA_FILE,
    DB_NAME,
    JOBS_FILE,
    LAUNCHPAD_FILE,
    AtomicJSONStore,
    FileState,
    active_store,
    backup_path,
    check_file,
    check_store,
    clean_stray_files,
    corrupt_error,
    embedded_job_store,
    empty_server_store,
    remedy_for,
    set_aside,
    store_files_present,
    write_atomic,
)

__all__ = [
    "DATA_FILE",
    "DEFAULT_WAIT",
    "JOBS_FILE",
    "LAUNCHPAD_FILE",
    "MONGO_TIMEOUT_MS",
    "STORE_ENV",
    "AtomicJSONStore",
    "StoreCorruptError",
    "StoreError",
    "StoreHandle",
    "StoreLock",
    "StoreLockedError",
    "default_store_dir",
    "embedded_job_store",
    "open_store",
    "quiet_fireworks_loggers",
    "resolve_store_dir",
    "restore_store",
]

logger = logging.getLogger(__name__)

STORE_ENV = "CRYSPNET_GEN_STORE"
MONGOMOCK_ENV = "MONGOMOCK_SERVERSTORE_FILE"
LAUNCH_DIR = "launches"
#: Seconds a writer waits for another one by default (``run`` hands the store over between jobs).
DEFAULT_WAIT = 600.0
#: pymongo's server selection timeout for ``--launchpad`` files that set none (pymongo's own is 30 s).
MONGO_TIMEOUT_MS = 5000


# ----------------------------------------------------------------------------------------------------------
# folders


def default_store_dir() -> Path:
    """``$XDG_DATA_HOME/cryspnet-gen/store`` (``~/.local/share/cryspnet-gen/store`` when XDG is unset)."""
    base = os.environ.get("XDG_DATA_HOME")
    root = Path(base).expanduser() if base else Path.home() / ".local" / "share"
    return root / "cryspnet-gen" / "store"


def resolve_store_dir(store: str | os.PathLike[str] | None = None) -> Path:
    """The embedded store folder: ``store``, else ``$CRYSPNET_GEN_STORE``, else :func:`default_store_dir`."""
    if store is not None:
        path = Path(store)
    elif os.environ.get(STORE_ENV):
        path = Path(os.environ[STORE_ENV])
    else:
        path = default_store_dir()
    return path.expanduser().absolute()


# ----------------------------------------------------------------------------------------------------------
# launchpads


def quiet_fireworks_loggers() -> None:
    """Stop FireWorks' and jobflow's loggers from also propagating to the root logger.

    Both give their loggers their own stdout handlers (FireWorks at the level asked for, with the logger itself
    at DEBUG), so with a root handler (``logging.basicConfig``) every line, DEBUG included, would print twice.
    """
    for name in ("launchpad", "rocket.launcher", "rocket", "fireworks.utilities.fw_serializers", "jobflow"):
        logging.getLogger(name).propagate = False


def _embedded_launchpad(databases: dict[str, Any]) -> Any:
    """A LaunchPad on a mongomock client holding ``databases`` (a checked ``launchpad.json``)."""
    from unittest import mock

    import fireworks.core.launchpad as fw_launchpad
    import mongomock.gridfs
    import mongomock_persistence  # noqa: F401 - adds to_dict/from_dict to mongomock's stores
    from mongomock import MongoClient as MockClient
    from mongomock.store import DatabaseStore

    # LaunchPad opens a GridFS on its database; gridfs only accepts pymongo databases unless told otherwise
    # (this widens gridfs's type checks for the process, as fireworks does in mongomock mode).
    mongomock.gridfs.enable_gridfs_integration()
    quiet_fireworks_loggers()
    server_store = empty_server_store()
    from_dict = DatabaseStore.from_dict  # type: ignore[attr-defined]  # added by mongomock-persistence
    server_store._databases = {name: from_dict(db) for name, db in databases.items()}

    def client(*args: Any, **kwargs: Any) -> Any:
        return MockClient(_store=server_store)

    with mock.patch.object(fw_launchpad, "MongoClient", client):
        return fw_launchpad.LaunchPad(name=DB_NAME, strm_lvl="WARNING")


def _read_settings(path: Path) -> Any:
    import json

    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            return json.loads(text)
        return YAML(typ="safe", pure=True).load(text)
    except (OSError, UnicodeDecodeError, ValueError, YAMLError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"launchpad file {path} cannot be read: {reason}") from None


def _mongo_settings(path: Path) -> dict[str, Any]:
    data = _read_settings(path)
    if not isinstance(data, dict) or not data.get("host"):
        raise StoreError(f"launchpad file {path} has no 'host': see workflows/my_launchpad.yaml for its keys")
    kwargs = dict(data.get("mongoclient_kwargs") or {})
    kwargs.setdefault("serverSelectionTimeoutMS", MONGO_TIMEOUT_MS)
    return {**data, "mongoclient_kwargs": kwargs}


def _mongo_launchpad(launchpad_file: str | os.PathLike[str]) -> Any:
    import pymongo
    import pymongo.errors
    from fireworks import LaunchPad
    from fireworks.core import launchpad as fw_launchpad

    quiet_fireworks_loggers()
    path = Path(launchpad_file).expanduser()
    if not path.is_file():
        raise StoreError(f"launchpad file {str(path)!r} does not exist (see workflows/my_launchpad.yaml)")
    if fw_launchpad.MongoClient is not pymongo.MongoClient:
        raise StoreError(
            f"fireworks was imported in mongomock mode (${MONGOMOCK_ENV} or MONGOMOCK_SERVERSTORE_FILE in "
            f"FW_config.yaml), so {path} would not reach MongoDB: unset it to use --launchpad"
        )
    settings = _mongo_settings(path)
    where = "the URI" if settings.get("uri_mode") else f"{settings['host']}:{settings.get('port') or 27017}"
    seconds = settings["mongoclient_kwargs"]["serverSelectionTimeoutMS"] / 1000
    try:
        lpad = LaunchPad.from_dict(settings)
        lpad.connection.admin.command("ping")
    except (pymongo.errors.PyMongoError, ValueError, TypeError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        reason = text.split(" (configured timeouts")[0].split(", Timeout:")[0][:200]
        raise StoreError(
            f"cannot reach the MongoDB of {path} ({where}) within {seconds:g} s: {reason}; check that the "
            "server is running and the host, port and credentials in that file"
        ) from None
    return lpad


# ----------------------------------------------------------------------------------------------------------
# the handle


@dataclass
class StoreHandle:
    """An open workflow store: a FireWorks LaunchPad plus where jobflow keeps job outputs.

    Attributes
    ----------
    launchpad
        The ``fireworks.LaunchPad`` (for an embedded store it is replaced when the store is re-read).
    folder
        The embedded store folder, ``None`` for MongoDB.
    spec_store
        The jobflow ``JobStore`` written into each Firework's spec (the embedded store's files, by bare name),
        or ``None`` to let the machine that runs a job use its own configured ``JOB_STORE`` (MongoDB).
    readonly
        Opened for reading: nothing is written back.
    busy
        For a read-only embedded store: details of the process writing it now, if any (this is then the last
        snapshot it wrote).
    interrupted
        For a read-only embedded store that nobody is writing: the record of the last writer if it stopped
        without closing the store (killed), else ``None``.
    lock
        The lock of a writable embedded store.
    wait
        Seconds to wait for the store when it is handed over (``run``).
    on_wait
        Called while waiting (see :class:`~cryspnet_gen.workflows.lock.StoreLock`).
    """

    launchpad: Any
    folder: Path | None
    spec_store: Any | None
    readonly: bool
    busy: dict[str, Any] | None = None
    interrupted: dict[str, Any] | None = None
    lock: StoreLock | None = None
    wait: float = DEFAULT_WAIT
    on_wait: WaitCallback | None = None
    _saved: tuple[int, int, int] | None = None
    _stale: bool = False

    @property
    def embedded(self) -> bool:
        return self.folder is not None

    @property
    def location(self) -> str:
        """Where the store is, for messages."""
        if self.folder is not None:
            return str(self.folder)
        lp = self.launchpad
        return f"MongoDB {lp.host}:{lp.port}/{lp.name}" if not lp.uri_mode else f"MongoDB {lp.name}"

    def launch_dir(self) -> Path:
        """Where ``run`` puts FireWorks launch folders (the store's ``launches/``, or the current folder)."""
        if self.folder is None:
            return Path.cwd()
        path = self.folder / LAUNCH_DIR
        path.mkdir(parents=True, exist_ok=True)
        return path

    def active(self) -> contextlib.AbstractContextManager[None]:
        """Inside this block, jobs write their outputs into this store (whatever path their spec names)."""
        return active_store(self.folder) if self.folder is not None else contextlib.nullcontext()

    def job_store(self) -> Any:
        """A connected jobflow ``JobStore`` holding the job outputs (freshly read for an embedded store)."""
        if self.folder is not None:
            store = embedded_job_store(self.folder, read_only=True)
        else:
            from jobflow import SETTINGS
            from maggma.stores import MemoryStore

            store = SETTINGS.JOB_STORE
            if isinstance(store.docs_store, MemoryStore):
                logger.warning(
                    "jobflow's JOB_STORE is an in-memory store: set JOBFLOW_CONFIG_FILE to a jobflow.yaml "
                    "pointing at the MongoDB that your workers write (see workflows/jobflow.yaml)"
                )
        store.connect()
        return store

    def _signature(self) -> tuple[int, int, int] | None:
        assert self.folder is not None
        try:
            st = os.stat(self.folder / LAUNCHPAD_FILE)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def flush(self) -> None:
        """Write the embedded LaunchPad database to disk, atomically (no-op for MongoDB or read-only)."""
        if (
            self.folder is None
            or self.readonly
            or self._stale
            or (self.lock is not None and not self.lock.held)
        ):
            return  # a hand-over that did not finish: everything was saved before it
        import bson.json_util

        server_store = self.launchpad.connection._store
        write_atomic(self.folder / LAUNCHPAD_FILE, bson.json_util.dumps(server_store.to_dict()))
        self._saved = self._signature()

    def handover(self) -> bool:
        """Let processes waiting for this (writable, embedded) store in, then take it back and re-read it.

        Returns whether the store was handed over. :class:`StoreLockedError` when it could not be taken back
        within :attr:`wait` seconds (everything was saved before).
        """
        if self.lock is None or self.readonly or not self.lock.waiters():
            return False
        self.flush()
        self._stale = True  # until re-read: never written back (an interruption here must not save it)
        self.lock.handover(wait=self.wait, on_wait=self.on_wait)
        self.reload()
        return True

    def reload(self, *, force: bool = False) -> None:
        """Re-read ``launchpad.json`` if another process has written it since we last saved (or ``force``:
        in any case, dropping what changed in memory since)."""
        if self.folder is None:
            return
        if force or self._signature() != self._saved:
            state = check_file(self.folder / LAUNCHPAD_FILE)
            if not state.ok:
                raise corrupt_error(state)
            self.launchpad = _embedded_launchpad(state.parsed)
            self._saved = self._signature()
        self._stale = False


# ----------------------------------------------------------------------------------------------------------
# opening


def _missing_launchpad(folder: Path, states: dict[str, FileState]) -> StoreError | None:
    """Why a folder without ``launchpad.json`` must not be taken for an empty store (``None``: it may)."""
    lp = folder / LAUNCHPAD_FILE
    evidence = [
        f"{name} holds {s.count} document(s)" if s.ok else f"{name} {s.problem}"
        for name, s in states.items()
        if name != LAUNCHPAD_FILE and s.problem != "is missing" and (s.count or not s.ok)
    ]
    if backup_path(lp).exists():
        evidence.append(f"{backup_path(lp).name} exists")
    if not evidence:
        return None
    return StoreCorruptError(lp, f"is missing although {' and '.join(evidence)}", remedy_for(lp))


def _open_reader(folder: Path) -> StoreHandle:
    states = check_store(folder) if folder.is_dir() else {}
    if not states or states[LAUNCHPAD_FILE].problem == "is missing":
        error = _missing_launchpad(folder, states) if states else None
        raise error or StoreError(
            f"no workflow store at {folder} (no {LAUNCHPAD_FILE} there): submit a workflow first, or pass "
            f"--store DIR (or set ${STORE_ENV}) or --launchpad FILE"
        )
    for state in states.values():
        if not state.ok:
            raise corrupt_error(state)
    lock = StoreLock(folder)
    busy = lock.active_holder()
    return StoreHandle(
        launchpad=_embedded_launchpad(states[LAUNCHPAD_FILE].parsed),
        folder=folder,
        spec_store=None,
        readonly=True,
        busy=busy,
        interrupted=None if busy is not None else lock.stale_holder(),
    )


def _prepare_writer(folder: Path, *, force_new: bool) -> dict[str, Any] | None:
    """Check (and if need be create) the files of a locked store; its LaunchPad database, ``None`` when new."""
    stray = clean_stray_files(folder)
    if stray:
        logger.info("removed %d temporary file(s) of interrupted saves: %s", len(stray), stray)
    if force_new:
        kept = set_aside(folder, store_files_present(folder), "old")
        if kept:
            logger.warning("started a new store in %s; the old files are kept as %s", folder, kept)
        states = check_store(folder)
    else:
        states = check_store(folder)
        if states[LAUNCHPAD_FILE].problem == "is missing":
            error = _missing_launchpad(folder, states)
            if error is not None:
                raise error
        else:
            for state in states.values():
                if not state.ok:
                    raise corrupt_error(state)
    for name, state in states.items():
        if not state.ok:  # a new store (the LaunchPad is made by the caller)
            if name != LAUNCHPAD_FILE:
                write_atomic(folder / name, "[]")
        elif _read_or_none(backup_path(state.path)) != state.raw:  # a kill left the backup behind
            write_atomic(backup_path(state.path), state.raw or b"", backup=False)
    lp = states[LAUNCHPAD_FILE]
    return dict(lp.parsed) if lp.ok else None


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


@contextlib.contextmanager
def _open_writer(
    folder: Path, *, wait: float, force_new: bool, on_wait: WaitCallback | None
) -> Iterator[StoreHandle]:
    if folder.exists() and not folder.is_dir():
        raise StoreError(f"the workflow store {folder} is a file, not a folder: pass --store DIR")
    folder.mkdir(parents=True, exist_ok=True)
    lock = StoreLock(folder)
    lock.acquire(wait=wait, on_wait=on_wait)
    try:
        lock.clean_markers()
        databases = _prepare_writer(folder, force_new=force_new)
        handle = StoreHandle(
            launchpad=_embedded_launchpad(databases or {}),
            folder=folder,
            spec_store=embedded_job_store(None, read_only=False),
            readonly=False,
            lock=lock,
            wait=wait,
            on_wait=on_wait,
        )
        if databases is None:
            handle.launchpad.reset("", require_password=False)
            handle.flush()
            logger.info("created an embedded workflow store at %s", folder)
        else:
            handle._saved = handle._signature()
        try:
            yield handle
        finally:
            handle.flush()
    finally:
        lock.release()


@contextlib.contextmanager
def open_store(
    store: str | os.PathLike[str] | None = None,
    *,
    launchpad: str | os.PathLike[str] | None = None,
    readonly: bool = False,
    wait: float = DEFAULT_WAIT,
    force_new: bool = False,
    on_wait: WaitCallback | None = None,
) -> Iterator[StoreHandle]:
    """Open the workflow store (see the module docstring).

    Parameters
    ----------
    store
        Embedded store folder (default ``$CRYSPNET_GEN_STORE`` or ``~/.local/share/cryspnet-gen/store``).
    launchpad
        A FireWorks ``my_launchpad.yaml`` for MongoDB instead of the embedded store.
    readonly
        Only read (``status``, ``results``): no lock is taken and nothing is written back.
    wait
        Seconds to wait for another writer before raising :class:`StoreLockedError`.
    force_new
        Start a new embedded store even if the folder holds one (damaged or not); its files are renamed
        ``<name>.old-<time>``, not deleted.
    on_wait
        Called as ``on_wait(holder, waited, wait)`` when waiting starts and every 30 s (default: a log line).

    Yields
    ------
    StoreHandle
        Closed (and, when embedded and writable, saved and unlocked) on exit, also on errors.

    Raises
    ------
    StoreCorruptError
        A store file is missing or damaged (nothing is changed).
    StoreLockedError
        Another process kept the store for longer than ``wait``.
    StoreError
        No store there (read-only), an unreachable MongoDB, or another unusable setting.
    """
    if launchpad is not None:
        if store is not None:
            raise StoreError("give either an embedded store folder (--store) or a launchpad file, not both")
        yield StoreHandle(
            launchpad=_mongo_launchpad(launchpad), folder=None, spec_store=None, readonly=readonly
        )
        return
    folder = resolve_store_dir(store)
    if readonly:
        yield _open_reader(folder)
        return
    with _open_writer(folder, wait=wait, force_new=force_new, on_wait=on_wait or _log_wait) as handle:
        yield handle


def _log_wait(holder: dict[str, Any], waited: float, limit: float) -> None:
    logger.warning(
        "waiting for %s to release the workflow store (%.0f of %.0f s)",
        describe_holder(holder),
        waited,
        limit,
    )


def restore_store(
    store: str | os.PathLike[str] | None = None,
    *,
    wait: float = DEFAULT_WAIT,
    on_wait: WaitCallback | None = None,
) -> tuple[list[str], bool]:
    """Restore the damaged or missing files of an embedded store from their backups (under its lock).

    Returns one line per file and whether the store is whole afterwards (see
    :func:`~cryspnet_gen.workflows.storefiles.restore_files`).
    """
    from cryspnet_gen.workflows.storefiles import restore_files

    folder = resolve_store_dir(store)
    if not folder.is_dir() or not store_files_present(folder):
        raise StoreError(f"no workflow store at {folder}: nothing to restore")
    lock = StoreLock(folder)
    lock.acquire(wait=wait, on_wait=on_wait or _log_wait)
    try:
        clean_stray_files(folder)
        return restore_files(folder)
    finally:
        lock.release()
