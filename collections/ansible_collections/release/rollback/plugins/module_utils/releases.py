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

import contextlib
import json
import os
import re
import shutil
import socket
import stat
from datetime import datetime, timezone

from ansible_collections.release.rollback.plugins.module_utils import safefs
from ansible_collections.release.rollback.plugins.module_utils.names import NameRuleError, check_version

UNFINISHED_MARK = "DEPLOY_UNFINISHED"  # the convention of Ansible's deploy_helper
ROLLED_BACK_MARK = "ROLLED_BACK"  # written by a rollback into the release it rolled back
BAD_MARK = "KNOWN_BAD"
LAYOUTS = ("ansistrano", "capistrano", "versions")
LOCK_FILE = ".rollback.lock"  # <app_root>/.rollback.lock: held by one rollback (or a deploy) at a time
REVISIONS_LOG = "revisions.log"  # Capistrano's deploy history in <app_root>
STALE_LOCK_SECONDS = 3600
# Module argument specs shared by the modules that read or switch a deploy directory (documented by
# the release.rollback.releases doc fragment).
DIR_ARGS = dict(
    releases_dir=dict(type="str", default="releases"),
    current_dir=dict(type="str", default="current"),
)
LAYOUT_ARGS = dict(layout=dict(type="str", default="auto", choices=["auto", "ansistrano", "capistrano", "versions"]))
SWITCH_ARGS = dict(
    DIR_ARGS,
    **LAYOUT_ARGS,
    app_root=dict(type="path", required=True),
    target=dict(type="str", required=True),
    config_files=dict(type="list", elements="path", default=[]),
    run_id=dict(type="str"),
    reason=dict(type="str"),
    user=dict(type="str"),
    remove_rolled_back=dict(type="bool", default=False),
    lock=dict(type="bool", default=False),
    break_stale_lock=dict(type="bool", default=False),
)
_VERSIONISH = re.compile(r"^v?\d+(\.\d+)*([-+._][0-9A-Za-z.]+)?$")
_TIMESTAMP = re.compile(r"^\d{14}Z?$")


class ReleaseError(Exception):
    """A host whose release layout cannot be used; the message says why and what to do."""


def sort_key(name):
    """Order release names: numeric parts compared as numbers (1.10 > 1.9), the rest as text."""
    parts = re.split(r"(\d+)", name.lstrip("v"))
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p != ""]


def detect_layout(app_root, link):
    """The deploy tool's layout, from the link and the files the tool leaves behind.

    Capistrano writes ``revisions.log`` and an absolute link to ``releases/<YYYYMMDDHHMMSS>``;
    ansistrano a relative ``./releases/<YYYYMMDDHHMMSSZ>``; anything named like ``1.4.2`` is a
    version-named layout.
    """
    name = os.path.basename(link.rstrip("/"))
    if os.path.isfile(os.path.join(app_root, REVISIONS_LOG)):
        return "capistrano"
    if _VERSIONISH.match(name) and not _TIMESTAMP.match(name):
        return "versions"
    if os.path.isabs(link):
        return "capistrano"
    return "ansistrano"


def _is_release_name(name, layout):
    """Whether ``name`` is a release of ``layout`` (a versions layout ignores other directories)."""
    if layout == "versions":
        return bool(_VERSIONISH.match(name))
    return True


def _marks(release_dir):
    marks = []
    for mark in (UNFINISHED_MARK, ROLLED_BACK_MARK, BAD_MARK):
        # lexists: a mark that is a link (even a dangling one) still marks the release.
        if os.path.lexists(os.path.join(release_dir, mark)):
            marks.append(mark)
    return marks


MAX_PASSED_OVER = 20  # entries of releases/ named in the plan as passed over (the rest are counted)


def shown(name, limit=80):
    """A name found on a host, as messages show it: escaped (newlines, control characters) and short."""
    text = repr(name) if not isinstance(name, str) or not name.isprintable() else name
    return text if len(text) <= limit else text[: limit - 3] + "..."


def release_problem(rel_root, name):
    """Why the entry ``name`` of ``releases/`` is not a release, or None when it is one.

    A release is a real directory directly inside ``releases/`` whose name passes the manifest's
    release-name rules: a link (to a directory anywhere) or a name with a newline, a ``/`` or shell
    metacharacters is passed over, whatever it points to or contains.
    """
    path = os.path.join(rel_root, name)
    try:
        st = os.lstat(path)
    except OSError:
        return "gone"
    if stat.S_ISLNK(st.st_mode):
        try:
            to = os.readlink(path)
        except OSError:
            to = "?"
        return "a symbolic link (to %s), not a release directory" % shown(to, 300)
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    try:
        check_version(name, "release")
    except NameRuleError:
        return "not a release name (letters, digits, '.', '_', '+' or '-' only)"
    return None


def _release_entries(rel_root, live, layout):
    """``(names, passed_over)``: the releases of ``rel_root`` oldest first, and the entries that look
    like releases but are not (links, hostile names), with why."""
    names, passed_over = [], {}
    for name in os.listdir(rel_root):
        why = release_problem(rel_root, name)
        if why == "not a directory" or why == "gone":
            continue
        if why:
            if len(passed_over) < MAX_PASSED_OVER:
                passed_over[shown(name)] = why
            else:
                passed_over["..."] = "and more entries that are not releases"
            continue
        if name == live or _is_release_name(name, layout):
            names.append(name)
    return sorted(names, key=sort_key), passed_over


def read_lock(app_root, now=None, stale_after=STALE_LOCK_SECONDS):
    """The lock held on ``app_root`` (its holder, and whether it looks stale), or None."""
    path = os.path.join(app_root, LOCK_FILE)
    try:
        text = safefs.read_text(path, 4096)
    except safefs.UnsafePath:
        # Never read through a link: its target could be any file of the host.
        text = "a symbolic link to %s, not a lock" % shown(os.readlink(path), 200)
    if text is None:
        return None
    try:
        holder = json.loads(text)
        if not isinstance(holder, dict):
            raise ValueError
    except ValueError:
        holder = {"raw": text.strip()[:200]}
    now = now if now is not None else datetime.now(timezone.utc).timestamp()
    age = now - os.lstat(path).st_mtime
    return dict(holder, path=path, age_seconds=int(age), stale=age > stale_after)


def lock_problem(lock, run_id=None):
    """None when ``lock`` does not stop run ``run_id``; otherwise one sentence naming the holder."""
    if not lock or (run_id and lock.get("run_id") == run_id):
        return None
    who = "run %s by %s since %s" % (lock.get("run_id"), lock.get("operator"), lock.get("time"))
    if "raw" in lock:
        who = "an unknown holder (%s)" % lock["raw"]
    if lock.get("stale"):
        return (
            "%s holds a stale lock (%s, %ds old): make sure that run is over, then remove the lock file "
            "or set rollback_break_stale_lock" % (lock["path"], who, lock["age_seconds"])
        )
    return "%s is locked by %s: another rollback or deploy is working on this application" % (lock["path"], who)


def acquire_lock(app_root, run_id, operator=None, break_stale=False):
    """Take ``<app_root>/.rollback.lock`` for ``run_id`` (re-entrant for the same run).

    Raises ReleaseError naming the holder when another run holds it.
    """
    lock = read_lock(app_root)
    if lock and lock.get("run_id") == run_id:
        return False
    if lock and lock.get("stale") and break_stale:
        os.unlink(lock["path"])
        lock = None
    problem = lock_problem(lock, run_id)
    if problem:
        raise ReleaseError(problem)
    holder = {
        "run_id": run_id,
        "operator": operator,
        "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": socket.gethostname(),
    }
    try:
        fd = os.open(os.path.join(app_root, LOCK_FILE), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        os.fchmod(fd, 0o644)
    except FileExistsError:
        raise ReleaseError(lock_problem(read_lock(app_root), run_id) or "the lock was taken meanwhile") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(holder, fh)
    return True


def release_lock(app_root, run_id):
    """Remove the lock if ``run_id`` holds it; returns whether it did."""
    lock = read_lock(app_root)
    if lock and lock.get("run_id") == run_id:
        os.unlink(lock["path"])
        return True
    return False


def claim(info, run_id, operator=None, take=True, break_stale=False, break_lock_of=(), check_mode=False):
    """Take the lock of the host ``info`` (a ``read_host`` result) for ``run_id``, after replacing the
    lock of a run in ``break_lock_of`` (runs the controller found gone or final).

    Updates ``info``'s ``lock``, ``locked``, ``lock_broken`` and ``lock_problem``; returns whether the
    host's lock file changed (or would change, in check mode). Another run's lock is never taken:
    ``lock_problem`` names it.
    """
    holder = info["lock"]
    info["lock_broken"] = None
    changed = False
    breakable_run = bool(holder and holder.get("run_id") and holder["run_id"] in break_lock_of)
    if breakable_run and (check_mode or release_lock(info["app_root"], holder["run_id"])):
        info["lock_broken"], info["lock"], info["lock_problem"] = holder, None, None
        holder, changed = None, True
    breakable = bool(break_stale and holder and holder.get("stale"))
    if take and not info["locked"] and (not info["lock_problem"] or breakable):
        if check_mode:
            return True
        try:
            acquire_lock(info["app_root"], run_id, operator=operator, break_stale=break_stale)
            info["locked"], info["lock_problem"], changed = True, None, True
        except (ReleaseError, OSError) as exc:  # taken meanwhile by another run
            info["lock_problem"] = str(exc)
    return changed


def discover(app_root, layout="auto", releases_dir="releases", current="current", run_id=None):
    """Everything a rollback needs to know about one host's releases, in one pass."""
    app_root = os.path.abspath(app_root)
    current_path = os.path.join(app_root, current)
    rel_root = os.path.join(app_root, releases_dir)
    if layout not in (None, "", "auto") and layout not in LAYOUTS:
        raise ReleaseError("unknown layout %r: choose auto, %s" % (layout, ", ".join(LAYOUTS)))
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
        raise ReleaseError("%s points to %s, which is not under %s" % (current_path, shown(link), rel_root))
    if not os.path.lexists(target_dir):
        raise ReleaseError("%s points to %s, which does not exist" % (current_path, shown(link)))
    problem = release_problem(rel_root, live)
    if problem:
        raise ReleaseError(
            "%s points to %s, which is %s: the live release must be a real directory directly inside %s"
            % (current_path, shown(link, 300), problem, rel_root)
        )
    detected = detect_layout(app_root, link)
    if layout in (None, "", "auto"):
        layout = detected
    names, passed_over = _release_entries(rel_root, live, layout)
    marks = {n: _marks(os.path.join(rel_root, n)) for n in names}
    older = [n for n in names if sort_key(n) < sort_key(live)]
    candidates = [n for n in older if not marks[n]]
    previous = candidates[-1] if candidates else None
    revision = None
    try:
        # Never read through a link: its target could be any file of the host, and this goes into the plan.
        revision = (safefs.read_text(os.path.join(target_dir, "REVISION"), 200) or "").strip() or None
    except OSError:
        revision = None
    lock = read_lock(app_root)
    record = read_record(app_root, live)
    previous_source = "discovered"
    recorded = (record or {}).get("previous")
    if recorded and recorded in older and not marks[recorded]:
        previous, previous_source = recorded, "deploy record"
    return {
        "app_root": app_root,
        "layout": layout,
        "detected_layout": detected,
        "link": link,
        "link_style": "absolute" if os.path.isabs(link) else "relative",
        "live": live,
        "live_revision": revision,
        "releases": names,
        "marks": {n: m for n, m in marks.items() if m},
        "skipped": [n for n in older if marks[n]],
        # Entries of releases/ that are not releases (links, hostile names): never a target.
        "passed_over": passed_over,
        "previous": previous,
        "previous_source": previous_source,
        "record": record,
        "lock": lock,
        "lock_problem": lock_problem(lock, run_id),
    }


def _check_target(info, rel_root, target):
    """Raise ReleaseError unless ``target`` is one of the host's releases, a real directory right now."""
    problem = None
    if target in info["releases"]:
        problem = release_problem(rel_root, target)
    elif shown(target) in (info.get("passed_over") or {}):
        problem = info["passed_over"][shown(target)]
    else:
        raise ReleaseError("release %s is not on this host (it has: %s)" % (shown(target), ", ".join(info["releases"])))
    if problem:
        raise ReleaseError(
            "release %s on this host is refused: %s/%s is %s" % (shown(target), rel_root, shown(target), problem)
        )


def _link_text(found_link, target):
    """The link to ``target`` written in the style of the link found (relative stays relative)."""
    return os.path.join(os.path.dirname(found_link.rstrip("/")), target)


def _atomic_symlink(link_text, path):
    """Point the link ``path`` at ``link_text``: a new link beside it, renamed over it (relative to the
    directory's descriptor, so the directory cannot be swapped in between)."""
    directory, name = os.path.split(path)
    tmp = "%s.rollback-tmp-%d" % (name, os.getpid())
    dfd = safefs.open_dir(directory)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dfd)  # a leftover (or planted) name is removed, never followed
        os.symlink(link_text, tmp, dir_fd=dfd)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    finally:
        os.close(dfd)


def _snapshot_file(app_root, version, path):
    return os.path.join(app_root, "snapshots", version, "files", path.lstrip("/"))


RECORD_FILE = "record.json"  # <app_root>/snapshots/<release>/record.json, written at deploy time


def read_record(app_root, release):
    """The deployment record of ``release`` (what its deploy wrote for a later rollback), or None."""
    path = os.path.join(app_root, "snapshots", release, RECORD_FILE)
    try:
        record = json.loads(safefs.read_text(path, 1 << 20) or "null")
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def take_snapshot(
    app_root,
    release=None,
    config_files=None,
    db_revision=None,
    flags=None,
    infra_ref=None,
    previous=None,
    releases_dir="releases",
    current="current",
    check_mode=False,
):
    """Record, at deploy time, what a later rollback of (or to) ``release`` needs.

    Copies the configuration files kept outside the release to ``snapshots/<release>/files/<path>``
    and writes ``snapshots/<release>/record.json``: the release it replaced, the database revision
    before the deploy, the flags it introduced, the infrastructure reference. ``release`` defaults
    to the live one; ``previous`` to the release live before it (the newest older unmarked one).
    """
    info = discover(app_root, releases_dir=releases_dir, current=current)
    app_root = info["app_root"]
    release = release or info["live"]
    if release not in info["releases"]:
        raise ReleaseError("release %s is not on this host (it has: %s)" % (release, ", ".join(info["releases"])))
    if previous is None and release == info["live"]:
        previous = info["previous"]
    copies = []
    for path in config_files or []:
        if not os.path.isfile(path):
            raise ReleaseError("%s does not exist: nothing to snapshot (remove it from rollback_config_files)" % path)
        snap = _snapshot_file(app_root, release, path)
        with open(path, "rb") as fh:
            data = fh.read()
        old = None
        if os.path.isfile(snap):
            with open(snap, "rb") as fh:
                old = fh.read()
        if old != data:
            copies.append((path, snap))
    record = {
        "release": release,
        "previous": previous,
        "config_files": list(config_files or []),
        "db_revision_before": db_revision,
        "flags": list(flags or []),
        "infra_ref": infra_ref,
    }
    old_record = read_record(app_root, release) or {}
    record_changed = {k: old_record.get(k) for k in record} != record
    result = {
        "changed": bool(copies or record_changed),
        "release": release,
        "record": record,
        "files": [c[0] for c in copies],
    }
    if check_mode or not result["changed"]:
        return result
    for path, snap in copies:
        os.makedirs(os.path.dirname(snap), exist_ok=True)
        with open(path, "rb") as fh:
            data = fh.read()
        safefs.write_file(snap, data, like=os.stat(path))
    record["recorded_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    rec_path = os.path.join(app_root, "snapshots", release, RECORD_FILE)
    os.makedirs(os.path.dirname(rec_path), exist_ok=True)
    safefs.write_file(rec_path, json.dumps(record, indent=2, sort_keys=True))
    return result


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
        try:
            # A snapshot inside the app root is a name found on the host: a link there is refused.
            wanted = safefs.read_bytes(snap)
        except safefs.UnsafePath as exc:
            raise ReleaseError(str(exc)) from None
        current = None
        if os.path.exists(path):
            with open(path, "rb") as fh:
                current = fh.read()
        if current != wanted:
            changes.append({"path": path, "snapshot": snap, "before": current, "after": wanted})
    return changes


def switch_with(params, check_mode=False, info=None):
    """``switch`` with the options of SWITCH_ARGS (the release_switch and code_rollback modules)."""
    return switch(
        params["app_root"],
        params["target"],
        config_files=params["config_files"],
        run_id=params["run_id"],
        reason=params["reason"],
        releases_dir=params["releases_dir"],
        current=params["current_dir"],
        check_mode=check_mode,
        layout=params["layout"],
        user=params["user"],
        remove_rolled_back=params["remove_rolled_back"],
        lock=params["lock"],
        break_stale_lock=params["break_stale_lock"],
        info=info,
    )


def switch(
    app_root,
    target,
    config_files=None,
    run_id=None,
    reason=None,
    releases_dir="releases",
    current="current",
    check_mode=False,
    layout="auto",
    user=None,
    remove_rolled_back=False,
    lock=False,
    break_stale_lock=False,
    info=None,
):
    """Point ``current`` at ``target`` atomically, restore configuration, mark the rolled-back release.

    Capistrano layouts get ``<user> rolled back to release <target>`` appended to ``revisions.log``.
    With ``lock`` the host's lock file is taken for ``run_id`` first (and kept: the caller releases it
    when the host is verified). Idempotent: a host already on ``target`` with its configuration
    restored changes nothing.
    """
    # ``info``: this host's discover() result when the caller already has it (one read of the layout).
    info = info or discover(app_root, layout=layout, releases_dir=releases_dir, current=current, run_id=run_id)
    app_root = info["app_root"]
    _check_target(info, os.path.join(app_root, releases_dir), target)
    if os.path.exists(os.path.join(app_root, releases_dir, target, UNFINISHED_MARK)):
        raise ReleaseError("release %s is marked %s: it never finished deploying" % (target, UNFINISHED_MARK))
    if info["lock_problem"] and not (break_stale_lock and info["lock"].get("stale")):
        raise ReleaseError(info["lock_problem"])
    changes = config_changes(app_root, target, config_files)
    from_release = info["live"]
    switched = from_release != target
    result = {
        "changed": bool(switched or changes),
        "from": from_release,
        "to": target,
        "layout": info["layout"],
        "link_style": info["link_style"],
        "config_restored": [c["path"] for c in changes],
        "removed": from_release if switched and remove_rolled_back else None,
        "revisions_log": None,
        "locked": False,
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
    if switched:
        result["diff"].insert(
            0,
            {
                "before_header": os.path.join(app_root, current),
                "after_header": os.path.join(app_root, current),
                "before": "-> %s\n" % info["link"],
                "after": "-> %s\n" % _link_text(info["link"], target),
            },
        )
    if check_mode:
        return result
    rolled_back_dir = os.path.join(app_root, releases_dir, from_release)
    mark = os.path.join(rolled_back_dir, ROLLED_BACK_MARK)
    for c in changes:
        c["kept"] = "%s.rolled-back-%s" % (c["path"], from_release if switched else "previous")
    # Every name this host's rollback writes, checked before anything changes: a link there (planted, or
    # left by anyone) fails the host with the path named, and nothing is written through it.
    safefs.refuse_links(
        [p for c in changes for p in (c["path"] + safefs.TMP_SUFFIX, c["kept"] + safefs.TMP_SUFFIX, c["kept"])]
        + ([mark, mark + safefs.TMP_SUFFIX] if switched else [])
        + ([os.path.join(app_root, REVISIONS_LOG)] if switched and info["layout"] == "capistrano" else [])
    )
    if lock:
        result["locked"] = acquire_lock(app_root, run_id, operator=user, break_stale=break_stale_lock)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for c in changes:
        live_stat = os.stat(c["path"]) if c["before"] is not None else None
        if c["before"] is not None:
            safefs.write_file(c["kept"], c["before"], like=live_stat)
        safefs.write_file(c["path"], c["after"], like=live_stat or os.stat(c["snapshot"]), final_may_be_link=True)
    if switched:
        record = {"rolled_back_at": now, "run_id": run_id, "to": target, "reason": reason, "by": user}
        safefs.write_file(mark, json.dumps(record))
        _atomic_symlink(_link_text(info["link"], target), os.path.join(app_root, current))
        if info["layout"] == "capistrano":
            line = "%s rolled back to release %s" % (user or "unknown", target)
            safefs.append_line(os.path.join(app_root, REVISIONS_LOG), line)
            result["revisions_log"] = line
        if remove_rolled_back:
            shutil.rmtree(rolled_back_dir)
    result["link"] = os.readlink(os.path.join(app_root, current))
    return result


# The arguments of a host's discovery (release_facts, and release_claim with the lock's).
DISCOVERY_ARGS = dict(DIR_ARGS, **LAYOUT_ARGS, app_root=dict(type="path", required=True), run_id=dict(type="str"))


def read_host(module):
    """The host's releases and lock for ``module`` (its params are DISCOVERY_ARGS); fails the module
    on a host whose releases cannot be read."""
    p = module.params
    try:
        info = discover(
            p["app_root"],
            layout=p["layout"],
            releases_dir=p["releases_dir"],
            current=p["current_dir"],
            run_id=p["run_id"],
        )
    except (ReleaseError, OSError) as exc:
        module.fail_json(msg=str(exc))
    holder = info["lock"]
    info["locked"] = bool(holder and p["run_id"] and holder.get("run_id") == p["run_id"])
    return info


def exit_discovery(module, info, changed=False):
    """Return ``info`` as the module's result and as the host's assess fact."""
    result = dict(info)
    # A truthy "skipped" is Ansible's own mark of a skipped task (whose facts are dropped): the list
    # of passed-over releases goes out as skipped_releases; the fact keeps it as "skipped".
    result["skipped_releases"] = result.pop("skipped")
    module.exit_json(changed=changed, ansible_facts={"rollback_host_result_assess": info}, **result)
