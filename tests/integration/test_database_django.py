"""Django projects rolled back by the database stage (`manage.py migrate APP PREVIOUS`, one migration
at a time, from the release's directory with DATABASE_URL set) on the real PostgreSQL server and
SQLite, through the CLI. The project is tests/migrate_apps/django (see django_app.py): shop's 0003
is reversible (an index), 0002's down drops a column (destructive), 0004 is a RunPython without
reverse_code (irreversible)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from dbkit import create, drop
from migrate_apps import django_app, stage_cli

pytestmark = pytest.mark.integration

ORDERS = [(1, 1250, "2026-11-20", "gift wrap"), (2, 990, "2026-11-21", None)]


SECRET = "Django-pw-never-on-disk-5e"  # the database's own login: it reaches Django only in DATABASE_URL


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One application host and one CLI runs directory for the whole module."""
    fleet, cli, _root = stage_cli.app_host(tmp_path_factory, "django")
    yield fleet, cli
    fleet.stop()


@pytest.fixture
def database(request, tmp_path):
    db = stage_cli.new_database(request.param, tmp_path, SECRET)
    yield db
    drop(db)


def rows(db, sql: str, **params) -> list[tuple]:
    eng = db.engine()
    try:
        with eng.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]
    finally:
        eng.dispose()


def applied(db) -> list[str]:
    """shop's applied migrations, read from Django's table (not through the product)."""
    return [r[0] for r in rows(db, "SELECT name FROM django_migrations WHERE app = 'shop' ORDER BY name")]


def columns(db) -> list[str]:
    eng = db.engine()
    try:
        with eng.connect() as conn:
            return sorted(c["name"] for c in sa.inspect(conn).get_columns("shop_order"))
    finally:
        eng.dispose()


def indexes(db) -> list[str]:
    eng = db.engine()
    try:
        with eng.connect() as conn:
            return sorted(ix["name"] for ix in sa.inspect(conn).get_indexes("shop_order"))
    finally:
        eng.dispose()


def contents(db) -> list[tuple]:
    return rows(db, "SELECT * FROM shop_order ORDER BY id")


def manifest(site, tmp_path: Path, name: str, project: Path, db, target) -> Path:
    fleet, _cli = site
    database = {
        "tool": "django",
        "migrations": str(project),
        "url": db.url,
        "python": django_app.PYTHON,
        "target_revision": target,
        "backup_dir": str(tmp_path / f"backups-{name}"),
        "critical_tables": ["shop_order"],
        "assertions": [{"name": "orders kept", "sql": "SELECT COUNT(*) FROM shop_order", "expect": 2}],
    }
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump({"rollback_manifest": {"app": "shop", "version": fleet.bad, "database": database}}))
    return path


def plan(site, path: Path):
    fleet, cli = site
    before = set(cli.run_dirs())
    res = cli("plan", "-i", str(fleet.inventory), "-m", str(path), "--scope", "database", "--json")
    (run_dir,) = set(cli.run_dirs()) - before
    return res, run_dir, yaml.safe_load((run_dir / "plan.yml").read_text())


def db_steps(the_plan: dict) -> list[dict]:
    """The database stage's steps as the plan records them, each with its classification."""
    return the_plan["database"]["steps"]


@pytest.mark.parametrize("database", ["postgresql", "sqlite"], indirect=True)
def test_django_reversible_then_destructive_with_backup_then_irreversible_refused(database, site, tmp_path):
    db, (_fleet, cli) = database, site
    project = django_app.copy_project(tmp_path / "release")
    django_app.deploy(project, db.url, "0003_order_total_index")
    eng = db.engine()
    with eng.begin() as conn:
        for order in ORDERS:
            conn.execute(
                sa.text("INSERT INTO shop_order (id, total_cents, created_at, note) VALUES (:i, :t, :c, :n)"),
                dict(zip("itcn", order, strict=True)),
            )
    eng.dispose()
    assert applied(db) == django_app.MIGRATIONS[:3] and "ix_order_total" in indexes(db)

    # 1. A reversible path: 0003's down drops an index, nothing else. The manifest gives {app: migration}.
    res, run_dir, the_plan = plan(
        site, manifest(site, tmp_path, "reversible", project, db, {"shop": "0002_order_note"})
    )
    assert res.returncode == 0, res.stdout + res.stderr
    (step,) = db_steps(the_plan)
    assert (step["id"], step["revision"], step["to"]) == (
        "shop.0003_order_total_index",
        "shop.0003_order_total_index",
        "shop.0002_order_note",
    )
    assert step["source"] == "shop/migrations/0003_order_total_index.py"
    assert not (step["destructive"] or step["irreversible"] or step["unclassified"]) and step["runnable"]
    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba").returncode == 0
    res = cli("run", str(run_dir / "plan.yml"), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert applied(db) == django_app.MIGRATIONS[:2]
    assert "ix_order_total" not in indexes(db)
    assert contents(db) == ORDERS
    rep = json.loads((run_dir / "report.json").read_text())["database"]
    assert rep["applied"] == ["shop.0003_order_total_index -> shop.0002_order_note"]

    # 2. A destructive step (0002's down drops the note column): refused without --destructive, nothing
    #    changed; after the approval it runs, with a verified backup of this very database first.
    res, run_dir, the_plan = plan(site, manifest(site, tmp_path, "destructive", project, db, "shop.0001_initial"))
    assert res.returncode == 0, res.stdout + res.stderr
    (step,) = db_steps(the_plan)
    assert (step["revision"], step["to"]) == ("shop.0002_order_note", "shop.0001_initial")
    assert step["destructive"] and step["runnable"] and not step["irreversible"]
    assert "drops column shop_order.note" in step["reasons"], step["reasons"]
    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba").returncode == 0
    res = cli("run", str(run_dir / "plan.yml"), "--json")
    assert res.returncode == 3, res.stdout + res.stderr
    assert "--destructive" in res.stdout + res.stderr
    assert applied(db) == django_app.MIGRATIONS[:2] and "note" in columns(db)
    assert contents(db) == ORDERS
    assert not (tmp_path / "backups-destructive").exists()

    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba", "--destructive").returncode == 0
    res = cli("resume", str(run_dir), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert applied(db) == ["0001_initial"]
    assert columns(db) == ["created_at", "id", "total_cents"]
    assert contents(db) == [o[:3] for o in ORDERS]
    rep = json.loads((run_dir / "report.json").read_text())["database"]
    assert rep["applied"] == ["shop.0002_order_note -> shop.0001_initial"]
    backup = Path(rep["backup"]["path"])
    assert backup.is_file() and backup.parent == tmp_path / "backups-destructive"
    assert rep["backup"]["sha256"] == "sha256:" + hashlib.sha256(backup.read_bytes()).hexdigest()
    assert rep["backup"]["verified"] is True and rep["backup"]["revision"] == "shop.0002_order_note"
    assert rep["identity"]["dialect"] == db.dialect
    if db.dialect == "postgresql":
        assert rep["identity"]["database"] == db.name
    else:
        assert rep["identity"]["file"] == str(Path(db.url.split("///", 1)[1]).resolve())

    # 3. The next release is deployed (0002, 0003 and 0004 again). Rolling back to 0001 lists three steps,
    #    each classified; 0004 cannot run at all, so the plan is blocked and no approval lets it run.
    django_app.deploy(project, db.url)
    assert applied(db) == django_app.MIGRATIONS
    before = contents(db)
    assert before == [(1, 1250, "2026-11-20", "legacy"), (2, 990, "2026-11-21", "legacy")]
    res, run_dir, the_plan = plan(site, manifest(site, tmp_path, "irreversible", project, db, "shop.0001_initial"))
    assert res.returncode == 3, res.stdout + res.stderr
    steps = {s["id"]: s for s in db_steps(the_plan)}
    assert [s["id"] for s in db_steps(the_plan)] == [
        "shop.0004_fill_notes",
        "shop.0003_order_total_index",
        "shop.0002_order_note",
    ]
    fill = steps["shop.0004_fill_notes"]
    assert fill["irreversible"] and not fill["runnable"]
    assert fill["reasons"][0] == "RunPython(fill_notes) has no reverse_code: Django raises IrreversibleError"
    assert not steps["shop.0003_order_total_index"]["destructive"]
    assert steps["shop.0002_order_note"]["destructive"]
    risks = " ".join(the_plan["risks"])
    assert "shop.0004_fill_notes -> shop.0003_order_total_index is irreversible and cannot run" in risks
    assert "drops column shop_order.note" in risks
    assert any("shop.0004_fill_notes" in b and "no approval lets it run" in b for b in the_plan["blockers"])
    res = cli("approve", str(run_dir / "plan.yml"), "--approver", "dba", "--destructive")
    assert res.returncode == 3 and "cannot run" in res.stderr
    report = json.loads((run_dir / "report.json").read_text())
    assert report["exit_state"] == "blocked"
    assert any("Nothing was changed" in step for step in report["next_steps"])
    gap = "database step shop.0004_fill_notes -> shop.0003_order_total_index cannot run (RunPython(fill_notes)"
    assert gap in (run_dir / "report.md").read_text()
    assert applied(db) == django_app.MIGRATIONS
    assert "ix_order_total" in indexes(db) and contents(db) == before

    # The password reached Django in its environment only: not in any file of the runs or the project.
    stage_cli.assert_secret_nowhere(SECRET, site[1].runs, project)


# ------------------------------------------------------- an app that depends on the app rolled back

BILLING_0001 = """from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = [("shop", "0002_order_note")]
    operations = [
        migrations.CreateModel(
            name="Invoice",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("amount", models.IntegerField()),
                ("order", models.ForeignKey(on_delete=models.CASCADE, to="shop.order")),
            ],
        ),
    ]
"""


class _Module:
    """What the tool uses of AnsibleModule: its params and run_command."""

    def __init__(self, **params):
        self.params = dict(python=django_app.PYTHON, url_env=None, settings={}, config=None, **params)

    def run_command(self, argv, cwd=None, environ_update=None, data=None):
        import os
        import subprocess

        res = subprocess.run(
            argv, cwd=cwd, env=dict(os.environ, **(environ_update or {})), input=data, capture_output=True, text=True
        )
        return res.returncode, res.stdout, res.stderr


class _Client:
    def tail(self, text):
        return text[-600:]


def test_django_unapplies_a_dependent_app_first_and_refuses_a_target_that_leaves_it_out(tmp_path):
    from release_rollback import content

    base = content.module_utils("dbtools.base")
    dbmigrate = content.module_utils("dbmigrate")
    tool_class = content.module_utils("dbtools.django").TOOL
    project = django_app.copy_project(tmp_path / "release")
    (project / "billing" / "migrations").mkdir(parents=True)
    (project / "billing" / "__init__.py").write_text("")
    (project / "billing" / "migrations" / "__init__.py").write_text("")
    (project / "billing" / "migrations" / "0001_initial.py").write_text(BILLING_0001)
    settings = project / "shopsite" / "settings.py"
    settings.write_text(
        settings.read_text().replace('INSTALLED_APPS = ["shop"]', 'INSTALLED_APPS = ["shop", "billing"]')
    )
    db = create("sqlite", tmp_path)
    django_app.manage(project, db.url, "migrate", "--no-input")

    def tool(target):
        module = _Module(url=db.url, migrations=str(project), target_revision=target)
        return tool_class(module, dbmigrate.parse_url(db.url), _Client())

    # shop alone: migrate would unapply billing.0001_initial too; the tool says so and names the target to write.
    t = tool("shop.0001_initial")
    with pytest.raises(base.Fail) as refused:
        t.steps(t.current(), "shop.0001_initial")
    assert (
        "also unapplies billing.0001_initial, because app billing depends on what is rolled back: name app billing "
        "in target_revision too, e.g. billing.zero+shop.0001_initial" in refused.value.msg
    )

    # Both apps named: billing first (its down drops its table), then shop, newest first.
    target = "billing.zero+shop.0001_initial"
    t = tool(target)
    now = t.current()
    assert now == "billing.0001_initial+shop.0004_fill_notes"
    assert t.migration_identity()["inode"] == str(Path(db.url.split("///", 1)[1]).stat().st_ino)
    steps = t.steps(now, target)
    assert [(s["id"], s["to"]) for s in steps] == [
        ("billing.0001_initial", "billing.zero+shop.0004_fill_notes"),
        ("shop.0004_fill_notes", "billing.zero+shop.0003_order_total_index"),
        ("shop.0003_order_total_index", "billing.zero+shop.0002_order_note"),
        ("shop.0002_order_note", "billing.zero+shop.0001_initial"),
    ]
    assert steps[0]["source"] == "billing/migrations/0001_initial.py"
    assert steps[0]["reasons"] == ["drops table billing_invoice"] and steps[0]["runnable"]
    assert not steps[1]["runnable"]

    # One step runs `manage.py migrate billing zero`; the revision read back is the step's "to".
    rc, out, err = t.downgrade(steps[0]["to"], steps[0])
    assert rc == 0, out + err
    assert t.current() == steps[0]["to"]
    assert rows(db, "SELECT app, name FROM django_migrations WHERE app = 'billing'") == []
    assert "billing_invoice" not in sa.inspect(db.engine()).get_table_names()
    assert applied(db) == django_app.MIGRATIONS

    # A target written out of order or with a short name is refused with the form to write.
    with pytest.raises(base.Fail) as refused:
        tool("shop.0001+billing.zero").current()
    assert "write it as 'billing.zero+shop.0001_initial'" in refused.value.msg


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_django_a_database_redeployed_between_approval_and_run_is_not_touched(database, site, tmp_path):
    """Compare-and-swap on Django's per-app revision: approved at shop.0003, the database is moved by a
    deploy (down to 0001) before the run; the run refuses, names both revisions and changes nothing."""
    db, (_fleet, cli) = database, site
    project = django_app.copy_project(tmp_path / "release")
    django_app.deploy(project, db.url, "0003_order_total_index")
    res, run_dir, the_plan = plan(site, manifest(site, tmp_path, "moved", project, db, "shop.0002_order_note"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert the_plan["database"]["current_revision"] == "shop.0003_order_total_index"
    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba").returncode == 0

    django_app.manage(project, db.url, "migrate", "shop", "0001_initial", "--no-input")  # the redeploy
    moved = (applied(db), columns(db), indexes(db))
    res = cli("run", str(run_dir / "plan.yml"), "--json")
    assert res.returncode != 0, res.stdout + res.stderr
    said = res.stdout + res.stderr
    assert "shop.0001_initial" in said and "shop.0003_order_total_index" in said, said
    assert (applied(db), columns(db), indexes(db)) == moved
    assert not (tmp_path / "backups-moved").exists() or not any((tmp_path / "backups-moved").iterdir())
