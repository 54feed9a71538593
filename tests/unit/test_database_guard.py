"""The reversibility classifier, the destructive-step guard, and how the plan and the stage table use them."""

from __future__ import annotations

import pytest
from release_rollback import content

dbm = content.module_utils("dbmigrate")
planlib = content.module_utils("plan")
stages = content.module_utils("stages")


def downgrade(body: str) -> str:
    return "from alembic import op\nimport sqlalchemy as sa\n\ndef upgrade():\n    pass\n\ndef downgrade():\n" + body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('    op.drop_table("orders")\n', "drops table orders"),
        ('    op.drop_column("orders", "coupon")\n', "drops column orders.coupon"),
        (
            '    with op.batch_alter_table("orders") as b:\n        b.drop_column("coupon")\n',
            "drops column orders.coupon",
        ),
        ('    op.execute("DELETE FROM orders WHERE id > 2")\n', "deletes rows from orders"),
        ('    op.execute(sa.text("TRUNCATE TABLE audit_log"))\n', "truncates table audit_log"),
        ('    op.execute("ALTER TABLE orders DROP coupon")\n', "drops column orders.coupon"),
        (
            '    op.alter_column("orders", "note", type_=sa.String(20), existing_type=sa.String(200))\n',
            "narrows column orders.note from length 200 to 20",
        ),
        (
            '    op.alter_column("orders", "note", type_=sa.Integer())\n',
            "changes the type of column orders.note to Integer (may narrow it)",
        ),
    ],
)
def test_data_losing_downgrades_are_destructive(body, reason):
    verdict = dbm.classify_alembic_source(downgrade(body))
    assert verdict["destructive"] is True
    assert verdict["irreversible"] is False
    assert reason in verdict["reasons"]


def test_a_type_change_is_judged_against_the_live_schema():
    body = '    op.alter_column("orders", "note", type_=sa.String(20))\n'
    narrower = dbm.classify_alembic_source(downgrade(body), {"orders": {"note": "VARCHAR(200)"}})
    wider = dbm.classify_alembic_source(downgrade(body), {"orders": {"note": "VARCHAR(10)"}})
    assert narrower["reasons"] == ["narrows column orders.note from length 200 to 20"]
    assert wider["destructive"] is False


@pytest.mark.parametrize(
    "body",
    [
        '    op.drop_index("ix_orders_created_at", table_name="orders")\n',
        '    op.drop_constraint("uq_orders", "orders")\n',
        '    op.add_column("orders", sa.Column("x", sa.Integer))\n',
        '    op.execute("ALTER TABLE orders DROP INDEX ix_a")\n',
    ],
)
def test_downgrades_that_keep_data_are_reversible(body):
    assert dbm.classify_alembic_source(downgrade(body)) == {
        "destructive": False,
        "irreversible": False,
        "runnable": True,
        "reasons": [],
    }


def test_not_implemented_and_empty_and_missing_downgrades_are_irreversible():
    raising = dbm.classify_alembic_source(downgrade('    raise NotImplementedError("one way")\n'))
    assert raising["irreversible"] and not raising["runnable"]
    assert raising["reasons"] == ["downgrade() raises NotImplementedError"]
    empty = dbm.classify_alembic_source(downgrade('    """Nothing to undo."""\n    pass\n'))
    assert empty["irreversible"] and empty["runnable"]
    missing = dbm.classify_alembic_source("revision = 'x'\ndef upgrade():\n    pass\n")
    assert missing["irreversible"] and not missing["runnable"]
    assert dbm.classify_sql_script(None)["reasons"] == ["there is no down script"]
    assert dbm.classify_sql_script("-- nothing\n;")["irreversible"]


def test_sql_classifier_ignores_comments():
    assert dbm.classify_sql("-- DROP TABLE orders\nDROP INDEX ix_a;") == []
    assert dbm.classify_sql("DROP TABLE IF EXISTS `orders`;") == ["drops table orders"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+psycopg://shop:s%40cret@db.example.com:5433/shop",
            {"dialect": "postgresql", "user": "shop", "password": "s@cret", "host": "db.example.com", "port": 5433},
        ),
        ("mysql+pymysql://root@127.0.0.1/shop", {"dialect": "mysql", "user": "root", "password": None}),
        ("sqlite:////srv/app/app.db", {"dialect": "sqlite", "path": "/srv/app/app.db"}),
    ],
)
def test_urls_are_split_for_the_dump_tools(url, expected):
    parsed = dbm.parse_url(url)
    for key, value in expected.items():
        assert parsed[key] == value


def test_backup_commands_keep_the_password_off_the_command_line():
    conn = dbm.parse_url("postgresql://shop:hunter2@db:5432/shop")
    argv, env, restore = dbm.backup_commands(conn, "/b/x.pgdump", "/usr/bin/pg_dump")
    assert "hunter2" not in " ".join(argv) and "hunter2" not in restore
    assert env == {"PGPASSWORD": "hunter2"}
    conn = dbm.parse_url("mariadb+pymysql://shop:hunter2@db/shop")
    argv, env, restore = dbm.backup_commands(conn, "/b/x.sql", "/usr/bin/mariadb-dump")
    assert "hunter2" not in " ".join(argv) + restore and env == {"MYSQL_PWD": "hunter2"}
    assert restore.startswith("mariadb --host db --user shop shop < /b/x.sql")


STEPS = [
    {"id": "c3", "revision": "c3", "to": "b2", "destructive": False, "irreversible": False, "runnable": True},
    {
        "id": "b2",
        "revision": "b2",
        "to": "a1",
        "destructive": True,
        "irreversible": False,
        "runnable": True,
        "reasons": ["drops column orders.coupon"],
    },
]


def _plan():
    plan = {"scope": ["database"], "blockers": [], "database": {"steps": STEPS, "current_revision": "c3"}}
    plan["hash"] = planlib.plan_hash(plan)
    return plan


def test_the_database_gate_needs_a_destructive_approval_naming_the_steps():
    plan = _plan()
    results = {"assess": {"status": "ok"}}
    plain = planlib.approval_record(plan, "alice")
    gate = planlib.stage_gate("database", results, plan, plain)
    assert gate["run"] is False and gate["status"] == "blocked"
    assert "b2 -> a1" in gate["reason"] and "--destructive" in gate["reason"]
    assert "c3 -> b2" not in gate["reason"]
    # Other stages are not held back by the database's guard.
    assert planlib.stage_gate("feature_flags", results, dict(plan, scope=["feature_flags"]), plain)["run"] is False
    approved = planlib.approval_record(plan, "alice", destructive=True)
    assert approved["destructive_steps"] == ["b2"]
    assert planlib.stage_gate("database", results, plan, approved)["run"] is True


def test_an_approval_that_does_not_name_a_step_does_not_cover_it():
    plan = _plan()
    forged = dict(planlib.approval_record(plan, "alice"), destructive=True, destructive_steps=["c3"])
    assert planlib.stage_gate("database", {"assess": {"status": "ok"}}, plan, forged)["run"] is False


def test_an_unrunnable_step_is_refused_even_when_approved():
    steps = [dict(STEPS[0], irreversible=True, runnable=False, reasons=["downgrade() raises NotImplementedError"])]
    assert "cannot run" in dbm.guard_problem(steps, ["c3"])


def test_a_blocked_database_stage_lets_infrastructure_and_validation_run():
    verdict = stages.decide("database", stages.BLOCKED)
    assert verdict["go"] is True and verdict["blocked"] is False and verdict["limitation"]
    assert stages.decide("code_config", stages.BLOCKED)["blocked"] is True
    results = {
        "assess": {"status": "ok"},
        "feature_flags": {"status": "ok", "changed": True},
        "code_config": {"status": "ok", "changed": True},
        "database": {"status": "blocked", "changed": False},
    }
    assert stages.gate("infrastructure", results)["run"] is True
    results.update({n: {"status": "ok"} for n in ("infrastructure", "validate", "report")})
    assert stages.exit_state(results) == stages.PARTIAL


def test_the_plan_lists_the_down_steps_in_order_with_their_risks():
    manifest = content.module_utils("manifest").parse_manifest(
        {
            "version": "2",
            "database": {"config": "/srv/a/alembic.ini", "url": "postgresql://u:pw@h/db", "target_revision": "a1"},
        }
    )
    facts = {"web1": {"live": "2", "previous": "1", "releases": ["1", "2"]}}
    plan = planlib.build_plan(manifest, facts, {"current": "c3", "steps": STEPS}, {"scope": ["database"]})
    step = next(s for s in plan["steps"] if s["stage"] == "database")
    assert step["down_steps"] == ["c3 -> b2", "b2 -> a1"]
    assert any("b2 -> a1 is destructive (drops column orders.coupon)" in r for r in plan["risks"])
    assert plan["database"]["url"] == "postgresql://u:***@h/db"
    assert "pw" not in str(plan["database"]) and "pw" not in str(plan["steps"])
