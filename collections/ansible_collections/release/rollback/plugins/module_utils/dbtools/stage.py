# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The database stage, once for every migration tool: the database's identity, the verified backup
and the run's restore point, the guard, the compare-and-swap against the plan's revision, the
half-applied step, the downgrade one step at a time, the integrity checks and the record.

``db_migrate`` calls ``run()`` with the tool the registry names; the tool only reads revisions,
lists and classifies steps and runs one step down (``base.MigrationTool``).
"""

from __future__ import annotations

import os
import time

from ansible_collections.release.rollback.plugins.module_utils import dbmigrate as _db
from ansible_collections.release.rollback.plugins.module_utils.dbtools import base, registry

_Fail = base.Fail


def _stamp():
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _backup_dir(module):
    directory = module.params["backup_dir"]
    if not directory:
        raise _Fail("no backup location is configured: set database.backup_dir in the manifest; nothing was changed")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise _Fail("the backup directory %s cannot be created (%s); nothing was changed" % (directory, exc)) from None
    return directory


def backup(module, client, conn, revision, tables, attempt, note):
    """Take a backup of the database at ``revision`` and verify it; a backup that fails the check is refused."""
    directory = _backup_dir(module)
    name = _db.backup_name(module.params["app"], conn, revision, _stamp())
    stem, ext = name.rsplit(".", 1)
    path = os.path.join(directory, "%s-attempt%d.%s" % (stem, attempt, ext))
    n = 1
    while os.path.lexists(path):  # a name taken by anything, a dangling link included, is never written through
        n += 1
        path = os.path.join(directory, "%s-attempt%d-%d.%s" % (stem, attempt, n, ext))
    old_umask = os.umask(0o077)
    try:
        tool, restore = client.dump(path)
    finally:
        os.umask(old_umask)
    ok, how = client.verify(path, tables)
    if not ok:
        raise _Fail(
            "the backup %s could not be verified (%s); nothing was changed in the database" % (path, how),
            detail=how,
        )
    return {
        "path": path,
        "sha256": _db.sha256_file(path),
        "size": os.path.getsize(path),
        "tool": tool,
        "revision": revision,
        "taken": _now(),
        "attempt": attempt,
        "verified": True,
        "verified_by": how,
        "restore_command": restore,
        "note": note,
    }


def integrity(tool, current, target, critical_tables, assertions, reference):
    """The checks after the rollback: revision, critical tables, the user's SQL assertions."""
    checks = [
        {
            "check": "revision == %s" % target,
            "ok": current == target,
            "detail": "database at %s" % current,
        }
    ]
    answer = {}
    if critical_tables or assertions:
        answer = tool.inspect(schema=bool(critical_tables), queries=[a.get("sql") for a in assertions])
        _same(reference, answer.get("identity"), "the integrity checks")
    tables = answer.get("schema") or {}
    for table in critical_tables:
        checks.append(
            {
                "check": "table %s exists" % table,
                "ok": table in tables,
                "detail": "present" if table in tables else "missing",
            }
        )
    results = answer.get("results") or []
    for i, assertion in enumerate(assertions):
        res = results[i] if i < len(results) else {"error": "no answer"}
        name = assertion.get("name") or assertion.get("sql")
        if "error" in res:
            checks.append({"check": name, "ok": False, "detail": "error: %s" % res["error"]})
            continue
        ok = _db.check_assertion(assertion, res.get("value"))
        checks.append(
            {
                "check": name,
                "ok": ok,
                "detail": "got %r, expected %r" % (res.get("value"), assertion.get("expect", True)),
            }
        )
    return checks


def _same(reference, other, who):
    """Refuse when ``who`` reaches another database than the backup's connection (``reference``)."""
    if other is None or _db.same_database(reference, other) is not False:
        return
    raise _Fail(
        "%s would reach %s, but the backup is taken of %s: they are not the same database (check the "
        "application's database settings, e.g. the variable its env.py reads, database.url_env); nothing was "
        "changed" % (who, _db.describe_identity(other), _db.describe_identity(reference)),
        refused=True,
        record={"identity_mismatch": {"backup": reference, "other": other, "who": who}},
    )


def tool_problem(kind, p):
    """One sentence when the tool, its file or directory, or its settings are wrong; else None."""
    if kind is None:
        return "tool %r is not a migration tool this collection runs: use one of %s" % (
            str(p["tool"])[:60],
            ", ".join(registry.names()),
        )
    where = p[kind.needs]
    if not where:
        return "tool %s needs %s: the %s" % (
            kind.name,
            kind.needs,
            "application's configuration file" if kind.needs == "config" else "migrations or application directory",
        )
    if kind.needs == "config" and not os.path.isfile(where):
        return "the %s configuration %s does not exist" % (kind.title or kind.name, where)
    if kind.needs == "migrations" and not os.path.isdir(where):
        return "the migrations directory %s does not exist" % where
    return kind.settings_problem(p["settings"])


def _on_planned_path(tool, planned_from, current, target):
    """Whether ``current`` lies between the plan's revision and the target (a run stopped part-way):
    resuming then goes on from there. A database found anywhere else has moved since the plan."""
    try:
        return current in [step["revision"] for step in tool.steps(planned_from, target, {})]
    except Exception:  # the plan's revision is not in this history: not our path
        return False


def publish_run(record, run):
    """The run's backups in the stage's record: the restore point first, every backup, a half-applied step."""
    if run.get("restore_point"):
        record["restore_point"] = _db.public_backup(run["restore_point"])
        record["backup"] = record["restore_point"]  # the backup the report names
    record["backups"] = [_db.public_backup(b) for b in run.get("backups") or []]
    if run.get("half_applied"):
        record["half_applied"] = _db.public_backup(dict(run["half_applied"], schema=None))
        record["half_applied"].pop("schema_before", None)
    record["applied"] = list(run.get("applied") or [])
    record["attempt"] = run.get("attempts")
    record["run_record"] = run.get("path")


def _save(run):
    if run.get("path"):
        _db.save_run_record(run["path"], {k: v for k, v in run.items() if k != "path"})


def _load_run(module, reference):
    """The run's record from an earlier attempt (or a new one), after checking it is of this database."""
    p = module.params
    path = _db.run_record_path(p["backup_dir"], p["run_id"]) if p["backup_dir"] else None
    try:
        run = _db.load_run_record(path)
    except ValueError as exc:
        raise _Fail("%s; nothing was changed" % exc) from None
    if run is None:
        return {"run_id": p["run_id"], "path": path, "attempts": 0, "backups": [], "applied": []}
    run["path"] = path
    if _db.same_database(run.get("identity"), reference) is False:
        raise _Fail(
            "this run's restore point %s was taken of %s, but this attempt would change %s: make a new plan; "
            "nothing was changed"
            % (
                (run.get("restore_point") or {}).get("path"),
                _db.describe_identity(run.get("identity")),
                _db.describe_identity(reference),
            ),
            refused=True,
        )
    return run


def _earlier_half_applied(run, before, live):
    """A step an earlier attempt left half-applied (recorded, or the step it was in when it died)."""
    half = run.get("half_applied")
    running = run.pop("running", None)
    if not half and running and running.get("revision") == before:
        changes = _db.schema_diff(running.get("schema"), live)
        if changes:
            half = {
                "revision": running["revision"],
                "step": running.get("step"),
                "changes": changes,
                "attempt": running.get("attempt"),
                "schema_before": running.get("schema"),
                "note": "attempt %s stopped during this step" % running.get("attempt"),
            }
            run["half_applied"] = half
    return half


def run(module, tool, client, conn, record, state, diff=False):
    p = module.params
    target = p["target_revision"]
    client.require_file()
    before = tool.current()
    state["before"] = state["current"] = before
    record["from_revision"] = before
    # Data first: the backup, the migration and the checks must reach the very same database.
    reference = client.identity()
    record["identity"] = reference
    _same(reference, tool.migration_identity(), "the migration tool (%s)" % p["tool"])
    if p["expected_identity"] and _db.same_database(p["expected_identity"], reference) is False:
        raise _Fail(
            "the database is %s, but the plan was made for %s: build a new plan; nothing was changed"
            % (_db.describe_identity(reference), _db.describe_identity(p["expected_identity"])),
            refused=True,
        )
    tool.require_clean()
    if target is None:
        record["current"] = before
        module.exit_json(changed=False, before=before, current=before, database=record)
    answer = tool.inspect(schema=True)
    _same(reference, answer.get("identity"), "the integrity checks")
    live = answer.get("schema") or {}
    record["identity_checked"] = ["backup", "migration", "integrity checks"]
    run = None
    if p["state"] != "status" and p["run_id"] and p["backup_dir"] and not module.check_mode:
        # The run's record (its restore point) first: a refusal below still reports it.
        run = state["run"] = _load_run(module, reference)
    if (
        p["state"] != "status"
        and p["expected_revision"]
        and before not in (p["expected_revision"], target)
        and not _on_planned_path(tool, p["expected_revision"], before, target)
    ):
        # Compare-and-swap, before the tool is asked for a path from where the database is now: a
        # database that moved since the plan is refused the same way whatever the tool.
        raise _Fail(
            "the database is at revision %s, but the plan was made at revision %s: build a new plan; "
            "nothing was changed" % (before, p["expected_revision"]),
            refused=True,
            stale=True,
        )
    steps = tool.steps(before, target, live)
    record["steps"] = steps
    if p["state"] == "status":
        record["current"] = before
        module.exit_json(changed=False, before=before, current=before, steps=steps, database=record)

    earlier = _earlier_half_applied(run, before, live) if run else None
    if earlier and earlier.get("revision") == before and not earlier.get("resolved"):
        still = _db.schema_diff(earlier.get("schema_before"), live)
        if still:
            restore = run.get("restore_point") or {}
            raise _Fail(
                "down step %s was left half-applied by attempt %s (%s) and the schema is still that way: "
                "finish or undo those changes by hand, then resume; or restore the run's restore point %s "
                "(revision %s): %s. This attempt changed nothing"
                % (
                    earlier.get("step") or earlier.get("revision"),
                    earlier.get("attempt"),
                    "; ".join(earlier.get("changes") or []),
                    restore.get("path"),
                    restore.get("revision"),
                    restore.get("restore_command"),
                ),
                refused=True,
            )
        earlier["resolved"] = "the schema was put back as it was before the step (seen by attempt %d)" % (
            run["attempts"] + 1
        )
    elif earlier and not earlier.get("resolved"):
        earlier["resolved"] = "the database has moved on to revision %s since" % before
    problem = _db.guard_problem(steps, p["approved_steps"])
    if problem:
        raise _Fail("refused before touching the database: %s" % problem, refused=True)
    if not steps:
        record["integrity"] = integrity(tool, before, target, p["critical_tables"], p["assertions"], reference)
        record["current"] = before
        if run and run.get("restore_point"):
            publish_run(record, run)
        _finish(module, record, changed=False, before=before, current=before)
    if module.check_mode:
        record["current"] = before
        extra = {"diff": revision_diff(p, before, target, steps)} if diff else {}
        module.exit_json(changed=True, before=before, current=before, steps=steps, database=record, **extra)

    if run is None:  # no run id: this call's own backup is its restore point
        run = state["run"] = {"path": None, "attempts": 0, "backups": [], "applied": []}
    run["attempts"] += 1
    attempt = run["attempts"]
    run["identity"] = reference
    if not run.get("restore_point"):
        note = "the run's restore point: the database at revision %s before the rollback changed anything" % before
        taken = backup(module, client, conn, before, list(live), attempt, note)
        run["restore_point"] = taken
    else:
        note = "taken by attempt %d before it went on from revision %s; the restore point is still %s" % (
            attempt,
            before,
            run["restore_point"]["path"],
        )
        taken = backup(module, client, conn, before, list(live), attempt, note)
    run["backups"].append(taken)
    _save(run)  # before the first change: a killed attempt leaves the restore point findable
    publish_run(record, run)
    restore_point = run["restore_point"]
    for step in steps:
        # A snapshot before each step tells a failed step that left part of its DDL behind (MariaDB and
        # Alembic's SQLite run DDL outside a transaction) from one that was rolled back whole.
        snapshot = tool.inspect(schema=True).get("schema")
        run["running"] = {
            "step": _db.step_label(step),
            "revision": step["revision"],
            "schema": snapshot,
            "attempt": attempt,
        }
        _save(run)
        rc, out, err = tool.downgrade(step["to"], step)
        reached = tool.current()
        state["current"] = reached
        _same(reference, tool.migration_identity(), "the migration tool (%s)" % p["tool"])
        if rc != 0 or reached != step["to"] or getattr(tool, "dirty", None):
            why = client.tail(err or out) if rc != 0 else "the tool left the database at %s" % reached
            extra = {"failed_step": _db.step_label(step), "error": why}
            msg = "down step %s failed: %s. The database is at revision %s" % (_db.step_label(step), why, reached)
            if getattr(tool, "dirty", None):
                extra["dirty"] = tool.dirty
                marks = ", ".join("%s %s" % (k, v) for k, v in sorted(tool.dirty.items()))
                msg = (
                    "down step %s failed: %s. The %s migration table marks it unfinished (%s): the down step of %s "
                    "stopped part-way, so the schema is between %s and %s"
                    % (_db.step_label(step), why, tool.name, marks, step["revision"], step["revision"], reached)
                )
            run.pop("running", None)
            if snapshot is not None and (reached == step["revision"] or "dirty" in extra):
                changes = _db.schema_diff(snapshot, tool.inspect(schema=True).get("schema"))
                if changes:
                    run["half_applied"] = {
                        "revision": step["revision"],
                        "step": _db.step_label(step),
                        "changes": changes,
                        "attempt": attempt,
                        "schema_before": snapshot,
                    }
                    msg += (
                        " with part of step %s applied (its DDL is not transactional): %s. Finish or undo those "
                        "changes by hand, or restore the restore point" % (_db.step_label(step), "; ".join(changes))
                    )
            _save(run)
            publish_run(record, run)
            msg += "; no further down step ran; the restore point is %s (revision %s; restore: %s)" % (
                restore_point["path"],
                restore_point["revision"],
                restore_point["restore_command"],
            )
            raise _Fail(msg, changed=bool(run.get("applied")) or "half_applied" in run, record=extra, detail=why)
        run.pop("running", None)
        run["applied"].append(_db.step_label(step))
        _save(run)
    publish_run(record, run)
    record["current"] = state["current"]
    record["integrity"] = integrity(tool, state["current"], target, p["critical_tables"], p["assertions"], reference)
    _finish(module, record, changed=True, before=before, current=state["current"])


def _finish(module, record, changed, before, current):
    failed = [c for c in record.get("integrity") or [] if not c["ok"]]
    if failed:
        raise _Fail(
            "integrity check failed after the rollback: %s"
            % "; ".join("%s (%s)" % (c["check"], c["detail"]) for c in failed),
            changed=changed,
        )
    module.exit_json(changed=changed, before=before, current=current, database=record)


def revision_diff(p, before, target, steps):
    """What the down steps would do to the database, for diff mode: its revision, and each step."""
    where = "database (%s)" % p["tool"]
    lines = [
        "down %s -> %s%s\n" % (s.get("revision"), s.get("to"), " (destructive)" if s.get("destructive") else "")
        for s in steps
    ]
    return {
        "before_header": where,
        "after_header": where,
        "before": "revision %s\n" % before,
        "after": "revision %s\n" % target + "".join("# " + line for line in lines),
    }
