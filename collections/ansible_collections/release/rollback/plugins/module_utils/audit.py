# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The audit trail: append-only JSON lines, each carrying the hash of the line before it.

Editing, removing or reordering a line breaks the chain at that line, and ``verify`` names it.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone

GENESIS = "sha256:" + "0" * 64


def entry_hash(entry):
    """The hash of an entry's content (every field but ``hash``)."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def head(path):
    """``(hash, count)`` of the last entry, or ``(GENESIS, 0)`` for an empty trail."""
    if not os.path.exists(path):
        return GENESIS, 0
    last, count = None, 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if line:
                last, count = line, count + 1
    if last is None:
        return GENESIS, 0
    try:
        return json.loads(last).get("hash", GENESIS), count
    except ValueError:
        return GENESIS, count


def append(path, event, **fields):
    """Append one entry; returns it. ``fields`` must not hold secrets."""
    prev, count = head(path)
    entry = {
        "seq": count + 1,
        "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "event": event,
    }
    entry.update(fields)
    entry["prev"] = prev
    entry["hash"] = entry_hash(entry)
    line = json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return entry


def verify(path, expected_head=None):
    """Check the chain. Returns ``{"ok": bool, "entries": n, "broken_at": line or None, "problem": str}``.

    ``expected_head`` (``{"hash": ..., "seq": ...}`` kept elsewhere, e.g. in state.json) also catches
    the removal of the last lines.
    """
    if not os.path.exists(path):
        return {"ok": False, "entries": 0, "broken_at": None, "problem": "no audit trail at %s" % path}
    prev = GENESIS
    n = 0
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            n += 1
            try:
                entry = json.loads(line)
            except ValueError:
                return {
                    "ok": False,
                    "entries": n,
                    "broken_at": lineno,
                    "problem": "line %d is not JSON" % lineno,
                }
            if entry.get("hash") != entry_hash(entry):
                return {
                    "ok": False,
                    "entries": n,
                    "broken_at": lineno,
                    "problem": "line %d was edited: its content no longer matches its hash" % lineno,
                }
            if entry.get("prev") != prev:
                return {
                    "ok": False,
                    "entries": n,
                    "broken_at": lineno,
                    "problem": "line %d does not follow line %d: a line was edited, removed or reordered"
                    % (lineno, lineno - 1),
                }
            if entry.get("seq") != n:
                return {
                    "ok": False,
                    "entries": n,
                    "broken_at": lineno,
                    "problem": "line %d has sequence number %s, expected %d" % (lineno, entry.get("seq"), n),
                }
            prev = entry["hash"]
    if expected_head and (expected_head.get("seq") or 0) > n:
        return {
            "ok": False,
            "entries": n,
            "broken_at": n + 1,
            "problem": "the trail ends at line %d but the run recorded %d entries: lines were removed"
            % (n, expected_head["seq"]),
        }
    if expected_head and expected_head.get("seq") == n and expected_head.get("hash") not in (None, prev):
        return {
            "ok": False,
            "entries": n,
            "broken_at": n,
            "problem": "line %d is not the entry the run recorded last" % n,
        }
    return {"ok": True, "entries": n, "broken_at": None, "problem": ""}
