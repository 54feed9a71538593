"""The run directory: plan, approval, state checkpoints, audit trail, event streams and reports."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import yaml

from . import boundedyaml, content

audit = content.module_utils("audit")
safefs = content.module_utils("safefs")

DEFAULT_ROOT = Path(".rollback") / "runs"
# Where a dry run (``run --check``) of a run's plan keeps its state, events and report (the report's place).
DRY_RUN_DIR = content.module_utils("report").DRY_RUN_DIR


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + f"-{os.getpid() % 10000:04d}"


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` so that a crash leaves either the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class RunsHomeError(ValueError):
    """The runs home cannot hold a new run; the message is one sentence with the fix."""


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents with mode 0700, whatever the umask (existing ones are kept)."""
    missing = []
    for parent in [path, *path.parents]:
        if os.path.lexists(parent):
            break
        missing.append(parent)
    for directory in reversed(missing):
        safefs.make_private_dir(str(directory))


def environment_of(doc: dict[str, Any], inventory: str | None = None) -> str:
    """The environment a run is for: the ``environment`` name of ``doc`` (a manifest, plan or state), else
    the inventory's path (``inventory``, or the one ``doc`` holds). It names the environment lock and the
    release record, so controllers whose inventories sit at different paths share them only when the
    manifest names the environment."""
    return str(doc.get("environment") or inventory or doc.get("inventory") or "")


@dataclass
class RunDir:
    path: Path
    name: str | None = None  # the run id, when it is not the directory's name (a dry run's)

    DRY_RUN: ClassVar[str] = DRY_RUN_DIR

    @classmethod
    def create(cls, root: Path | None = None, run_id: str | None = None) -> RunDir:
        """A new run directory under ``root``, mode 0700 whatever the umask. Its name is predictable, so
        anything already there (a directory, a planted link) is refused, never followed."""
        root = Path(root or DEFAULT_ROOT).absolute()
        run_id = run_id or new_run_id()
        path = root / run_id
        try:
            make_private_dirs(root)
            # The controller key that anchors every run's audit trail, outside the run directories.
            audit.ensure_key(str(root.parent))
            # A ledger that cannot be reached stops a new run before its directory exists.
            from .ledger import open_ledger

            open_ledger(root)
            os.mkdir(path, 0o700)
        except FileExistsError:
            what = f"a symbolic link to {os.readlink(path)}" if path.is_symlink() else "something"
            raise FileExistsError(
                f"{path} already exists ({what}), and a new run never writes into what it did not create: "
                "remove it, or plan again in a second"
            ) from None
        except OSError as exc:
            raise RunsHomeError(
                f"the runs home {root} cannot be written ({exc.strerror or exc}), so nothing was done: pass "
                "--runs-dir (or set RELEASE_ROLLBACK_RUNS_DIR) to a writable directory, or free space there"
            ) from None
        os.chmod(path, 0o700)
        safefs.make_private_dir(str(path / "events"))
        return cls(path)

    @classmethod
    def find(cls, value: str | Path) -> RunDir:
        """A run directory given as a path, or as the plan file inside it."""
        path = Path(value).absolute()
        if path.is_file():
            path = path.parent
        if not (path / "state.json").is_file():
            raise FileNotFoundError(f"{value} is not a run directory (it has no state.json)")
        return cls(path)

    @classmethod
    def dry_run_of(cls, run: RunDir) -> RunDir:
        """A fresh ``<run>/dry-run/`` for a dry run (``run --check``) of ``run``'s plan: its own state,
        events, audit entries and report, so that nothing of it is mistaken for the run's own. A dry run
        before it is replaced."""
        path = run.path / DRY_RUN_DIR
        if path.is_symlink() or path.is_file():
            raise FileExistsError(f"{path} is not a directory this tool made: remove it, then run --check again")
        shutil.rmtree(path, ignore_errors=True)
        os.mkdir(path, 0o700)
        safefs.make_private_dir(str(path / "events"))
        return cls(path, name=f"{run.run_id}.dry-run")

    @property
    def run_id(self) -> str:
        return self.name or self.path.name

    @property
    def ledger(self):
        """The ledger this run is recorded in (None for a dry run, which records nothing)."""
        if self.name is not None:
            return None
        from .ledger import open_ledger

        return open_ledger(self.path.parent)

    def to_ledger(self, **values: Any) -> None:
        """Copy what was just written into the ledger (and the audit entries it does not have yet)."""
        ledger = self.ledger
        if ledger is None:
            return
        if values:
            ledger.save_run(self.run_id, **values)
        ledger.sync_audit(self.run_id, self.audit_file)

    def report_to_ledger(self, rep: dict[str, Any]) -> None:
        """The run's report in the ledger, and the release record it carries."""
        ledger = self.ledger
        if ledger is None or not isinstance(rep, dict):
            return
        ledger.save_run(self.run_id, report=rep)
        ledger.sync_audit(self.run_id, self.audit_file)
        state = self.read_state()
        ledger.record_from_report(rep, environment_of(state))

    @property
    def plan_file(self) -> Path:
        return self.path / "plan.yml"

    @property
    def approval_file(self) -> Path:
        return self.path / "approval.json"

    @property
    def audit_file(self) -> Path:
        return self.path / "audit.jsonl"

    def events_file(self, stage: str) -> Path:
        return self.path / "events" / f"{stage}.jsonl"

    # plan and approval -------------------------------------------------------------------------
    def write_plan(self, plan: dict[str, Any]) -> None:
        header = "# Rollback plan. Review it, then approve it with `release-rollback approve`.\n"
        header += "# Any edit changes its hash and voids an approval.\n"
        with recording(self.plan_file):
            write_atomic(self.plan_file, header + yaml.safe_dump(plan, sort_keys=False, width=110))
        self.to_ledger(
            plan=plan, app=plan.get("app"), from_version=plan.get("from_version"), to_version=plan.get("to_version")
        )

    def read_plan(self) -> dict[str, Any]:
        return read_plan_file(self.plan_file)

    def write_approval(self, approval: dict[str, Any]) -> None:
        with recording(self.approval_file):
            write_atomic(self.approval_file, json.dumps(approval, indent=2) + "\n")
        self.to_ledger(approval=approval)

    def read_approval(self) -> dict[str, Any] | None:
        if not self.approval_file.is_file():
            return None
        try:
            return json.loads(self.approval_file.read_text(encoding="utf-8"))
        except ValueError:
            return {"malformed": True}

    # manual steps ------------------------------------------------------------------------------
    @property
    def manual_file(self) -> Path:
        return self.path / "manual.json"

    def read_manual(self) -> dict[str, Any]:
        """The run's manual step records: step id -> {status, by, at, note, earlier}."""
        if not self.manual_file.is_file():
            return {}
        try:
            data = json.loads(self.manual_file.read_text(encoding="utf-8"))
        except ValueError:
            raise RunFileDamaged(
                f"{self.manual_file} is damaged (not JSON): restore it from the audit trail's manual.* entries"
            ) from None
        return data if isinstance(data, dict) else {}

    def write_manual(self, records: dict[str, Any]) -> None:
        with recording(self.manual_file):
            write_atomic(self.manual_file, json.dumps(records, indent=2, sort_keys=True) + "\n")

    # state -------------------------------------------------------------------------------------
    def read_state(self) -> dict[str, Any]:
        path = self.path / "state.json"
        if not path.is_file():
            return {"run_id": self.run_id, "stages": {}, "created": utcnow()}
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(state, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            prev = path.with_name("state.json.prev")
            fix = (
                f"its previous version is kept as {prev}: `cp {prev} {path}`, then give the command again"
                if prev.is_file()
                else f"restore it from a backup, or end the run with a new plan (its audit trail {self.audit_file} "
                "says what it did)"
            )
            raise RunFileDamaged(f"the run's state {path} is damaged ({exc}), so nothing was done: {fix}") from None
        return state

    def write_state(self, state: dict[str, Any]) -> None:
        state["audit_head"] = dict(zip(("hash", "seq"), audit.head(str(self.audit_file)), strict=True))
        state["updated"] = utcnow()
        path = self.path / "state.json"
        text = json.dumps(state, indent=2, sort_keys=True, default=str) + "\n"
        with recording(path):
            if path.is_file():
                # The version before this one stays as state.json.prev (a hard link: no space, no copy).
                prev_tmp = path.with_name(".state.json.prev")
                prev_tmp.unlink(missing_ok=True)
                os.link(path, prev_tmp)
                os.replace(prev_tmp, path.with_name("state.json.prev"))
            write_atomic(path, text)
        self.to_ledger(
            state=state,
            run_dir=str(self.path),
            controller=socket.gethostname(),
            created=state.get("created"),
            operator=state.get("operator"),
            environment=environment_of(state),
            lifecycle=(state.get("lifecycle") or {}).get("state"),
            exit_state=state.get("exit_state"),
        )

    def note_host_lock(self, host: str, app_root: str, broke: dict[str, Any] | None = None) -> None:
        """Record a host lock this run holds (``host-locks.jsonl``), as soon as it is taken."""
        line = json.dumps({"host": host, "app_root": app_root, "time": utcnow(), "broke": broke}) + "\n"
        path = self.path / "host-locks.jsonl"
        with recording(path):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, line.encode("utf-8"))
            finally:
                os.close(fd)

    def host_locks(self) -> dict[str, str]:
        """The host locks this run recorded taking: host -> app root."""
        path = self.path / "host-locks.jsonl"
        out: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    entry = json.loads(line)
                    out[entry["host"]] = entry["app_root"]
        return out

    def audit(self, event: str, **fields: Any) -> None:
        with recording(self.audit_file):
            audit.append(str(self.audit_file), event, **fields)
        self.to_ledger()


class RunFileDamaged(ValueError):
    """A file of the run that cannot be read as written (edited, or damaged on disk): one sentence with the fix."""


class RecordError(OSError):
    """A file of the run (or its runs home) could not be written; what was written before stays valid."""


@contextlib.contextmanager
def recording(path: Path):
    """Turn a failed write of ``path`` (a full disk, a read-only or unwritable directory) into RecordError."""
    try:
        yield
    except RecordError:
        raise
    except OSError as exc:
        raise RecordError(exc.errno, f"{path} could not be written ({exc.strerror or exc})", str(path)) from None


def record_error_fix(exc: RecordError) -> str:
    """The sentence for a run file that could not be written, with the command that goes on."""
    path = Path(exc.filename or ".")
    run_dir = path.parent.parent if path.parent.name == "events" else path.parent
    then = (
        f"`release-rollback resume {run_dir}` (or `release-rollback abort {run_dir} --reason ...`)"
        if (run_dir / "state.json").is_file()
        else "plan again"
    )
    return f"{exc.strerror}; everything written before is intact: free space there (or make it writable), then {then}"


class PlanFileError(ValueError):
    pass


def read_plan_file(path: Path) -> dict[str, Any]:
    try:
        plan = boundedyaml.load_file(path, boundedyaml.PLAN)
    except FileNotFoundError:
        raise PlanFileError(f"the plan {path} does not exist: build one with `release-rollback plan`") from None
    except boundedyaml.TooLarge as exc:
        raise PlanFileError(f"the plan {path} {exc}: build a new one with `release-rollback plan`") from None
    except (boundedyaml.YAMLSyntax, UnicodeDecodeError) as exc:
        mark = getattr(exc, "mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise PlanFileError(
            f"the plan {path} is not valid YAML{where}: build a new one with `release-rollback plan`"
        ) from None
    if not isinstance(plan, dict) or "hash" not in plan or "steps" not in plan:
        raise PlanFileError(f"{path} is not a rollback plan: build one with `release-rollback plan`")
    return plan
