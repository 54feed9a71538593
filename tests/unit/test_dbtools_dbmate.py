"""The dbmate tool's classifier on migration files (no database), its steps over a fake client, and its URL."""

from __future__ import annotations

from pathlib import Path

import pytest
from release_rollback import content

dbm = content.module_utils("dbmigrate")
dbmate = content.module_utils("dbtools.dbmate")
base = content.module_utils("dbtools.base")

APP = Path(__file__).resolve().parents[1] / "migrate_apps" / "dbmate"


def test_the_down_section_is_what_follows_its_marker_up_to_the_next_one():
    text = "-- migrate:up\nCREATE TABLE a (id int);\n\n-- migrate:down transaction:false\nDROP TABLE a;\n"
    assert dbmate.down_section(text).strip() == "DROP TABLE a;"
    text = "-- migrate:down\nDROP INDEX ix;\n-- migrate:up\nCREATE INDEX ix ON a (id);\n"
    assert dbmate.down_section(text).strip() == "DROP INDEX ix;"
    assert dbmate.down_section("-- migrate:up\nSELECT 1;\n") is None


@pytest.mark.parametrize(
    ("down", "expected"),
    [
        ("DROP TABLE orders;", (True, False, True, ["drops table orders"])),
        ("ALTER TABLE orders DROP COLUMN coupon;", (True, False, True, ["drops column orders.coupon"])),
        ("DELETE FROM orders WHERE id > 2;", (True, False, True, ["deletes rows from orders"])),
        ("UPDATE orders SET note = NULL;", (True, False, True, ["sets column orders.note to NULL"])),
        ("DROP INDEX ix_orders_total;", (False, False, True, [])),
        ("-- nothing to undo\n", (False, True, False, None)),
        ("", (False, True, False, None)),
    ],
)
def test_the_down_section_is_classified_with_the_sql_classifier(down, expected):
    v = dbmate.classify_file("-- migrate:up\nSELECT 1;\n\n-- migrate:down\n" + down)
    assert (v["destructive"], v["irreversible"], v["runnable"]) == expected[:3]
    if expected[3] is not None:
        assert v["reasons"] == expected[3]
    else:
        assert "dbmate rollback would only forget the migration" in v["reasons"][0]


def test_procedural_sql_is_unclassified_and_a_file_without_a_down_marker_cannot_run():
    v = dbmate.classify_file("-- migrate:up\nSELECT 1;\n-- migrate:down\nDO $$ BEGIN PERFORM 1; END $$;\n")
    assert v["unclassified"] and v["destructive"] and v["runnable"]
    v = dbmate.classify_file("-- migrate:up\nSELECT 1;\n")
    assert (v["irreversible"], v["runnable"]) == (True, False)


class FakeModule:
    def __init__(self, **params):
        self.params = {"url_env": None, "settings": {}, **params}

    def get_bin_path(self, name, required=False):
        return None


class FakeClient:
    def __init__(self, applied, path=None):
        self.applied, self.path = applied, path

    def has_table(self, name):
        return True

    def rows(self, sql):
        return [(v,) for v in self.applied]

    def sqlite_path(self):
        return self.path


def tool(applied, url="postgresql+psycopg://app:p%40ss@db.example:5433/shop", path=None, **settings):
    module = FakeModule(migrations=str(APP), url=url, settings=settings)
    return dbmate.Dbmate(module, dbm.parse_url(url), FakeClient(applied, path))


V = ["20261204170453", "20261204170454", "20261204170456", "20261204170457"]


def test_steps_follow_dbmates_own_order_over_the_applied_versions():
    t = tool(V)
    assert t.current() == V[3]
    steps = t.steps(V[3], V[1])
    assert [(s["revision"], s["to"]) for s in steps] == [(V[3], V[2]), (V[2], V[1])]
    assert steps[0]["source"] == "db/migrations/20261204170457_index_total.sql"
    assert [(s["destructive"], s["runnable"]) for s in t.steps(V[3], "base")] == [
        (False, True),
        (True, True),
        (False, False),
        (True, True),
    ]
    # A version applied out of order is skipped, as `dbmate rollback` skips it.
    gap = tool([V[0], V[1], V[3]])
    assert [(s["revision"], s["to"]) for s in gap.steps(gap.current(), V[1])] == [(V[3], V[1])]
    with pytest.raises(base.Fail, match="not applied"):
        gap.steps(gap.current(), V[2])
    with pytest.raises(base.Fail, match="no migration file"):
        t.steps("20270101000000", V[1])
    with pytest.raises(base.Fail, match="migrations directory"):
        tool(V, migrations_dir="elsewhere").steps(V[3], V[1])


def test_the_url_dbmate_gets_is_its_own_form_with_the_password_only_in_the_environment():
    t = tool([])
    assert t.dbmate_url() == "postgres://app:p%40ss@db.example:5433/shop?sslmode=disable"
    asked = tool([], url="postgresql://app@db.example/shop?sslmode=require")
    assert asked.dbmate_url() == "postgres://app@db.example/shop?sslmode=require"
    assert tool([], url="mysql+pymysql://root@127.0.0.1:3306/shop").dbmate_url() == "mysql://root@127.0.0.1:3306/shop"
    lite = tool([], url="sqlite:////srv/shop/shop.db", path="/srv/shop/shop.db")
    assert lite.dbmate_url() == "sqlite:/srv/shop/shop.db"


def test_dbmate_runs_with_the_url_in_the_environment_never_on_the_command_line(tmp_path):
    seen = {}

    class Recording(FakeModule):
        def run_command(self, argv, cwd=None, environ_update=None):
            seen.update(argv=argv, cwd=cwd, env=environ_update)
            return 0, "", ""

    url = "postgresql+psycopg://app:s3cret@db.example:5433/shop"
    t = dbmate.Dbmate(
        Recording(migrations=str(APP), url=url, settings={"command": "/opt/dbmate", "table": "app_versions"}),
        dbm.parse_url(url),
        FakeClient([]),
    )
    assert t.downgrade(V[2], {"revision": V[3]}) == (0, "", "")
    assert seen["argv"] == [
        "/opt/dbmate",
        "--no-dump-schema",
        "--migrations-dir",
        str(APP / "db" / "migrations"),
        "--migrations-table",
        "app_versions",
        "rollback",
    ]
    assert seen["cwd"] == str(APP)
    assert seen["env"]["DATABASE_URL"] == "postgres://app:s3cret@db.example:5433/shop?sslmode=disable"
    assert "s3cret" not in " ".join(seen["argv"])
