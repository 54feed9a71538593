"""The Knex test application (tests/migrate_apps/knex: `knex init`'s knexfile rewritten to read
DATABASE_URL, migrations made by `knex migrate:make`) as its deploy runs it: copied into a release
directory, node_modules linked from .cache/migrate-tools (where .ci/test-deps installs knex, pg and
mysql2), migrated up with `knex migrate:latest`.

Its migrations, oldest first:
  20261204170433_create_orders.js     createTable orders + 2 rows  (down: dropTable: destructive)
  20261204170435_convert_to_cents.js  total * 100                  (down: throws: cannot run)
  20261204170436_add_coupon.js        column orders.coupon         (down: dropColumn: destructive)
  20261204170438_index_total.js       index ix_orders_total        (down: dropIndex: reversible)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "knex"
NODE_MODULES = Path(__file__).resolve().parents[2] / ".cache" / "migrate-tools" / "node_modules"
MIGRATIONS = [
    "20261204170433_create_orders.js",
    "20261204170435_convert_to_cents.js",
    "20261204170436_add_coupon.js",
    "20261204170438_index_total.js",
]


def installed() -> bool:
    """Whether knex and its pg and mysql2 drivers are installed where the helper links them from."""
    return (NODE_MODULES / ".bin" / "knex").exists() and all((NODE_MODULES / d).is_dir() for d in ("pg", "mysql2"))


def node_url(url: str) -> str:
    """An SQLAlchemy URL in the form Node's drivers read (postgres://, mysql://)."""
    scheme, rest = url.split("://", 1)
    return {"postgresql": "postgres", "mysql": "mysql"}[scheme.split("+", 1)[0]] + "://" + rest


def copy_app(dest: Path) -> Path:
    """A release of the application at ``dest``, its node_modules linked to the installed tools."""
    shutil.copytree(SOURCE, dest, ignore=shutil.ignore_patterns("node_modules"))
    (dest / "node_modules").symlink_to(NODE_MODULES)
    return dest


def knex(app: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    """`knex ARGS` from the application, with DATABASE_URL set (raises on failure)."""
    res = subprocess.run(
        [str(app / "node_modules" / ".bin" / "knex"), *args],
        cwd=app,
        env=dict(os.environ, DATABASE_URL=node_url(url)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if res.returncode != 0:
        raise RuntimeError(f"knex {' '.join(args)} failed: {res.stdout}{res.stderr}")
    return res


def deploy(app: Path, url: str) -> None:
    """The deploy's `knex migrate:latest`."""
    knex(app, url, "migrate:latest")


def main(argv: list[str]) -> int:
    """`knex_app.py DEST URL`: copy the application to DEST and migrate it up."""
    deploy(copy_app(Path(argv[0])), argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
