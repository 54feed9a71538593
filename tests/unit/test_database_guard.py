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
        "unclassified": False,
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


HELPERS = (
    "from alembic import op\nimport sqlalchemy as sa\n\nTABLE = 'coupons'\nCOLUMN = \"code\"\n"
    "CLEANUP = 'DELETE FROM ' + TABLE\n\n"
    "def _drop(name, schema=None):\n    op.drop_table(name, schema=schema)\n\n"
    "def _clear():\n    _drop(TABLE)\n\n"
    "def upgrade():\n    pass\n\ndef downgrade():\n"
)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # Helper functions of the file are followed, with their arguments and the file's constants.
        ("    _drop('orders')\n", "drops table orders"),
        ("    _clear()\n", "drops table coupons"),
        ("    _drop(TABLE, schema='shop')\n", "drops table shop.coupons"),
        ("    op.drop_column(TABLE, COLUMN)\n", "drops column coupons.code"),
        ("    op.drop_column(table_name='orders', column_name='coupon')\n", "drops column orders.coupon"),
        ("    op.execute(CLEANUP)\n", "deletes rows from coupons"),
        ("    op.execute(f'TRUNCATE {TABLE}')\n", "truncates table coupons"),
        ("    for t in ('a', 'b'):\n        op.drop_table(t)\n", "drops table b"),
        # UPDATE ... SET col = NULL, in SQL text or built with SQLAlchemy.
        ("    op.execute('UPDATE orders SET coupon = NULL WHERE id > 1')\n", "sets column orders.coupon to NULL"),
        (
            "    orders = sa.table('orders', sa.column('coupon'))\n"
            "    op.execute(orders.update().values(coupon=None))\n",
            "sets column orders.coupon to NULL",
        ),
        ("    op.get_bind().execute(sa.text('UPDATE orders SET total = 0'))\n", "overwrites column orders.total"),
        # Quoted, qualified names are named in full.
        ('    op.execute(\'DROP TABLE "public"."orders"\')\n', "drops table public.orders"),
    ],
)
def test_helpers_constants_and_every_kind_of_data_loss_are_followed(body, reason):
    verdict = dbm.classify_alembic_source(HELPERS + body)
    assert verdict["destructive"] is True, verdict
    assert any(r.startswith(reason) for r in verdict["reasons"]), verdict["reasons"]
    assert not any("None" in r or r.endswith(" public") for r in verdict["reasons"])


@pytest.mark.parametrize(
    "body",
    [
        "    from myapp.migrations import cleanup\n    cleanup()\n",
        "    op.execute(build_sql())\n",
        "    op.execute('DO $$ BEGIN EXECUTE format(''DROP TABLE %I'', t); END $$')\n",
        "    getattr(op, 'drop_' + 'table')('orders')\n",
    ],
)
def test_what_the_classifier_cannot_read_is_unclassified_and_needs_the_destructive_approval(body):
    verdict = dbm.classify_alembic_source(downgrade(body))
    assert verdict["unclassified"] is True and verdict["destructive"] is True, verdict
    step = dict(verdict, id="b2", revision="b2", to="a1")
    assert dbm.needs_approval(step)
    assert "--destructive" in dbm.guard_problem([step], [])
    assert dbm.guard_problem([step], ["b2"]) is None


def test_any_raise_is_irreversible_and_an_unconditional_one_cannot_run():
    always = dbm.classify_alembic_source(downgrade('    raise RuntimeError("amounts were converted")\n'))
    assert always["irreversible"] and not always["runnable"]
    assert always["reasons"] == ["downgrade() raises RuntimeError"]
    sometimes = dbm.classify_alembic_source(
        downgrade(
            "    bind = op.get_bind()\n"
            "    if bind.execute(sa.text('SELECT COUNT(*) FROM orders')).scalar():\n"
            "        raise RuntimeError('orders exist')\n"
            "    op.drop_index('ix_orders_total', table_name='orders')\n"
        )
    )
    assert sometimes["irreversible"] and sometimes["runnable"]
    assert sometimes["reasons"] == ["downgrade() may raise RuntimeError: the schema may not be reverted"]
    assert "--destructive" in dbm.guard_problem([dict(sometimes, id="b2", revision="b2", to="a1")], [])
    in_helper = dbm.classify_alembic_source(
        HELPERS.replace("def upgrade", "def _fail():\n    raise ValueError('x')\n\ndef upgrade") + "    _fail()\n"
    )
    assert in_helper["irreversible"] and not in_helper["runnable"]
    assert in_helper["reasons"] == ["downgrade() raises ValueError in _fail() (called from downgrade())"]


@pytest.mark.parametrize(
    ("sql", "reasons"),
    [
        (
            "UPDATE orders o SET total = 1, coupon = NULL WHERE id = 1",
            ["overwrites column orders.total (its old values are lost)", "sets column orders.coupon to NULL"],
        ),
        (
            "ALTER TABLE `shop`.`orders` MODIFY COLUMN note VARCHAR(20);",
            ["changes the type of column shop.orders.note to VARCHAR(20) (may narrow it)"],
        ),
        (
            "ALTER TABLE orders ALTER COLUMN note TYPE varchar(10)",
            ["changes the type of column orders.note to varchar(10) (may narrow it)"],
        ),
        ("ALTER TABLE orders DROP coupon, DROP INDEX ix_a", ["drops column orders.coupon"]),
        ("TRUNCATE a, b CASCADE", ["truncates table a", "truncates table b"]),
        ("INSERT INTO audit (note) VALUES ('DROP TABLE orders')", []),
        ("CALL purge_orders()", ["runs CALL, whose SQL cannot be read before it runs"]),
    ],
)
def test_sql_text_is_read_statement_by_statement(sql, reasons):
    assert dbm.classify_sql(sql) == reasons


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
    assert not [r for r in plan["risks"] if "hosts left out of this rollback (" in r]
    # A host left out keeps the release it runs while the schema goes back under it: the approver is told.
    options = {"scope": ["database"], "excluded": {"web2": "excluded with --exclude"}}
    plan = planlib.build_plan(manifest, facts, {"current": "c3", "steps": STEPS}, options)
    assert (
        "the database goes back to revision a1 while the hosts left out of this rollback (web2) keep the release "
        "they run: check that it works with the older schema, or plan without leaving them out"
    ) in plan["risks"]


def test_a_plan_without_the_code_leaves_every_host_where_it_is_and_names_one_newer_than_the_bad_release():
    # The code went back on web1; a fix (3) went out to web2 since: the schema is still the bad release's.
    manifest = content.module_utils("manifest").parse_manifest(
        {
            "version": "2",
            "database": {"config": "/srv/a/alembic.ini", "url": "sqlite:////srv/a.db", "target_revision": "a1"},
        }
    )
    facts = {
        "web1": {"live": "1", "previous": None, "releases": ["1", "2"]},
        "web2": {"live": "3", "previous": "2", "releases": ["1", "2", "3"]},
    }
    status = {"current": "c3", "steps": STEPS}
    blocked = planlib.build_plan(manifest, facts, status, {})
    assert blocked["blockers"][0].startswith("no host runs the manifest's release 2 (they run 1, 3)")
    assert "plan them alone: --scope database --scope validate" in blocked["blockers"][0]
    plan = planlib.build_plan(manifest, facts, status, {"scope": ["database", "validate"]})
    assert plan["blockers"] == []
    assert {h: v["target"] for h, v in plan["hosts"].items()} == {"web1": "1", "web2": "3"}
    assert (
        "hosts run different releases and the code is not in this plan's scope: each host stays on the release it "
        "runs, and validation checks it there: web1: 1 -> 1; web2: 3 -> 3"
    ) in plan["risks"]
    assert (
        "the database goes back to revision a1 while hosts run a release newer than the bad 2 (web2): check that it "
        "works with the older schema"
    ) in plan["risks"]


SQLALCHEMY_REFUSED = """Traceback (most recent call last):
  File "/srv/app/.venv/lib/python3.11/site-packages/psycopg/connection.py", line 130, in connect
    raise last_ex.with_traceback(None)
psycopg.OperationalError: connection failed: connection to server at "127.0.0.1", port 5499 failed: Connection refused
\tIs the server running on that host and accepting TCP/IP connections?

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "<string>", line 50, in <module>
  File "/srv/app/.venv/lib/python3.11/site-packages/sqlalchemy/engine/base.py", line 3273, in connect
    return self._connection_cls(self)
sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection failed: connection to server at "127.0.0.1", \
port 5499 failed: Connection refused
\tIs the server running on that host and accepting TCP/IP connections?
(Background on this error at: https://sqlalche.me/e/20/e3q8)
"""


def test_error_tails_keep_the_drivers_words_not_the_sqlalchemy_link_and_hide_secrets():
    tail = dbm.error_tail(SQLALCHEMY_REFUSED)
    assert "Connection refused" in tail and "Is the server running" in tail
    assert "sqlalche.me" not in tail and "File " not in tail
    pg_dump = (
        'pg_dump: error: connection to server at "db" (10.0.0.5), port 5432 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?\n"
    )
    assert "Connection refused" in dbm.error_tail(pg_dump)
    leaked = (
        "sqlalchemy.exc.OperationalError: cannot connect to postgresql://shop:hunter2@db/shop as shop/hunter2\n"
        "[parameters: {'card': '4111111111111111'}]\n"
    )
    tail = dbm.error_tail(leaked, ["hunter2"])
    assert "hunter2" not in tail and "4111" not in tail and "postgresql://shop:***@db/shop" in tail


def test_identities_compare_the_server_and_the_database_not_the_url():
    a = dbm.identity_from_row("postgresql", ["7715126699881629824", "shop", "16384", "false"])
    b = dbm.identity_from_row("postgresql", ["7715126699881629824", "shop_old", "16390", "false"])
    assert dbm.same_database(a, dict(a)) is True and dbm.same_database(a, b) is False
    assert dbm.same_database(a, None) is None
    assert dbm.describe_identity(a) == (
        "PostgreSQL database shop (oid 16384) on the cluster with system identifier 7715126699881629824"
    )
    m = dbm.identity_from_row("mysql", ["db1", "3306", "/var/lib/mysql/", "shop"])
    assert "MariaDB/MySQL database shop on server db1:3306" in dbm.describe_identity(m)


@pytest.mark.parametrize("tool", ["alembic", "sqitch"])
def test_an_unquoted_numeric_revision_is_refused_for_revision_ids(tool):
    manifest = content.module_utils("manifest")
    key = "config" if tool == "alembic" else "migrations"
    with pytest.raises(manifest.ManifestError, match=r"read as a number.*quote it"):
        manifest.parse_manifest({"database": {"tool": tool, key: "/srv/a/x", "target_revision": 1}})
    ok = manifest.parse_manifest({"database": {"tool": tool, key: "/srv/a/x", "target_revision": "0001"}})
    assert ok["database"]["target_revision"] == "0001"
    sql = manifest.parse_manifest({"database": {"tool": "sql", "migrations": "/srv/m", "target_revision": 3}})
    assert sql["database"]["target_revision"] == "3"
    env = manifest.parse_manifest(
        {"database": {"config": "/srv/a/alembic.ini", "url_env": "APP_DB_URL", "target_revision": "a1"}}
    )
    assert env["database"]["url_env"] == "APP_DB_URL"
    with pytest.raises(manifest.ManifestError, match="url_env"):
        manifest.parse_manifest({"database": {"config": "/a/alembic.ini", "url_env": "A B", "target_revision": "a1"}})


def _db_plan(steps, scope, facts=None, target=None, record=None):
    manifest = content.module_utils("manifest").parse_manifest(
        {
            "version": "3",
            "database": {"config": "/srv/a/alembic.ini", "url": "postgresql://u@h/db", "target_revision": "a1"},
        }
    )
    facts = facts or {
        "web1": {"live": "3", "previous": "2", "releases": ["1", "2", "3"], "record": record, "previous_source": "x"}
    }
    options = {"scope": scope, "target": target}
    return planlib.build_plan(manifest, facts, {"current": "c3", "steps": steps, "identity": {"x": 1}}, options)


def test_a_step_that_cannot_run_blocks_the_plan_and_one_needing_approval_says_which():
    unrunnable = dict(STEPS[0], irreversible=True, runnable=False, reasons=["downgrade() raises RuntimeError"])
    plan = _db_plan([unrunnable, STEPS[1]], ["code_config", "database"])
    assert plan["blockers"] == [
        "database step c3 -> b2 cannot run (downgrade() raises RuntimeError): no approval lets it run. With a DBA, "
        "restore the database from a backup taken before the release or roll the schema forward with a new "
        "migration; to roll back the rest now, plan again with --scope code_config"
    ]
    plan = _db_plan(STEPS, ["code_config", "database"])
    assert plan["blockers"] == []
    step = next(s for s in plan["steps"] if s["stage"] == "database")
    assert step["approval"] == "needs `approve --destructive` for b2 -> a1"
    assert plan["database"]["identity"] == {"x": 1}


def test_the_plan_warns_when_code_and_database_targets_disagree():
    only_db = _db_plan(STEPS[:1], ["database"])
    assert any("only the database is rolled back" in r and "code stays on release 3" in r for r in only_db["risks"])
    both = _db_plan(STEPS[:1], ["code_config", "database"])
    assert not any("only the database" in r or "more than one release back" in r for r in both["risks"])
    far = _db_plan(STEPS[:1], ["code_config", "database"], target="1", record={"db_revision_before": "b2"})
    assert any(
        "--target 1 is more than one release back (the previous release is 2), but the database goes to revision a1"
        in r
        and "recorded b2" in r
        for r in far["risks"]
    )


def test_an_unreadable_database_is_a_blocker_that_does_not_repeat_nothing_was_changed():
    manifest = content.module_utils("manifest").parse_manifest(
        {"database": {"config": "/srv/a/alembic.ini", "target_revision": "a1"}}
    )
    facts = {"web1": {"live": "2", "previous": "1", "releases": ["1", "2"]}}
    status = {"failed": True, "msg": "schema_migrations is dirty at version 3: fix it; nothing was changed"}
    plan = planlib.build_plan(manifest, facts, status, {"scope": ["database"]})
    assert plan["blockers"] == ["the database could not be assessed: schema_migrations is dirty at version 3: fix it"]


def test_destructive_changes_list_what_the_awx_destructive_approval_node_covers():
    """The AWX workflow's destructive check asks for the destructive approval exactly when this list is not empty."""
    plan = _db_plan(STEPS, ["code_config", "database"])
    (change,) = planlib.destructive_changes(plan)
    assert change == {
        "stage": "database",
        "id": "b2",
        "what": "database down step b2 -> a1",
        "why": "drops column orders.coupon",
    }
    # The approval that covers them is the one that lets the database stage run them.
    approved = planlib.approval_record(plan, "dana", destructive=True)
    assert approved["destructive_steps"] == [change["id"]]
    assert planlib.stage_gate("database", {"assess": {"status": "ok"}}, plan, approved)["run"] is True
    # Out of scope, reversible, or no database: nothing destructive.
    assert planlib.destructive_changes(_db_plan(STEPS, ["code_config"])) == []
    assert planlib.destructive_changes(_db_plan([STEPS[0]], ["database"])) == []
    # A Terraform apply may destroy: it is listed, since what it destroys is known only when it plans.
    terraform = dict(plan, steps=[*plan["steps"], {"stage": "infrastructure", "kind": "terraform", "action": "x"}])
    assert [c["id"] for c in planlib.destructive_changes(terraform)] == ["b2", "terraform"]
    config_file = dict(plan, steps=[{"stage": "infrastructure", "kind": "config_file", "action": "x"}])
    assert [c["stage"] for c in planlib.destructive_changes(config_file)] == ["database"]
