"""What the migration tools' CLI tests share: one application host and one CLI per test module, a
database with the application deployed on it, the manifest, `plan` and the one-shot `run`, the
backups taken, and the password check over every file the product wrote."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import Cli, need
from dbkit import MARIADB_ADMIN, PG_ADMIN, create, server_up


def app_host(tmp_path_factory, name: str):
    """``(fleet, cli, root)``: one local application host and a CLI with its own runs directory."""
    from release_rollback.demo import build_fleet

    root = tmp_path_factory.mktemp(name)
    return build_fleet(root / "fleet", 1, start=False), Cli(root / "runs", root), root


def new_database(dialect: str, tmp_path: Path, password: str | None):
    """A new database of ``dialect`` on the real server (or an SQLite file), with its own login."""
    if dialect != "sqlite":
        need(server_up(PG_ADMIN if dialect == "postgresql" else MARIADB_ADMIN), f"the {dialect} server on 127.0.0.1")
    return create(dialect, tmp_path, password if dialect != "sqlite" else None)


def manifest(fleet, tmp_path: Path, tool: str, app: Path, db, target: str, backup_dir: Path | None = None) -> Path:
    path = tmp_path / f"m-{target}.yml"
    database = {
        "tool": tool,
        "migrations": str(app),
        "url": db.url,
        "target_revision": target,
        "backup_dir": str(backup_dir or tmp_path / "backups"),
        "critical_tables": ["orders"],
    }
    path.write_text(yaml.safe_dump({"rollback_manifest": {"app": "shop", "version": fleet.bad, "database": database}}))
    return path


def _json(res) -> dict:
    return json.loads(res.stdout) if res.stdout.strip().startswith("{") else {}


def plan(cli, fleet, path: Path):
    res = cli("plan", "-i", str(fleet.inventory), "-m", str(path), "--scope", "database", "--json")
    return res, _json(res)


def oneshot(cli, fleet, path: Path):
    """`run -i -m --approver --yes`: plan, approve (without --destructive) and run in one go."""
    res = cli(
        "run",
        "-i",
        str(fleet.inventory),
        "-m",
        str(path),
        "--scope",
        "database",
        "--approver",
        "dba",
        "--yes",
        "--json",
    )
    return res, _json(res)


def backups_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if not p.name.startswith(".")) if directory.exists() else []


def assert_secret_nowhere(secret: str, *roots: Path) -> None:
    """The password reached the tool in its environment only: it is in no file under ``roots``."""
    for root in roots:
        for f in root.rglob("*"):
            if f.is_file():
                assert secret not in f.read_text(errors="replace"), f"the password leaked into {f}"
