"""The Rails test application (tests/migrate_apps/rails) as its deploy runs it: copied into a release
directory and migrated up with its own `bin/rails db:migrate`, with DATABASE_URL and RAILS_ENV.

The application is `rails new --minimal --api --skip-bundle` (Rails 6.1 from Debian's packages)
cut down to ActiveRecord alone: a Gemfile naming only gems Debian ships (railties, activerecord,
pg, mysql2, sqlite3), resolved at boot from the machine's gems (no Gemfile.lock is kept: Debian's
security updates move the versions); config/application.rb requires
"active_record/railtie"; no config/database.yml (DATABASE_URL is the whole configuration); the
production environment sets `dump_schema_after_migration = false`. Its migrations were made with
`bin/rails generate migration` and given fixed versions. Oldest first:

  20261120100000_create_orders             create_table orders + 2 rows  (change: undone, drops the table)
  20261121100000_convert_totals_to_cents   total * 100                   (down raises IrreversibleMigration)
  20261122100000_add_coupon_to_orders      column orders.coupon + a value (down: remove_column: destructive)
  20261123100000_add_index_on_orders_placed_on  index on placed_on      (change: undone, remove_index: reversible)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

SOURCE = Path(__file__).resolve().parent / "rails"
VERSIONS = ["20261120100000", "20261121100000", "20261122100000", "20261123100000"]
INDEX = "index_orders_on_placed_on"


def installed() -> bool:
    """Whether Debian's Rails 6.1 and its database drivers are there (ruby-railties, ruby-pg, ...)."""
    if not shutil.which("ruby") or not shutil.which("rails"):
        return False
    res = subprocess.run(
        ["ruby", "-e", 'require "rails"; require "active_record"; require "pg"; require "mysql2"; require "sqlite3"'],
        capture_output=True,
    )
    return res.returncode == 0


def rails_url(url: str) -> str:
    """An SQLAlchemy URL in Rails' form: postgresql://, mysql2://, sqlite3:/abs/path."""
    scheme, rest = url.split("://", 1)
    dialect = scheme.split("+", 1)[0]
    if dialect == "sqlite":
        return "sqlite3:" + rest[1:]
    parts = urlsplit(url)
    return {"postgresql": "postgresql", "mysql": "mysql2"}[dialect] + "://" + parts.netloc + parts.path


def copy_app(dest: Path) -> Path:
    """A release of the application at ``dest``."""
    shutil.copytree(SOURCE, dest, ignore=shutil.ignore_patterns("log", "tmp", "Gemfile.lock"))
    return dest


def rails(app: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    """`bin/rails ARGS` from the application in production, with DATABASE_URL set (raises on failure)."""
    res = subprocess.run(
        [str(app / "bin" / "rails"), *args],
        cwd=app,
        env=dict(os.environ, DATABASE_URL=rails_url(url), RAILS_ENV="production"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if res.returncode != 0:
        raise RuntimeError(f"bin/rails {' '.join(args)} failed: {res.stdout}{res.stderr}")
    return res


def deploy(app: Path, url: str) -> None:
    """The deploy's `bin/rails db:migrate`."""
    rails(app, url, "db:migrate")


def main(argv: list[str]) -> int:
    """`rails_app.py DEST URL`: copy the application to DEST and migrate it up."""
    deploy(copy_app(Path(argv[0])), argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
