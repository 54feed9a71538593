"""Every file, link and directory under a tree, to prove that a dry run changed nothing at all.

A directory's mtime is part of its state: a lock, candidate or temporary file that was created and
removed again still changes it, so "byte-for-byte unchanged" covers what came and went too.
"""

from __future__ import annotations

import hashlib
import os
from fnmatch import fnmatch
from pathlib import Path

# What the demo fleet's own services write while they run (their logs and pid files): not the fleet's state.
SERVICE_FILES = ("hosts/*/run", "hosts/*/run/*", "lb/lb.log", "lb/lb.pid")


def tree_state(root: Path, ignore: tuple[str, ...] = SERVICE_FILES) -> dict[str, tuple]:
    """relative path -> (kind, content hash or link target, mode, mtime_ns) for everything under ``root``."""
    root = Path(root)
    out: dict[str, tuple] = {}

    def skipped(rel: str) -> bool:
        return any(fnmatch(rel, pattern) for pattern in ignore)

    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        st = os.lstat(dirpath)
        out[rel_dir] = ("dir", None, st.st_mode, st.st_mtime_ns)
        kept = []
        for name in dirnames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if skipped(rel):
                continue
            if os.path.islink(os.path.join(dirpath, name)):
                link = os.lstat(os.path.join(dirpath, name))
                out[rel] = ("link", os.readlink(os.path.join(dirpath, name)), link.st_mode, link.st_mtime_ns)
            else:
                kept.append(name)
        dirnames[:] = kept
        for name in filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if skipped(rel):
                continue
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path), st.st_mode, st.st_mtime_ns)
            else:
                with open(path, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
                out[rel] = ("file", digest, st.st_mode, st.st_mtime_ns)
    return out


def changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """What differs between two ``tree_state`` results, one line per path (empty: nothing changed)."""
    out = []
    for rel in sorted(set(before) | set(after)):
        if rel not in after:
            out.append(f"{rel}: removed")
        elif rel not in before:
            out.append(f"{rel}: created ({after[rel][0]})")
        elif before[rel] != after[rel]:
            out.append(f"{rel}: {before[rel]} -> {after[rel]}")
    return out
