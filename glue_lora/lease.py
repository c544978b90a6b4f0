"""One owner per directory: an exclusive lock plus an owner file with a heartbeat.

The training process holds the lease on its run directory for its whole life, so a second trainer (from any
sweep, a rerun of a killed sweep, or by hand) refuses with one line naming the holder, even when the first
one is an orphan whose sweep parent died.

Two mechanisms, because each covers the other's gap:
- `fcntl.flock` on `<dir>/.lock`: the kernel drops it when the holder dies, however it dies (kill -9 too).
- `<dir>/owner.json` (host, pid, start, heartbeat) refreshed by a daemon thread: tells people who holds the
  directory, and guards filesystems shared between machines where flock may not reach the other host; an
  owner whose pid is dead (same host) or whose heartbeat is older than `stale_after` is taken over.

Torch-free; used by train.py and reusable by any backend that claims a directory (e.g. per-run claims).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from glue_lora.errors import UsageError

LOCK_FILE, OWNER_FILE = ".lock", "owner.json"
HEARTBEAT_S, STALE_AFTER_S = 30.0, 300.0


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: float
    heartbeat: float
    purpose: str = ""

    def describe(self) -> str:
        age = max(0.0, time.time() - self.heartbeat)
        return f"pid {self.pid} on {self.host}" + (f" ({self.purpose})" if self.purpose else "") + \
            f", heartbeat {age:.0f} s ago"

    def is_stale(self, stale_after: float = STALE_AFTER_S) -> bool:
        """Dead on this host, or silent for longer than `stale_after` (another host, or a hung process)."""
        if self.host == socket.gethostname() and not _alive(self.pid):
            return True
        return time.time() - self.heartbeat > stale_after


class Busy(UsageError):
    """The directory is held by a live owner; the message is one line naming it."""

    def __init__(self, directory: Path, holder: Holder | None):
        self.directory, self.holder = directory, holder
        who = holder.describe() if holder else "another process"
        super().__init__(f"{directory} is in use by {who}; wait for it to finish or stop that process "
                         "(a second writer would corrupt the run)")


def read_holder(directory: Path) -> Holder | None:
    """Who the owner file names (it may be stale: check `is_stale`); None when nobody or unreadable."""
    try:
        data = json.loads((Path(directory) / OWNER_FILE).read_text(encoding="utf-8"))
        return Holder(**{k: data[k] for k in ("host", "pid", "started", "heartbeat")},
                      purpose=str(data.get("purpose", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Lease:
    """A held lease; `release()` (or leaving `hold`) gives it back. The kernel releases the lock if we die."""

    def __init__(self, directory: Path, fd: int, purpose: str, heartbeat_s: float):
        self.directory, self._fd = Path(directory), fd
        now = time.time()
        self.holder = Holder(socket.gethostname(), os.getpid(), now, now, purpose)
        self._stop = threading.Event()
        self._write_owner()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True,
                                        name=f"lease-heartbeat {directory}")
        self._thread.start()

    def release(self) -> None:
        if self._fd < 0:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        if _owner_is(self.directory, self.holder):
            (self.directory / OWNER_FILE).unlink(missing_ok=True)
        os.close(self._fd)  # closing drops the flock
        self._fd = -1

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self._write_owner()
            except OSError:
                pass  # a full disk must not kill training; the flock still guards this host

    def _write_owner(self) -> None:
        self.holder = Holder(**{**asdict(self.holder), "heartbeat": time.time()})
        path = self.directory / OWNER_FILE
        tmp = path.with_name(f".{OWNER_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self.holder)) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def acquire(directory: Path, purpose: str = "", stale_after: float = STALE_AFTER_S,
            heartbeat_s: float = HEARTBEAT_S) -> Lease:
    """Take the lease on `directory` (created if missing), taking over a stale owner; raises Busy otherwise."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # a concurrent taker can swap the lock file under us: retry on a new one
        fd = _open_lock(directory)
        if not _try_flock(fd):
            os.close(fd)
            holder = read_holder(directory)
            if holder is None or not holder.is_stale(stale_after):
                raise Busy(directory, holder)
            # the holder is gone but something (a forked child) still holds the old lock file: replace it
            (directory / LOCK_FILE).unlink(missing_ok=True)
            continue
        if not _same_file(fd, directory / LOCK_FILE):
            os.close(fd)
            continue
        holder = read_holder(directory)
        if holder and holder.host != socket.gethostname() and not holder.is_stale(stale_after):
            os.close(fd)  # another machine holds it through a filesystem where our flock does not reach it
            raise Busy(directory, holder)
        return Lease(directory, fd, purpose, heartbeat_s)
    raise Busy(directory, read_holder(directory))


@contextmanager
def hold(directory: Path, purpose: str = "", stale_after: float = STALE_AFTER_S,
         heartbeat_s: float = HEARTBEAT_S) -> Iterator[Lease]:
    lease = acquire(directory, purpose, stale_after, heartbeat_s)
    try:
        yield lease
    finally:
        lease.release()


def _open_lock(directory: Path) -> int:
    return os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _owner_is(directory: Path, holder: Holder) -> bool:
    found = read_holder(directory)
    return found is not None and (found.host, found.pid, found.started) == (holder.host, holder.pid, holder.started)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
