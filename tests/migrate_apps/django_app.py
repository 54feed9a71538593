"""The Django test project (tests/migrate_apps/django: `django-admin startproject shopsite`, `startapp
shop`, migrations made by `makemigrations`) as its deploy runs it: copied into a release directory,
pointed at a database by DATABASE_URL, migrated up with `manage.py migrate`.

shop's migrations, oldest first:
  0001_initial            CreateModel Order              (down: DROP TABLE shop_order)
  0002_order_note         AddField Order.note            (down: DROP COLUMN note: destructive)
  0003_order_total_index  AddIndex ix_order_total        (down: DROP INDEX: reversible)
  0004_fill_notes         RunPython without reverse_code (down: IrreversibleError)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "django"
PYTHON = sys.executable  # the venv's: Django, psycopg and PyMySQL are installed there
MIGRATIONS = ["0001_initial", "0002_order_note", "0003_order_total_index", "0004_fill_notes"]


def copy_project(dest: Path) -> Path:
    """A release of the project at ``dest`` (no caches, no database file)."""
    shutil.copytree(SOURCE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.sqlite3", "*.db"))
    return dest


def manage(project: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    """`python manage.py ARGS` from the project, with DATABASE_URL set (raises on failure)."""
    url = url.replace("+psycopg", "").replace("+pymysql", "")
    res = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=project,
        env=dict(os.environ, DATABASE_URL=url),
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed: {res.stdout}{res.stderr}")
    return res


def deploy(project: Path, url: str, to: str = MIGRATIONS[-1]) -> None:
    """The deploy's `manage.py migrate shop TO`."""
    manage(project, url, "migrate", "shop", to, "--no-input")


def main(argv: list[str]) -> int:
    """`django_app.py DEST URL [MIGRATION]`: copy the project to DEST and migrate it up."""
    project = copy_project(Path(argv[0]))
    deploy(project, argv[1], *(argv[2:3] or []))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
