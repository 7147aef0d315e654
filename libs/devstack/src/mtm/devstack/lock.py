"""One `mtm up` per data directory: an exclusive lock that the kernel releases even when its holder is killed."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


class AlreadyRunning(RuntimeError):
    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"another `mtm up` ({holder}) is running on {path.parent}; stop it first")


class DataDirLock:
    """`flock` on `<data dir>/up.lock`, with the holder's pid written inside for the next one to name."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "up.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> DataDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Append mode: opening must not wipe the pid of a holder we are about to be refused by.
        lock_file = open(self.path, "a+")  # held open for as long as the lock is held
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip()
            lock_file.close()
            raise AlreadyRunning(self.path, int(holder) if holder.isdigit() else None) from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(str(os.getpid()))
        lock_file.flush()
        self._file = lock_file
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
