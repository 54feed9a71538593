# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The audit trail: append-only JSON lines, each carrying the hash of the line before it.

Editing, removing or reordering a line breaks the chain at that line, and ``verify`` names it.

The chain alone can be recomputed by whoever rewrites the file, so it is anchored outside the run
directory: with a controller key (``<home>/audit.key``, 0600, created on first use by the driver;
``<home>`` is the directory holding ``runs/``), every entry also carries an HMAC of its hash
(``mac``), and the trail's head (sequence number, hash, HMAC) is kept in
``<home>/audit-anchors/<run id>.json``. Without the key nobody can write a MAC that verifies, so a
trail rewritten with recomputed hashes, cut short, or stripped of its MACs fails ``verify``.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
from datetime import datetime, timezone

from ansible_collections.release.rollback.plugins.module_utils import safefs as _safefs

GENESIS = "sha256:" + "0" * 64
KEY_FILE = "audit.key"
ANCHORS = "audit-anchors"


def _home(path):
    """``<home>`` of the trail ``<home>/runs/<run id>/audit.jsonl``."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(path))))


def key_file(path):
    """Where the controller key of the trail ``path`` lives (outside its run directory)."""
    return os.path.join(_home(path), KEY_FILE)


def anchor_file(path):
    """Where the anchored head of the trail ``path`` lives (outside its run directory)."""
    run_id = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return os.path.join(_home(path), ANCHORS, run_id + ".json")


def ensure_key(home):
    """Create the controller key ``<home>/audit.key`` (0600, never through a link) unless it exists."""
    path = os.path.join(home, KEY_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        _safefs.refuse_link(path, "this tool")
        return path
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (os.urandom(32).hex() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_key(path):
    """The key for the trail ``path``, or None when this controller has none."""
    try:
        text = _safefs.read_text(key_file(path), 4096)
    except OSError:
        return None
    return text.strip().encode("ascii") if text and text.strip() else None


def mac(key, text):
    return "hmac-sha256:" + hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def _anchor_text(run_id, seq, head_hash):
    return "anchor:%s:%d:%s" % (run_id, seq, head_hash)


def _write_anchor(path, key, seq, head_hash):
    anchor = anchor_file(path)
    directory = os.path.dirname(anchor)
    if not os.path.isdir(directory):
        _safefs.make_private_dir(directory)
    run_id = os.path.basename(os.path.dirname(os.path.abspath(path)))
    doc = {"run_id": run_id, "seq": seq, "hash": head_hash, "mac": mac(key, _anchor_text(run_id, seq, head_hash))}
    _safefs.write_file(anchor, json.dumps(doc, sort_keys=True) + "\n", mode=0o600)


def read_anchor(path):
    try:
        text = _safefs.read_text(anchor_file(path), 65536)
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return {"malformed": True}


def entry_hash(entry):
    """The hash of an entry's content (every field but ``hash`` and ``mac``)."""
    body = {k: v for k, v in entry.items() if k not in ("hash", "mac")}
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
    """Append one entry; returns it. ``fields`` must not hold secrets.

    Several processes may append to one trail at once (a trigger's duplicate lands while the run that
    trigger found asks for approval): the head is read, the line written and the anchor replaced under
    an exclusive lock on the trail, so each entry chains to the one before it and none is lost.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        prev, count = head(path)
        entry = {
            "seq": count + 1,
            "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "event": event,
        }
        entry.update(fields)
        entry["prev"] = prev
        entry.pop("mac", None)
        entry["hash"] = entry_hash(entry)
        key = read_key(path)
        if key:
            entry["mac"] = mac(key, entry["hash"])
        line = (json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str) + "\n").encode("utf-8")
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(28, "No space left on device (the audit line was written in part)")
            os.fsync(fd)
            if key:
                _write_anchor(path, key, entry["seq"], entry["hash"])
        except OSError:
            # A full disk: the line and its anchor go together or not at all, so what was written before
            # stays a valid, anchored trail.
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)  # and the lock with it
    return entry


def verify(path, expected_head=None):
    """Check the chain and its anchor.

    Returns ``{"ok": bool, "entries": n, "broken_at": line or None, "problem": str, "anchored": bool}``.
    ``expected_head`` (``{"hash": ..., "seq": ...}`` kept elsewhere, e.g. in state.json) also catches
    the removal of the last lines. With the controller key, every MAC and the anchored head are checked.
    """
    result = _verify_chain(path, expected_head)
    result["anchored"] = False
    last = result.pop("_last", None)
    if not result["ok"]:
        return result
    anchor = read_anchor(path)
    key = read_key(path)
    if key is None:
        if anchor is not None:
            result.update(
                ok=False,
                problem="the trail is anchored, but the controller key %s is missing: verify it "
                "on the controller that recorded it" % key_file(path),
            )
        # A copy away from its controller, or a trail recorded without a key: the chain alone is checked.
        return result
    if anchor is None and not _has_macs(path):
        return result  # recorded before this controller had a key
    n = result["entries"]
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate((x for x in fh if x.strip()), 1):
            entry = json.loads(line)
            if not hmac.compare_digest(str(entry.get("mac")), mac(key, entry["hash"])):
                result.update(
                    ok=False,
                    broken_at=lineno,
                    problem="line %d does not carry the controller key's MAC: "
                    "it was rewritten (hashes recomputed without the key)" % lineno,
                )
                return result
    if anchor is None:
        result.update(
            ok=False,
            problem="the trail carries the controller key's MACs but its anchor %s is missing: "
            "it was removed" % anchor_file(path),
        )
        return result
    run_id = os.path.basename(os.path.dirname(os.path.abspath(path)))
    good = isinstance(anchor.get("seq"), int) and hmac.compare_digest(
        str(anchor.get("mac")), mac(key, _anchor_text(run_id, anchor["seq"], str(anchor.get("hash"))))
    )
    if not good:
        result.update(ok=False, problem="the anchor %s was altered: its MAC does not match" % anchor_file(path))
    elif anchor["seq"] != n or anchor.get("hash") != last:
        result.update(
            ok=False,
            broken_at=min(n, anchor["seq"]) + (0 if anchor["seq"] > n else 1),
            problem="the trail has %d entries but its anchor recorded %d: lines were removed or added "
            "without the key" % (n, anchor["seq"]),
        )
    else:
        result["anchored"] = True
    return result


def _has_macs(path):
    with open(path, encoding="utf-8") as fh:
        return any('"mac":' in line for line in fh)


def _verify_chain(path, expected_head=None):
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
    return {"ok": True, "entries": n, "broken_at": None, "problem": "", "_last": prev}
