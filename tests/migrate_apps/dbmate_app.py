"""The dbmate test application (tests/migrate_apps/dbmate: files made by `dbmate new`, in
db/migrations) as its deploy runs it: copied into a release directory, node_modules linked from
.cache/migrate-tools (where .ci/test-deps installs dbmate, whose npm package ships the binary),
migrated up with `dbmate up`.

Its migrations, oldest first:
  20261204170453_create_orders     CREATE TABLE orders + 2 rows  (down: DROP TABLE: destructive)
  20261204170454_convert_to_cents  total * 100                   (down: empty: cannot run)
  20261204170456_add_coupon        column orders.coupon          (down: DROP COLUMN: destructive)
  20261204170457_index_total       index ix_orders_total         (down: DROP INDEX: reversible)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "dbmate"
NODE_MODULES = Path(__file__).resolve().parents[2] / ".cache" / "migrate-tools" / "node_modules"
VERSIONS = ["20261204170453", "20261204170454", "20261204170456", "20261204170457"]


def installed() -> bool:
    """Whether dbmate is installed where the helper links it from (and its binary runs)."""
    dbmate = NODE_MODULES / ".bin" / "dbmate"
    if not dbmate.exists():
        return False
    return subprocess.run([str(dbmate), "--version"], capture_output=True).returncode == 0


def dbmate_url(url: str) -> str:
    """An SQLAlchemy URL in dbmate's form (postgres://...?sslmode=disable, mysql://..., sqlite:/path)."""
    scheme, rest = url.split("://", 1)
    kind = scheme.split("+", 1)[0]
    if kind == "sqlite":
        return "sqlite:" + rest[1:]  # sqlite:////abs/path -> sqlite:/abs/path
    if kind == "postgresql":
        return "postgres://" + rest + ("&" if "?" in rest else "?") + "sslmode=disable"
    return "mysql://" + rest


def copy_app(dest: Path) -> Path:
    """A release of the application at ``dest``, its node_modules linked to the installed tools."""
    shutil.copytree(SOURCE, dest, ignore=shutil.ignore_patterns("node_modules", "*.db", "schema.sql"))
    (dest / "node_modules").symlink_to(NODE_MODULES)
    return dest


def dbmate(app: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    """`dbmate --no-dump-schema ARGS` from the application, with DATABASE_URL set (raises on failure)."""
    res = subprocess.run(
        [str(app / "node_modules" / ".bin" / "dbmate"), "--no-dump-schema", *args],
        cwd=app,
        env=dict(os.environ, DATABASE_URL=dbmate_url(url)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if res.returncode != 0:
        raise RuntimeError(f"dbmate {' '.join(args)} failed: {res.stdout}{res.stderr}")
    return res


def deploy(app: Path, url: str) -> None:
    """The deploy's `dbmate up`."""
    dbmate(app, url, "up")


def main(argv: list[str]) -> int:
    """`dbmate_app.py DEST URL`: copy the application to DEST and migrate it up."""
    deploy(copy_app(Path(argv[0])), argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
