"""The controller-side lock: one rollback per environment at a time.

A lock is a JSON file created with O_EXCL under ``<runs root>/../locks/``. A holder whose process is
gone (same machine) is *stale*: its own run may take it over on resume; any other run needs an
explicit ``--break-lock``, which is audited.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .rundir import environment_of, make_private_dirs


class LockHeld(Exception):
    """Another rollback holds the environment; the message names the holder and the way out."""


def lock_name(doc: dict[str, Any], inventory: str | None = None) -> str:
    """The environment lock's name for ``doc`` (a manifest or plan): its application and its environment
    (``rundir.environment_of``)."""
    digest = hashlib.sha256(environment_of(doc, inventory).encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in (doc.get("app") or "app"))[:64]
    return f"{safe}-{digest}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(holder: dict[str, Any], now: float | None = None) -> str:
    """The holder in one phrase; ``now`` is the clock its ``since`` was written in (the ledger's), if not ours."""
    now = time.time() if now is None else now
    age = int(now - float(holder.get("since", now)))
    where = f"; see `release-rollback status {holder['run_dir']}`" if holder.get("run_dir") else ""
    return (
        f"run {holder.get('run_id')} by {holder.get('operator')} (pid {holder.get('pid')} on {holder.get('host')}, "
        f"{age // 60} min {age % 60} s ago{where})"
    )


@dataclass
class Lock:
    path: Path
    holder: dict[str, Any]
    taken_over: dict[str, Any] | None = None  # the stale holder this lock replaced, if any

    def release(self) -> None:
        try:
            current = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if current.get("token") == self.holder["token"]:
            self.path.unlink(missing_ok=True)


def check(lock_dir: Path, name: str) -> None:
    """Raise LockHeld when a live rollback holds ``name`` (planning reads hosts a rollback is changing)."""
    path = lock_dir / f"{name}.lock"
    try:
        current = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if current.get("host") != socket.gethostname() or alive(int(current.get("pid", -1))):
        raise LockHeld(
            f"another rollback holds this environment: {describe(current)}; wait for it to end, "
            "or check it with `release-rollback status`"
        )


def acquire(
    lock_dir: Path, name: str, run_id: str, operator: str, break_stale: bool = False, run_dir: str | None = None
) -> Lock:
    """Take the lock ``name`` or raise LockHeld."""
    make_private_dirs(lock_dir)
    path = lock_dir / f"{name}.lock"
    holder = {
        "run_id": run_id,
        "run_dir": run_dir,
        "operator": operator,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.time(),
        "token": os.urandom(8).hex(),
    }
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            try:
                current = json.loads(path.read_text())
            except (OSError, ValueError):
                current = {"run_id": "unknown", "operator": "unknown", "pid": -1, "host": "?", "since": 0}
            local = current.get("host") == holder["host"]
            stale = local and not alive(int(current.get("pid", -1)))
            if not stale:
                raise LockHeld(
                    f"another rollback holds this environment: {describe(current)}; wait for it to end, "
                    "or check it with `release-rollback status`"
                ) from None
            if not (break_stale or current.get("run_id") == run_id):
                raise LockHeld(
                    f"a stale lock from a dead rollback holds this environment: {describe(current)}; "
                    "if that run is really gone, run again with --break-lock (it is audited)"
                ) from None
            # Replace the stale lock atomically, then check that nobody else replaced it meanwhile.
            tmp = path.with_suffix(f".{holder['token']}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(holder, fh)
            os.replace(tmp, path)
            if json.loads(path.read_text()).get("token") == holder["token"]:
                return Lock(path, holder, taken_over=current)
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(holder, fh)
        return Lock(path, holder)
    raise LockHeld(f"the lock {path} keeps changing hands: another rollback is starting; try again")


@dataclass
class Locks:
    """Several locks held together (the ledger's and this runs home's), given back in order."""

    held: list[Any]

    @property
    def taken_over(self) -> dict[str, Any] | None:
        return next((lock.taken_over for lock in self.held if lock.taken_over), None)

    def release(self) -> None:
        for lock in self.held:
            lock.release()
