"""``ledger import`` and ``ledger export``: run directories and releases.jsonl in and out of the ledger."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from .. import content

reportlib = content.module_utils("report")
recordlib = content.module_utils("report_record")


def _is_run(path: Path) -> bool:
    """A run directory: the driver's (state.json), or one ansible-playbook or an AWX job wrote (report, audit)."""
    return any((path / name).is_file() for name in ("state.json", "report.json", "audit.jsonl"))


def _run_dirs(directory: Path) -> list[Path]:
    directory = directory.absolute()
    if _is_run(directory):
        return [directory]
    for base in (directory, directory / "runs"):
        found = sorted(p for p in base.glob("*") if p.is_dir() and _is_run(p)) if base.is_dir() else []
        if found:
            return found
    return []


def _run_id(path: Path) -> str | None:
    """The run's id when it is not its directory's name (an AWX job's run directory): report.json says."""
    if (path / "state.json").is_file():
        return None
    try:
        run_id = json.loads((path / "report.json").read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None
    return str(run_id) if run_id and str(run_id) != path.name else None


def _record_files(directory: Path) -> list[Path]:
    directory = directory.absolute()
    places = [directory, directory.parent, directory.parent.parent]
    return [p / "releases.jsonl" for p in dict.fromkeys(places) if (p / "releases.jsonl").is_file()][:1]


def import_dir(ledger, directory: Path) -> dict[str, Any]:
    """Copy the runs and the release record under ``directory`` into ``ledger`` (idempotent)."""
    from ..rundir import RunDir

    runs = audit = releases = 0
    skipped = []
    for path in _run_dirs(directory):
        rundir = RunDir(path, name=_run_id(path))
        before = len(ledger.audit_rows(rundir.run_id))
        ledger.sync_run(rundir)
        after = len(ledger.audit_rows(rundir.run_id))
        text = rundir.audit_file.read_text(encoding="utf-8") if rundir.audit_file.is_file() else ""
        lines = len([x for x in text.splitlines() if x])
        if after < lines:
            skipped.append(
                f"{path}: {lines - after} audit lines do not continue the chain "
                f"(check `release-rollback audit verify {path}`)"
            )
        runs += 1
        audit += after - before
    for record in _record_files(directory):
        with open(record, encoding="utf-8") as fh:
            for entry in recordlib.json_lines(fh):
                if not isinstance(entry, dict) or not entry.get("version") or not entry.get("app"):
                    continue
                bad = entry.get("known_bad") or entry.get("status") == "rolled_back"
                if not bad and entry.get("status") != "good":
                    continue
                run = ledger.get_run(str(entry.get("run_id"))) if entry.get("run_id") else None
                environment = entry.get("environment") or (run or {}).get("environment") or ""
                releases += ledger.record_release(
                    str(entry["app"]),
                    environment,
                    str(entry["version"]),
                    "rolled_back" if bad else "good",
                    entry.get("run_id"),
                    rolled_back_to=entry.get("rolled_back_to"),
                    at=entry.get("time"),
                )
    return {"runs": runs, "audit": audit, "releases": releases, "skipped": "; ".join(skipped)}


def _write_new(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def export_run(ledger, row: dict[str, Any], target: Path) -> None:
    """Write one run the ledger holds (``row``, from ``get_run``) as the new run directory ``target``:
    plan, approval, state, audit trail and report, as the run's controller wrote them."""
    from ..rundir import make_private_dirs

    run_id = row["run_id"]
    os.mkdir(target, 0o700)
    make_private_dirs(target / "events")  # where a resumed stage writes its events, as in a run made here
    if row.get("plan"):
        header = "# Rollback plan (exported from the ledger). Any edit changes its hash and voids an approval.\n"
        _write_new(target / "plan.yml", header + yaml.safe_dump(row["plan"], sort_keys=False, width=110))
    if row.get("approval"):
        _write_new(target / "approval.json", json.dumps(row["approval"], indent=2) + "\n")
    state = row.get("state") or {"run_id": run_id}
    _write_new(target / "state.json", json.dumps(state, indent=2, sort_keys=True) + "\n")
    entries = [r["entry"] for r in ledger.audit_rows(run_id)]
    _write_new(target / "audit.jsonl", "".join(e + "\n" for e in entries))
    if row.get("report"):
        for name in reportlib.FILES:
            _write_new(target / f"report.{name}", reportlib.RENDERERS[name](row["report"]))


def export_dir(ledger, directory: Path, run_ids: list[str]) -> dict[str, Any]:
    """Write the ledger's runs as run directories under ``directory`` and its release record as
    ``directory/releases.jsonl``; a run directory already there is left untouched (and named)."""
    from ..rundir import make_private_dirs

    directory = directory.absolute()
    make_private_dirs(directory)
    wanted = run_ids or ledger.run_ids()
    runs, skipped = 0, []
    for run_id in wanted:
        row = ledger.get_run(run_id)
        if row is None:
            skipped.append(f"{run_id} is not in the ledger")
            continue
        target = directory / run_id
        if os.path.lexists(target):
            skipped.append(f"{target} already exists (left as it is)")
            continue
        export_run(ledger, row, target)
        runs += 1
    marks = ledger.all_releases()
    record = directory / "releases.jsonl"
    if os.path.lexists(record):
        skipped.append(f"{record} already exists (left as it is)")
    else:
        lines = [
            json.dumps(
                {
                    "app": m["app"],
                    "environment": m["environment"],
                    "version": m["version"],
                    "status": m["status"],
                    "known_bad": m["status"] == "rolled_back",
                    "rolled_back_to": m["rolled_back_to"],
                    "run_id": m["run_id"],
                    "rca": m["rca"],
                    "time": m["time"],
                },
                sort_keys=True,
            )
            for m in marks
        ]
        _write_new(record, "".join(line + "\n" for line in lines))
    return {"runs": runs, "releases": len(marks), "skipped": "; ".join(skipped)}
