"""Where workflows and their results live: an embedded store folder (no server), or MongoDB.

Embedded store
--------------
A folder (``--store DIR``, else ``$CRYSPNET_GEN_STORE``, else ``$XDG_DATA_HOME/cryspnet-gen/store``, i.e.
``~/.local/share/cryspnet-gen/store``) holding::

    launchpad.json   the FireWorks LaunchPad database (mongomock, in mongomock-persistence's format)
    jobs.json        jobflow JobStore documents (job outputs)
    data.json        jobflow's additional "data" store (trajectories, ionic steps)
    lock             flock()ed by the process that writes the store; holds its pid and command
    launches/        FireWorks launch folders

How it works, and why:

- FireWorks uses mongomock when ``MONGOMOCK_SERVERSTORE_FILE`` is set *when fireworks is imported*, and then
  for every LaunchPad of the process. Instead, :func:`open_store` builds the embedded LaunchPad's client from
  mongomock directly (setting the variable only while the client reads its file), so fireworks itself keeps
  pymongo and a real ``--launchpad`` still works in the same process, and each embedded store reads its own
  file: two stores opened one after the other in one process do not see each other.
- mongomock-persistence keeps the whole database in memory and writes it back at interpreter exit, so two
  processes would overwrite each other's changes. Here the file is written explicitly, atomically
  (temporary file + rename), when the store is closed and after every job of ``run``; the exit-time write is
  disabled. Every writer takes an exclusive ``fcntl.flock`` on ``lock`` for as long as the store is open, and a
  second writer is refused with the pid and command of the holder.
- Readers (``status``, ``results``) take no lock: they read the last snapshot, which is always whole because
  every file is replaced atomically, and never write.

Limits: POSIX only (``fcntl``); ``flock`` is not reliable on some network file systems, so keep the store on a
local disk; one writer at a time per store (use MongoDB for many workers); every write serialises the whole
database, which is fine for thousands of jobs, not millions; open stores from one thread.

MongoDB
-------
``open_store(launchpad="my_launchpad.yaml")`` uses ``LaunchPad.from_file`` and jobflow's configured
``JOB_STORE`` (``$JOBFLOW_CONFIG_FILE`` or ``~/.jobflow.yaml``), exactly as atomate2 users set them up; no lock.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maggma.stores import JSONStore

__all__ = [
    "STORE_ENV",
    "AtomicJSONStore",
    "StoreError",
    "StoreHandle",
    "StoreLock",
    "StoreLockedError",
    "default_store_dir",
    "open_store",
    "resolve_store_dir",
]

logger = logging.getLogger(__name__)

STORE_ENV = "CRYSPNET_GEN_STORE"
MONGOMOCK_ENV = "MONGOMOCK_SERVERSTORE_FILE"
LAUNCHPAD_FILE = "launchpad.json"
JOBS_FILE = "jobs.json"
DATA_FILE = "data.json"
LOCK_FILE = "lock"
LAUNCH_DIR = "launches"
DB_NAME = "cryspnet_gen"


class StoreError(RuntimeError):
    """The workflow store is missing, misconfigured or unusable."""


class StoreLockedError(StoreError):
    """Another process is writing the embedded store.

    Attributes
    ----------
    folder
        The store folder.
    holder
        What the holder wrote into the lock file (``pid``, ``command``, ``host``, ``since``), possibly empty.
    """

    def __init__(self, folder: Path, holder: dict[str, Any]) -> None:
        self.folder = folder
        self.holder = holder
        if holder.get("pid"):
            who = f"process {holder['pid']} ({holder.get('command', '?')}) on {holder.get('host', '?')}"
            since = f" since {holder['since']}" if holder.get("since") else ""
        else:
            who, since = "another process", ""
        super().__init__(
            f"the workflow store {folder} is in use by {who}{since}; wait for it to finish "
            f"(or use another --store DIR). Only one process may write an embedded store at a time."
        )


# ----------------------------------------------------------------------------------------------------------
# folders


def default_store_dir() -> Path:
    """``$XDG_DATA_HOME/cryspnet-gen/store`` (``~/.local/share/cryspnet-gen/store`` when XDG is unset)."""
    base = os.environ.get("XDG_DATA_HOME")
    root = Path(base).expanduser() if base else Path.home() / ".local" / "share"
    return root / "cryspnet-gen" / "store"


def resolve_store_dir(store: str | os.PathLike[str] | None = None) -> Path:
    """The embedded store folder: ``store``, else ``$CRYSPNET_GEN_STORE``, else :func:`default_store_dir`.

    The path is made absolute: job specs refer to it from launch folders.
    """
    if store is not None:
        path = Path(store)
    elif os.environ.get(STORE_ENV):
        path = Path(os.environ[STORE_ENV])
    else:
        path = default_store_dir()
    return path.expanduser().absolute()


# ----------------------------------------------------------------------------------------------------------
# lock


class StoreLock:
    """An exclusive ``fcntl.flock`` on ``<folder>/lock`` that records who holds it.

    The kernel drops the lock when the holder exits, however it exits, so a stale lock file never blocks.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fh: Any = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def acquire(self, *, wait: float = 0.0) -> None:
        """Take the lock, waiting up to ``wait`` seconds; raise :class:`StoreLockedError` if it stays taken."""
        import fcntl

        if self._fh is not None:
            raise StoreError(f"lock {self.path} is already held by this object")
        self.folder.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the lock's lifetime
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    fh.close()
                    raise StoreLockedError(self.folder, self.holder()) from None
                time.sleep(0.2)
        info = {
            "pid": os.getpid(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
            if sys.argv and sys.argv[0]
            else "python",
            "host": socket.gethostname(),
            "since": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(info))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        """Release the lock (and clear the holder's details)."""
        import fcntl

        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            fh.seek(0)
            fh.truncate()
            fh.flush()
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()

    def holder(self) -> dict[str, Any]:
        """Details of the current holder as written in the lock file (empty when unknown)."""
        # The holder writes its details just after taking the lock: give it a moment.
        for _ in range(10):
            try:
                text = self.path.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                return {}
            if text:
                try:
                    return dict(json.loads(text))
                except ValueError:
                    pass
            time.sleep(0.05)
        return {}

    def active_holder(self) -> dict[str, Any] | None:
        """The holder's details if some process holds the lock now, else ``None`` (does not take the lock)."""
        import fcntl

        if not self.path.exists():
            return None
        with open(self.path, encoding="utf-8") as fh:
            try:
                # A shared lock succeeds only when no writer holds the exclusive one; released at once.
                fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return self.holder()
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return None


# ----------------------------------------------------------------------------------------------------------
# jobflow store


class AtomicJSONStore(JSONStore):
    """maggma's file-backed :class:`~maggma.stores.JSONStore`, written atomically and reloaded exactly.

    maggma writes the file in place, so an interrupted write would leave a truncated file that the next
    ``connect`` skips with a logged error, and the following write would then drop every earlier document.
    Here the file is written to a temporary name and renamed. Reloading also keeps every document as written
    (maggma de-duplicates by the store key, which merges a job's outputs of different indices).
    """

    def connect(self, force_reset: bool = False) -> None:
        self._loading = True
        try:
            super().connect(force_reset=force_reset)
        finally:
            self._loading = False

    def update(self, docs: list[dict] | dict, key: list | str | None = None) -> None:
        if getattr(self, "_loading", False):
            docs = docs if isinstance(docs, list) else [docs]
            if docs:
                self._collection.insert_many([dict(d) for d in docs])
            return
        super().update(docs, key=key)

    def update_json_file(self) -> None:
        import orjson

        path = Path(self.paths[0])
        data = list(self.query())
        for d in data:
            d.pop("_id", None)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(
            orjson.dumps(data, option=self.serialization_option, default=self.serialization_default)
        )
        os.replace(tmp, path)


def embedded_job_store(folder: Path, *, read_only: bool) -> Any:
    """The jobflow ``JobStore`` of an embedded store folder (not connected)."""
    from jobflow import JobStore

    return JobStore(
        AtomicJSONStore(str(folder / JOBS_FILE), read_only=read_only),
        additional_stores={"data": AtomicJSONStore(str(folder / DATA_FILE), read_only=read_only)},
    )


# ----------------------------------------------------------------------------------------------------------
# launchpads


@functools.cache
def _enable_mongomock_gridfs() -> None:
    # LaunchPad opens a GridFS on its database; gridfs only accepts pymongo databases unless told otherwise.
    # This widens gridfs's type checks once per process (it is what fireworks does in mongomock mode).
    import mongomock.gridfs

    mongomock.gridfs.enable_gridfs_integration()


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _embedded_launchpad(path: Path) -> Any:
    """A LaunchPad on a mongomock client that holds ``path``'s database (read now, written by us)."""
    from unittest import mock

    import fireworks.core.launchpad as fw_launchpad
    import mongomock_persistence  # noqa: F401 - patches mongomock's store to read/write MONGOMOCK_SERVERSTORE_FILE
    from mongomock import MongoClient as MockClient

    _enable_mongomock_gridfs()
    quiet_fireworks_loggers()
    # mongomock-persistence reads the variable when a client is created; it must not stay set, or every later
    # mongomock client of the process (maggma's memory stores, the JSONStores above) would load this database
    # and write it back at exit.
    with _environ(MONGOMOCK_ENV, str(path)), mock.patch.object(fw_launchpad, "MongoClient", MockClient):
        lpad = fw_launchpad.LaunchPad(name=DB_NAME, strm_lvl="WARNING")
    server_store = lpad.connection._store
    finalizer = getattr(server_store, "_finalizer", None)
    if finalizer is None:
        raise StoreError(
            "mongomock-persistence did not load the embedded store: install fireworks[mongomock] "
            "(mongomock-persistence) or use --launchpad FILE"
        )
    finalizer.detach()  # written by StoreHandle.flush, atomically and under the lock, never at exit
    return lpad


def _mongo_launchpad(launchpad_file: str | os.PathLike[str]) -> Any:
    import pymongo
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
    return LaunchPad.from_file(str(path))


def quiet_fireworks_loggers() -> None:
    """Stop FireWorks' and jobflow's loggers from also propagating to the root logger.

    Both give their loggers their own stdout handlers (FireWorks at the level asked for, with the logger itself
    at DEBUG), so with a root handler (``logging.basicConfig``) every line, DEBUG included, would print twice.
    """
    for name in ("launchpad", "rocket.launcher", "rocket", "fireworks.utilities.fw_serializers", "jobflow"):
        logging.getLogger(name).propagate = False


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class StoreHandle:
    """An open workflow store: a FireWorks LaunchPad plus where jobflow keeps job outputs.

    Attributes
    ----------
    launchpad
        The ``fireworks.LaunchPad``.
    folder
        The embedded store folder, ``None`` for MongoDB.
    spec_store
        The jobflow ``JobStore`` written into each Firework's spec (the embedded store's files), or ``None``
        to let the machine that runs a job use its own configured ``JOB_STORE`` (MongoDB, as in atomate2).
    readonly
        Opened for reading: nothing is written back.
    busy
        For a read-only embedded store: details of the process writing it now, if any (this is then the last
        snapshot it wrote).
    """

    launchpad: Any
    folder: Path | None
    spec_store: Any | None
    readonly: bool
    busy: dict[str, Any] | None = None

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

    def flush(self) -> None:
        """Write the embedded LaunchPad database to disk, atomically (no-op for MongoDB or read-only)."""
        if self.folder is None or self.readonly:
            return
        import bson.json_util

        server_store = self.launchpad.connection._store
        _write_atomic(self.folder / LAUNCHPAD_FILE, bson.json_util.dumps(server_store.to_dict()))


@contextlib.contextmanager
def open_store(
    store: str | os.PathLike[str] | None = None,
    *,
    launchpad: str | os.PathLike[str] | None = None,
    readonly: bool = False,
    wait: float = 0.0,
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
        Seconds to wait for another writer to finish before raising :class:`StoreLockedError`.

    Yields
    ------
    StoreHandle
        Closed (and, when embedded and writable, saved and unlocked) on exit, also on errors.
    """
    if launchpad is not None:
        if store is not None:
            raise StoreError("give either an embedded store folder (--store) or a launchpad file, not both")
        yield StoreHandle(
            launchpad=_mongo_launchpad(launchpad), folder=None, spec_store=None, readonly=readonly
        )
        return

    folder = resolve_store_dir(store)
    lp_file = folder / LAUNCHPAD_FILE
    if readonly:
        if not lp_file.is_file():
            raise StoreError(
                f"no workflow store at {folder}: submit a workflow first, or pass --store DIR "
                f"(or set ${STORE_ENV}) or --launchpad FILE"
            )
        busy = StoreLock(folder).active_holder()
        yield StoreHandle(
            launchpad=_embedded_launchpad(lp_file), folder=folder, spec_store=None, readonly=True, busy=busy
        )
        return

    lock = StoreLock(folder)
    lock.acquire(wait=wait)
    try:
        fresh = not lp_file.is_file()
        if fresh:
            _write_atomic(lp_file, "{}")
        for name in (JOBS_FILE, DATA_FILE):
            if not (folder / name).is_file():
                _write_atomic(folder / name, "[]")
        lpad = _embedded_launchpad(lp_file)
        if lpad.fw_id_assigner.count_documents({}) == 0:
            lpad.reset("", require_password=False)
            logger.info("created an embedded workflow store at %s", folder)
        handle = StoreHandle(
            launchpad=lpad,
            folder=folder,
            spec_store=embedded_job_store(folder, read_only=False),
            readonly=False,
        )
        try:
            yield handle
        finally:
            handle.flush()
    finally:
        lock.release()
