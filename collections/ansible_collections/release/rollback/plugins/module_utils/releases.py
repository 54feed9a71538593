# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Release discovery and the atomic release switch on one host.

Layout (ansistrano, Capistrano, plain versions)::

    <app_root>/current -> ./releases/<name>   (ansistrano: relative; Capistrano: absolute)
    <app_root>/releases/<name>/REVISION
    <app_root>/shared/                        (never touched)
    <app_root>/snapshots/<name>/files/<absolute path>   configuration kept outside the release

The live release is what ``readlink current`` says; releases are ordered by name (as versions when
they all look like versions), never by mtime. Pure Python, standard library only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime, timezone

UNFINISHED_MARK = "DEPLOY_UNFINISHED"  # the convention of Ansible's deploy_helper
ROLLED_BACK_MARK = "ROLLED_BACK"  # written by a rollback into the release it rolled back
BAD_MARK = "KNOWN_BAD"
_VERSIONISH = re.compile(r"^v?\d+(\.\d+)*([-+._][0-9A-Za-z.]+)?$")
_TIMESTAMP = re.compile(r"^\d{14}Z?$")


class ReleaseError(Exception):
    """A host whose release layout cannot be used; the message says why and what to do."""


def sort_key(name):
    """Order release names: numeric parts compared as numbers (1.10 > 1.9), the rest as text."""
    parts = re.split(r"(\d+)", name.lstrip("v"))
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p != ""]


def detect_layout(app_root, link):
    if os.path.isabs(link):
        return "capistrano"
    name = os.path.basename(link.rstrip("/"))
    if _TIMESTAMP.match(name):
        return "ansistrano"
    if _VERSIONISH.match(name):
        return "versions"
    return "ansistrano"


def _marks(release_dir):
    marks = []
    for mark in (UNFINISHED_MARK, ROLLED_BACK_MARK, BAD_MARK):
        if os.path.exists(os.path.join(release_dir, mark)):
            marks.append(mark)
    return marks


def discover(app_root, layout="auto", releases_dir="releases", current="current"):
    """Everything a rollback needs to know about one host's releases, in one pass."""
    app_root = os.path.abspath(app_root)
    current_path = os.path.join(app_root, current)
    rel_root = os.path.join(app_root, releases_dir)
    if not os.path.isdir(rel_root):
        raise ReleaseError(
            "%s has no %s/ directory: set rollback_app_root to the deploy_to path" % (app_root, releases_dir)
        )
    if not os.path.islink(current_path):
        raise ReleaseError("%s is not a symlink: this host has no live release to roll back from" % current_path)
    link = os.readlink(current_path)
    live = os.path.basename(os.path.normpath(link))
    target_dir = link if os.path.isabs(link) else os.path.normpath(os.path.join(app_root, link))
    if os.path.dirname(os.path.normpath(target_dir)) != os.path.normpath(rel_root):
        raise ReleaseError("%s points to %s, which is not under %s" % (current_path, link, rel_root))
    if not os.path.isdir(target_dir):
        raise ReleaseError("%s points to %s, which does not exist" % (current_path, link))
    names = sorted((n for n in os.listdir(rel_root) if os.path.isdir(os.path.join(rel_root, n))), key=sort_key)
    if layout in (None, "", "auto"):
        layout = detect_layout(app_root, link)
    marks = {n: _marks(os.path.join(rel_root, n)) for n in names}
    older = [n for n in names if sort_key(n) < sort_key(live)]
    candidates = [n for n in older if not marks[n]]
    previous = candidates[-1] if candidates else None
    revision = None
    rev_file = os.path.join(target_dir, "REVISION")
    if os.path.isfile(rev_file):
        with open(rev_file, encoding="utf-8", errors="replace") as fh:
            revision = fh.read(200).strip()
    return {
        "app_root": app_root,
        "layout": layout,
        "link": link,
        "link_style": "absolute" if os.path.isabs(link) else "relative",
        "live": live,
        "live_revision": revision,
        "releases": names,
        "marks": {n: m for n, m in marks.items() if m},
        "skipped": [n for n in older if marks[n]],
        "previous": previous,
    }


def _link_text(found_link, target):
    """The link to ``target`` written in the style of the link found (relative stays relative)."""
    return os.path.join(os.path.dirname(found_link.rstrip("/")), target)


def _atomic_symlink(link_text, path):
    tmp = "%s.rollback-tmp-%d" % (path, os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(link_text, tmp)
    os.replace(tmp, path)


def _snapshot_file(app_root, version, path):
    return os.path.join(app_root, "snapshots", version, "files", path.lstrip("/"))


def config_changes(app_root, target, config_files):
    """The configuration files outside the release that differ from ``target``'s snapshot."""
    changes = []
    for path in config_files or []:
        snap = _snapshot_file(app_root, target, path)
        if not os.path.isfile(snap):
            raise ReleaseError(
                "no snapshot of %s for release %s (expected %s): take snapshots at deploy time or remove "
                "the file from rollback_config_files" % (path, target, snap)
            )
        with open(snap, "rb") as fh:
            wanted = fh.read()
        current = None
        if os.path.exists(path):
            with open(path, "rb") as fh:
                current = fh.read()
        if current != wanted:
            changes.append({"path": path, "snapshot": snap, "before": current, "after": wanted})
    return changes


def switch(
    app_root,
    target,
    config_files=None,
    run_id=None,
    reason=None,
    releases_dir="releases",
    current="current",
    check_mode=False,
):
    """Point ``current`` at ``target`` atomically, restore configuration, mark the rolled-back release.

    Idempotent: a host already on ``target`` with its configuration restored changes nothing.
    """
    info = discover(app_root, releases_dir=releases_dir, current=current)
    app_root = info["app_root"]
    if target not in info["releases"]:
        raise ReleaseError("release %s is not on this host (it has: %s)" % (target, ", ".join(info["releases"])))
    if os.path.exists(os.path.join(app_root, releases_dir, target, UNFINISHED_MARK)):
        raise ReleaseError("release %s is marked %s: it never finished deploying" % (target, UNFINISHED_MARK))
    changes = config_changes(app_root, target, config_files)
    from_release = info["live"]
    switched = from_release != target
    result = {
        "changed": bool(switched or changes),
        "from": from_release,
        "to": target,
        "link_style": info["link_style"],
        "config_restored": [c["path"] for c in changes],
        "diff": [
            {
                "before_header": "%s (live)" % c["path"],
                "after_header": c["snapshot"],
                "before": (c["before"] or b"").decode("utf-8", "replace"),
                "after": c["after"].decode("utf-8", "replace"),
            }
            for c in changes
        ],
    }
    if check_mode:
        return result
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for c in changes:
        if c["before"] is not None:
            shutil.copy2(c["path"], "%s.rolled-back-%s" % (c["path"], from_release if switched else "previous"))
        tmp = c["path"] + ".rollback-tmp"
        shutil.copy2(c["snapshot"], tmp)
        os.replace(tmp, c["path"])
    if switched:
        mark = os.path.join(app_root, releases_dir, from_release, ROLLED_BACK_MARK)
        with open(mark, "w", encoding="utf-8") as fh:
            json.dump({"rolled_back_at": now, "run_id": run_id, "to": target, "reason": reason}, fh)
        _atomic_symlink(_link_text(info["link"], target), os.path.join(app_root, current))
    result["link"] = os.readlink(os.path.join(app_root, current))
    return result
