"""The files of an embedded workflow store: read strictly, written atomically with a backup, restorable.

Every file (``launchpad.json``, ``jobs.json``, ``data.json``) is

- read strictly: a file that is missing, not UTF-8, not JSON or of the wrong shape raises
  :class:`~cryspnet_gen.workflows.errors.StoreCorruptError` naming the file, the problem and the remedy; it is
  never skipped, rewritten or replaced by an empty one;
- written atomically (a temporary file ``.<name>.<pid>.tmp`` renamed over it), and then copied the same way to
  ``<name>.bak``, so that the last good copy survives a file damaged in place (truncated, overwritten, deleted);
  a kill between the two leaves a good file and an older backup, which the next writer brings up to date;
- restored from its backup by :func:`restore_files` (``cryspnet-gen restore``), which keeps the damaged file
  beside it as ``<name>.damaged-<time>``.

Job outputs are written by the jobs themselves through :class:`AtomicJSONStore`. Its path inside a Firework's
spec is the bare file name, resolved at run time against the store being run (:func:`active_store`), so a store
folder can be moved or copied: a copy writes into itself, under its own lock.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maggma.stores import JSONStore

from cryspnet_gen.workflows.errors import StoreCorruptError, StoreError

__all__ = [
    "BACKUP_SUFFIX",
    "DATA_FILE",
    "DB_NAME",
    "JOBS_FILE",
    "LAUNCHPAD_FILE",
    "STORE_FILES",
    "AtomicJSONStore",
    "FileState",
    "active_store",
    "backup_path",
    "check_file",
    "check_store",
    "clean_stray_files",
    "embedded_job_store",
    "empty_server_store",
    "parse_docs",
    "parse_launchpad",
    "remedy_for",
    "restore_files",
    "set_aside",
    "store_files_present",
    "write_atomic",
]

LAUNCHPAD_FILE = "launchpad.json"
JOBS_FILE = "jobs.json"
DATA_FILE = "data.json"
STORE_FILES = (LAUNCHPAD_FILE, JOBS_FILE, DATA_FILE)
BACKUP_SUFFIX = ".bak"
DB_NAME = "cryspnet_gen"
#: Collections every FireWorks LaunchPad database has after ``LaunchPad.reset``.
LAUNCHPAD_COLLECTIONS = ("fireworks", "workflows", "launches", "fw_id_assigner")
_STRAY = re.compile(r"^\.(launchpad|jobs|data)\.json(\.bak)?\.\d+\.tmp$|^\.holder\.json\.\d+\.tmp$")

#: The store folder whose jobs are being run in this context (set by ``run_local``): job-store paths that are
#: bare file names resolve against it.
ACTIVE_STORE: ContextVar[Path | None] = ContextVar("cryspnet_gen_active_store", default=None)


@contextlib.contextmanager
def active_store(folder: Path) -> Iterator[None]:
    """Resolve the job stores of the Fireworks run inside this block against ``folder``."""
    token = ACTIVE_STORE.set(Path(folder))
    try:
        yield
    finally:
        ACTIVE_STORE.reset(token)


# ----------------------------------------------------------------------------------------------------------
# writing


def backup_path(path: Path) -> Path:
    """``<name>.bak`` beside ``path``."""
    return path.with_name(path.name + BACKUP_SUFFIX)


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _replace_with(path: Path, data: bytes, *, sync: bool) -> None:
    tmp = _tmp_path(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        if sync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_atomic(path: Path, data: bytes | str, *, backup: bool = True) -> None:
    """Replace ``path`` by ``data`` in one rename, then (``backup``) its ``.bak`` copy the same way."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    _replace_with(path, raw, sync=True)
    if backup:
        _replace_with(backup_path(path), raw, sync=False)


# ----------------------------------------------------------------------------------------------------------
# strict reading


def _decode(raw: bytes) -> str:
    if not raw.strip():
        raise ValueError("is empty" if not raw else "holds only blanks")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"is not UTF-8 text (byte {exc.start} is {raw[exc.start]:#04x}): damaged") from None


def _json_type(obj: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(obj), "a number"
    )


def parse_launchpad(raw: bytes) -> dict[str, Any]:
    """The LaunchPad database of a ``launchpad.json`` (mongomock-persistence's format), checked.

    Raises
    ------
    ValueError
        Saying what is wrong (``"is not valid JSON (...)"``, ``"has no id counter ..."``).
    """
    import bson.json_util

    text = _decode(raw)
    try:
        data = bson.json_util.loads(text)
    except ValueError as exc:
        raise ValueError(f"is not valid JSON, perhaps cut short ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"holds {_json_type(data)} instead of the LaunchPad's databases")
    db = data.get(DB_NAME)
    if not isinstance(db, dict):
        raise ValueError(f"has no {DB_NAME!r} database" + (" (it is an empty object)" if not data else ""))
    docs: dict[str, list[dict[str, Any]]] = {}
    for name in LAUNCHPAD_COLLECTIONS:
        coll = db.get(name)
        pairs = coll.get("documents") if isinstance(coll, dict) else None
        if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[1], dict) for p in pairs
        ):
            raise ValueError(f"has no readable {name!r} collection")
        docs[name] = [p[1] for p in pairs]
    _check_ids(docs)
    return data


def _check_ids(docs: dict[str, list[dict[str, Any]]]) -> None:
    counters = docs["fw_id_assigner"]
    if len(counters) != 1 or not all(
        isinstance(counters[0].get(k), int) for k in ("next_fw_id", "next_launch_id")
    ):
        raise ValueError(f"has {'no' if not counters else 'a malformed'} id counter (fw_id_assigner)")
    fw_ids = [fw.get("fw_id") for fw in docs["fireworks"]]
    launch_ids = [la.get("launch_id") for la in docs["launches"]]
    if not all(isinstance(i, int) for i in [*fw_ids, *launch_ids]):
        raise ValueError("has a Firework or launch without an integer id")
    if fw_ids and max(fw_ids) >= counters[0]["next_fw_id"]:  # type: ignore[type-var]
        raise ValueError(f"has an id counter ({counters[0]['next_fw_id']}) behind its Fireworks")
    if launch_ids and max(launch_ids) >= counters[0]["next_launch_id"]:  # type: ignore[type-var]
        raise ValueError(f"has a launch counter ({counters[0]['next_launch_id']}) behind its launches")
    known = set(fw_ids)
    for wf in docs["workflows"]:
        nodes = wf.get("nodes")
        if not isinstance(nodes, list) or not set(nodes) <= known:
            raise ValueError(f"has a workflow ({wf.get('name', '?')}) whose Fireworks are missing")


def parse_docs(raw: bytes) -> list[dict[str, Any]]:
    """The documents of a ``jobs.json`` / ``data.json`` (a JSON list of objects), checked.

    Raises
    ------
    ValueError
        Saying what is wrong.
    """
    import bson.json_util
    import orjson

    text = _decode(raw)
    try:
        data = bson.json_util.loads(text) if "$oid" in text else orjson.loads(raw)
    except ValueError as exc:
        raise ValueError(f"is not valid JSON, perhaps cut short ({exc})") from None
    if not isinstance(data, list):
        raise ValueError(f"holds {_json_type(data)} instead of a list of job documents")
    if not all(isinstance(d, dict) for d in data):
        raise ValueError("holds something other than job documents (JSON objects)")
    return data


@dataclass
class FileState:
    """What :func:`check_file` found.

    Attributes
    ----------
    path
        The file.
    problem
        ``None`` when it is good, else what is wrong (``"is missing"``, ``"is empty"``, ...).
    count
        Its workflows (``launchpad.json``) or documents (``jobs.json``, ``data.json``).
    raw
        Its bytes (``None`` when missing).
    parsed
        The parsed content when good.
    """

    path: Path
    problem: str | None
    count: int = 0
    raw: bytes | None = None
    parsed: Any = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_file(path: Path) -> FileState:
    """Read and check one store file (or a backup: the name before ``.bak`` decides the format)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return FileState(path, "is missing")
    except IsADirectoryError:
        return FileState(path, "is a folder, not a file")
    except OSError as exc:
        return FileState(path, f"cannot be read ({exc.strerror})")
    base = path.name.removesuffix(BACKUP_SUFFIX)
    try:
        if base == LAUNCHPAD_FILE:
            parsed: Any = parse_launchpad(raw)
            count = len(parsed[DB_NAME]["workflows"]["documents"])
        else:
            parsed = parse_docs(raw)
            count = len(parsed)
    except ValueError as exc:
        return FileState(path, str(exc), raw=raw)
    return FileState(path, None, count=count, raw=raw, parsed=parsed)


def _stamp(path: Path) -> str:
    when = datetime.datetime.fromtimestamp(path.stat().st_mtime)
    return when.isoformat(sep=" ", timespec="seconds")


def remedy_for(path: Path) -> str:
    """What to do about a damaged store file: restore its backup, or (without a good one) start afresh."""
    folder = path.parent
    bak = check_file(backup_path(path))
    if bak.ok:
        return (
            f"Restore the last good copy ({bak.path.name}, saved {_stamp(bak.path)}) with "
            f"`cryspnet-gen restore --store {folder}`."
        )
    return (
        f"There is no good backup ({bak.path.name} {bak.problem}): start a new store with "
        f"`cryspnet-gen submit --force-new --store {folder} ...`, which keeps the old files beside it."
    )


def corrupt_error(state: FileState) -> StoreCorruptError:
    """The error for a file that :func:`check_file` found bad."""
    return StoreCorruptError(state.path, str(state.problem), remedy_for(state.path))


def read_docs_file(path: Path) -> list[dict[str, Any]]:
    """The documents of a job-output file, strictly (:class:`StoreCorruptError` when missing or damaged)."""
    state = check_file(path)
    if not state.ok:
        raise corrupt_error(state)
    return list(state.parsed)


def store_files_present(folder: Path) -> list[str]:
    """Which store files, or their backups, exist in ``folder``."""
    names = [*STORE_FILES, *(n + BACKUP_SUFFIX for n in STORE_FILES)]
    return [n for n in names if (folder / n).exists()]


# ----------------------------------------------------------------------------------------------------------
# repairs (called with the store locked)


def clean_stray_files(folder: Path) -> list[str]:
    """Remove the temporary files of saves that were interrupted (only call with the store locked)."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if _STRAY.match(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(entry.name)
    return removed


def set_aside(folder: Path, names: list[str], label: str) -> list[Path]:
    """Rename each of ``names`` in ``folder`` to ``<name>.<label>-<time>`` (nothing is deleted)."""
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    moved = []
    for name in names:
        src = folder / name
        if not src.exists():
            continue
        dst = folder / f"{name}.{label}-{stamp}"
        n = 1
        while dst.exists():
            n += 1
            dst = folder / f"{name}.{label}-{stamp}-{n}"
        os.replace(src, dst)
        moved.append(dst)
    return moved


def restore_files(folder: Path) -> tuple[list[str], bool]:
    """Restore each damaged, missing or inconsistent store file from its backup (only call with the store
    locked); a file replaced is kept as ``<name>.damaged-<time>``.

    Returns
    -------
    (lines, usable)
        One line per file saying what was found and done; whether the store is whole afterwards.
    """
    lines: list[str] = []
    for name, state in check_store(folder).items():
        bak = check_file(backup_path(state.path))
        if state.ok:
            what = "workflows" if name == LAUNCHPAD_FILE else "documents"
            lines.append(f"ok        {name} ({state.count} {what})")
        elif not bak.ok:
            lines.append(f"damaged   {name} {state.problem}, and its backup {bak.problem}: cannot restore it")
        else:
            kept = set_aside(folder, [name], "damaged")
            write_atomic(state.path, bak.raw or b"", backup=False)
            where = f"; the damaged file is kept as {kept[0].name}" if kept else ""
            lines.append(
                f"restored  {name} ({state.problem}) from {bak.path.name} of {_stamp(bak.path)}{where}"
            )
    after = check_store(folder)
    for name, state in after.items():
        if not state.ok and not lines[STORE_FILES.index(name)].startswith("damaged"):
            lines.append(f"damaged   {name} {state.problem}, also after restoring: cannot restore it")
    return lines, all(state.ok for state in after.values())


def _blob_ids(obj: Any, found: set[str]) -> None:
    if isinstance(obj, dict):
        blob = obj.get("blob_uuid")
        if isinstance(blob, str) and "@class" in obj:
            found.add(blob)
        for value in obj.values():
            _blob_ids(value, found)
    elif isinstance(obj, list):
        for value in obj:
            _blob_ids(value, found)


def _completed_jobs(databases: dict[str, Any]) -> set[tuple[Any, Any]]:
    """(job uuid, index) of the COMPLETED Fireworks that run jobflow jobs."""
    done = set()
    for _, fw in databases[DB_NAME]["fireworks"]["documents"]:
        if fw.get("state") != "COMPLETED":
            continue
        tasks = (fw.get("spec") or {}).get("_tasks") or [{}]
        job = tasks[0].get("job") if isinstance(tasks[0], dict) else None
        if isinstance(job, dict) and "uuid" in job:
            done.add((job["uuid"], job.get("index", 1)))
    return done


def check_store(folder: Path) -> dict[str, FileState]:
    """:func:`check_file` of each store file, and whether they agree with each other.

    ``jobs.json`` must hold the output of every COMPLETED job of ``launchpad.json``, and ``data.json`` every
    data object that those outputs refer to; a file that does not is marked with the problem (a file of the
    right shape can still have lost its contents). Files are read in the order they are written (the LaunchPad
    last), so a snapshot taken while a run saves is consistent.
    """
    states = {name: check_file(folder / name) for name in STORE_FILES}
    lp, jobs, data = (states[name] for name in STORE_FILES)
    if lp.ok and jobs.ok:
        done = _completed_jobs(lp.parsed)
        have = {(d.get("uuid"), d.get("index", 1)) for d in jobs.parsed}
        if done - have:
            jobs.problem = f"holds no output for {len(done - have)} of the {len(done)} COMPLETED jobs"
    if lp.ok and jobs.ok and data.ok:
        # Only finished jobs count: a job writes its output before its data, and one killed in between is
        # not COMPLETED (it runs again).
        done = _completed_jobs(lp.parsed)
        refs: set[str] = set()
        _blob_ids([d for d in jobs.parsed if (d.get("uuid"), d.get("index", 1)) in done], refs)
        missing = refs - {d.get("blob_uuid") for d in data.parsed}
        if missing:
            data.problem = f"lacks {len(missing)} of the {len(refs)} data objects that jobs.json refers to"
    return states


# ----------------------------------------------------------------------------------------------------------
# the jobflow store


def empty_server_store() -> Any:
    """An empty mongomock ``ServerStore`` that reads and writes no file.

    mongomock-persistence makes every new ``ServerStore`` load ``$MONGOMOCK_SERVERSTORE_FILE`` and write it back
    at exit; a store built here never does, whatever the environment says.
    """
    from mongomock.store import ServerStore

    store = ServerStore.__new__(ServerStore)
    store._databases = {}
    store._filename = None  # type: ignore[attr-defined]  # mongomock-persistence's
    return store


class AtomicJSONStore(JSONStore):
    """maggma's file-backed :class:`~maggma.stores.JSONStore`, read strictly and written atomically.

    maggma skips a file it cannot read (with a logged error) and then writes its in-memory documents over it,
    creates a missing file empty, and writes in place. Here a missing or damaged file raises
    :class:`StoreCorruptError` and is left alone, every write is atomic with a backup, and every document is
    kept as written (maggma de-duplicates by the store key while loading, which merges a job's outputs of
    different indices). A bare file name is resolved against the store being run (:func:`active_store`).
    """

    def file_path(self) -> Path:
        """The file, resolved against the active store (see :func:`active_store`)."""
        path = Path(self.paths[0])
        active = ACTIVE_STORE.get()
        if active is not None and (
            not path.is_absolute() or (path.name in STORE_FILES and path.parent != active)
        ):
            return active / path.name
        if not path.is_absolute():
            raise StoreError(
                f"the job store file {str(path)!r} belongs to an embedded workflow store: run these jobs with "
                "`cryspnet-gen run --store DIR`"
            )
        return path

    def connect(self, force_reset: bool = False) -> None:
        from maggma.stores import MemoryStore
        from maggma.utils import to_dt

        if self._coll is not None and not force_reset:
            return
        docs = read_docs_file(self.file_path())
        MemoryStore.connect(self, force_reset=True)  # an empty in-memory collection (maggma's mongomock)
        for doc in docs:  # as maggma's read_json_file does
            stamp = doc.get(self.last_updated_field)
            if stamp:
                doc[self.last_updated_field] = to_dt(_decode_monty(stamp))
        if docs:
            self._collection.insert_many(docs)

    def update_json_file(self) -> None:
        import orjson

        data = list(self.query())
        for d in data:
            d.pop("_id", None)
        raw = orjson.dumps(data, option=self.serialization_option, default=self.serialization_default)
        write_atomic(self.file_path(), raw)


def _decode_monty(obj: Any) -> Any:
    from monty.json import MontyDecoder

    return MontyDecoder().process_decoded(obj) if isinstance(obj, dict) else obj


def embedded_job_store(folder: Path | None, *, read_only: bool) -> Any:
    """The jobflow ``JobStore`` of an embedded store (not connected).

    ``folder=None`` gives the store written into Firework specs: bare file names, resolved when the jobs run.
    """
    from jobflow import JobStore

    def path(name: str) -> str:
        return name if folder is None else str(Path(folder) / name)

    return JobStore(
        AtomicJSONStore(path(JOBS_FILE), read_only=read_only),
        additional_stores={"data": AtomicJSONStore(path(DATA_FILE), read_only=read_only)},
    )
