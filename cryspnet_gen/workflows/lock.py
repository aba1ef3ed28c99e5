"""The lock of an embedded workflow store: an exclusive ``flock`` on the store folder itself.

Why the folder: a lock file can be deleted while it is held, and the next process then locks a new file and
writes beside the holder. The folder cannot be swapped under the holder: after locking, the path is checked to
still name the locked folder (a folder moved or replaced meanwhile is locked again under its new identity). The
kernel drops the lock when the holder exits, however it exits.

``holder.json`` in the folder says who holds the lock (pid, command, host, since); it is written after the lock
is taken, removed when the lock is released, believed only while its process holds the lock, and replaced by the
next holder. One left behind (its process was killed) is how ``status`` knows that work was interrupted;
deleting it does no harm.

Waiting: a process that finds the store taken waits (bounded) and leaves a marker ``.waiting.<host>.<pid>``;
a long-running holder (``run``) looks for markers between jobs and hands the store over (:meth:`handover`), so a
``submit`` waits for one job, not for the whole run.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryspnet_gen.workflows.errors import StoreError, StoreLockedError
from cryspnet_gen.workflows.storefiles import write_atomic

__all__ = ["HOLDER_FILE", "StoreLock", "WaitCallback"]

HOLDER_FILE = "holder.json"
WAITING_PREFIX = ".waiting."
#: A waiter refreshes its marker this often; markers older than MARKER_STALE seconds are ignored.
MARKER_REFRESH = 5.0
MARKER_STALE = 30.0
POLL = 0.1

#: ``on_wait(holder, waited_seconds, limit_seconds)``: called when waiting starts and every ``report_every`` s.
WaitCallback = Callable[[dict[str, Any], float, float], None]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _command() -> str:
    if not sys.argv or not sys.argv[0]:
        return "python"
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


class StoreLock:
    """An exclusive lock on an embedded store folder (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.holder_path = self.folder / HOLDER_FILE
        self._fd: int | None = None
        self._marker = self.folder / f"{WAITING_PREFIX}{socket.gethostname()}.{os.getpid()}"

    @property
    def held(self) -> bool:
        return self._fd is not None

    # ------------------------------------------------------------------------------------------------------

    def _try_lock(self) -> int | None:
        """A descriptor of the folder, locked, if the lock is free and the path still names that folder."""
        import fcntl

        try:
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            raise StoreError(f"the workflow store folder {self.folder} was moved or removed") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            now = os.stat(self.folder)
        except FileNotFoundError:
            now = None
        mine = os.fstat(fd)
        if now is None or (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
            fcntl.flock(fd, fcntl.LOCK_UN)  # the folder was moved away: lock what the path names now
            os.close(fd)
            if now is None:
                raise StoreError(f"the workflow store folder {self.folder} was moved or removed")
            return None
        return fd

    def acquire(
        self, *, wait: float = 0.0, on_wait: WaitCallback | None = None, report_every: float = 30.0
    ) -> None:
        """Take the lock, waiting up to ``wait`` seconds; :class:`StoreLockedError` if it stays taken."""
        if self._fd is not None:
            raise StoreError(f"the lock of {self.folder} is already held by this object")
        start = time.monotonic()
        next_touch = start
        next_report = start + 1.0  # a hand-over between jobs takes less: say nothing about it
        try:
            while True:
                fd = self._try_lock()
                if fd is not None:
                    break
                now = time.monotonic()
                waited = now - start
                if waited >= wait:
                    raise StoreLockedError(self.folder, self.holder(), waited)
                if now >= next_touch:
                    with contextlib.suppress(OSError):
                        self._marker.touch()
                    next_touch = now + MARKER_REFRESH
                if on_wait is not None and now >= next_report:
                    on_wait(self.holder(), waited, wait)
                    next_report = now + report_every
                time.sleep(POLL)
        finally:
            with contextlib.suppress(OSError):
                self._marker.unlink()
        self._fd = fd
        record = {
            "pid": os.getpid(),
            "command": _command(),
            "host": socket.gethostname(),
            "since": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        write_atomic(self.holder_path, json.dumps(record), backup=False)

    def release(self) -> None:
        """Remove the holder record and release the lock."""
        import fcntl

        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._read_record().get("pid") == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    self.holder_path.unlink()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def handover(self, *, wait: float, on_wait: WaitCallback | None = None) -> bool:
        """If other processes wait for the store, release it, let one of them in, and take it back.

        The caller must have saved everything first and must re-read the store afterwards. Returns whether the
        lock was handed over.
        """
        if self._fd is None or not self.waiters():
            return False
        self.release()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and self.waiters():
            time.sleep(0.05)  # a waiter polls every POLL s and removes its marker once it holds the lock
        self.acquire(wait=wait, on_wait=on_wait)
        return True

    # ------------------------------------------------------------------------------------------------------

    def _read_record(self) -> dict[str, Any]:
        try:
            record = json.loads(self.holder_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def holder(self) -> dict[str, Any]:
        """The holder's details, or ``{}`` when unknown.

        From ``holder.json`` while its process lives; else (the record was deleted, or is not written yet) from
        the kernel's table of locks, ``/proc/locks``, where Linux has one.
        """
        record = self._read_record()
        pid = record.get("pid")
        if isinstance(pid, int) and (record.get("host") != socket.gethostname() or _pid_alive(pid)):
            return record
        return self._kernel_holder()

    def _kernel_holder(self) -> dict[str, Any]:
        try:
            st = os.stat(self.folder)
            table = Path("/proc/locks").read_text(encoding="ascii").splitlines()
        except (OSError, UnicodeDecodeError):
            return {}
        key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in table:
            fields = line.split()
            if len(fields) >= 6 and fields[1] == "FLOCK" and fields[3] == "WRITE" and fields[5] == key:
                pid = int(fields[4])
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    command = " ".join([Path(argv[0].decode()).name, *(a.decode() for a in argv[1:] if a)])
                except (OSError, UnicodeDecodeError, IndexError):
                    command = "?"
                return {"pid": pid, "command": command, "host": socket.gethostname()}
        return {}

    def active_holder(self) -> dict[str, Any] | None:
        """The holder's details if a process holds the lock now, else ``None`` (does not take the lock)."""
        import fcntl

        try:
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return None
        try:
            # A shared lock succeeds only when no writer holds the exclusive one; released at once.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self.holder()
        finally:
            os.close(fd)  # closing drops the shared lock too
        return None

    def stale_holder(self) -> dict[str, Any] | None:
        """The record of a process that stopped while it held the store (killed), if no one holds it now."""
        record = self._read_record()
        if not record or self.active_holder() is not None:
            return None
        return record

    def clean_markers(self) -> int:
        """Remove the waiting markers of processes of this host that have gone (killed while waiting)."""
        removed = 0
        prefix = f"{WAITING_PREFIX}{socket.gethostname()}."
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.folder):
                pid = entry.name.removeprefix(prefix)
                if entry.name.startswith(prefix) and pid.isdigit() and not _pid_alive(int(pid)):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed += 1
        return removed

    def waiters(self) -> int:
        """How many other processes are waiting for the lock now."""
        count = 0
        now = time.time()
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.folder):
                if not entry.name.startswith(WAITING_PREFIX) or entry.path == str(self._marker):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if now - entry.stat().st_mtime < MARKER_STALE:
                        count += 1
        return count
