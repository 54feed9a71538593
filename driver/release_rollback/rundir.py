"""The run directory: plan, approval, state checkpoints, audit trail, event streams and reports."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from . import content

audit = content.module_utils("audit")

DEFAULT_ROOT = Path(".rollback") / "runs"


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


@dataclass
class RunDir:
    path: Path

    @classmethod
    def create(cls, root: Path | None = None, run_id: str | None = None) -> RunDir:
        root = Path(root or DEFAULT_ROOT).absolute()
        run_id = run_id or new_run_id()
        path = root / run_id
        (path / "events").mkdir(parents=True, exist_ok=False, mode=0o700)
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

    @property
    def run_id(self) -> str:
        return self.path.name

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
        write_atomic(self.plan_file, header + yaml.safe_dump(plan, sort_keys=False, width=110))

    def read_plan(self) -> dict[str, Any]:
        return read_plan_file(self.plan_file)

    def write_approval(self, approval: dict[str, Any]) -> None:
        write_atomic(self.approval_file, json.dumps(approval, indent=2) + "\n")

    def read_approval(self) -> dict[str, Any] | None:
        if not self.approval_file.is_file():
            return None
        try:
            return json.loads(self.approval_file.read_text(encoding="utf-8"))
        except ValueError:
            return {"malformed": True}

    # state -------------------------------------------------------------------------------------
    def read_state(self) -> dict[str, Any]:
        path = self.path / "state.json"
        if not path.is_file():
            return {"run_id": self.run_id, "stages": {}, "created": utcnow()}
        return json.loads(path.read_text(encoding="utf-8"))

    def write_state(self, state: dict[str, Any]) -> None:
        state["audit_head"] = dict(zip(("hash", "seq"), audit.head(str(self.audit_file)), strict=True))
        state["updated"] = utcnow()
        write_atomic(self.path / "state.json", json.dumps(state, indent=2, sort_keys=True, default=str) + "\n")

    def audit(self, event: str, **fields: Any) -> None:
        audit.append(str(self.audit_file), event, **fields)


class PlanFileError(ValueError):
    pass


def read_plan_file(path: Path) -> dict[str, Any]:
    try:
        plan = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanFileError(f"the plan {path} does not exist: build one with `release-rollback plan`") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise PlanFileError(
            f"the plan {path} is not valid YAML{where}: build a new one with `release-rollback plan`"
        ) from None
    if not isinstance(plan, dict) or "hash" not in plan or "steps" not in plan:
        raise PlanFileError(f"{path} is not a rollback plan: build one with `release-rollback plan`")
    return plan
