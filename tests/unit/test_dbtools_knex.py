"""The Knex tool's classifier on migration source (no database), its steps over a fake client, and its URL."""

from __future__ import annotations

from pathlib import Path

import pytest
from release_rollback import content

content.module_utils("dbmigrate")
knex = content.module_utils("dbtools.knex")
base = content.module_utils("dbtools.base")

APP = Path(__file__).resolve().parents[1] / "migrate_apps" / "knex"


def down(body: str) -> str:
    return "exports.up = function(knex) {\n  return knex.schema.createTable('x', (t) => t.increments());\n};\n\n" + body


@pytest.mark.parametrize(
    ("source", "reasons"),
    [
        (
            down("exports.down = function(knex) {\n  return knex.schema.dropTable('orders');\n};"),
            ["drops table orders"],
        ),
        (down("exports.down = (knex) => knex.schema.dropTableIfExists('audit');"), ["drops table audit"]),
        (
            down(
                "exports.down = async (knex) => {\n  await knex.schema.table('orders', (t) => {\n"
                "    t.dropColumn('coupon');\n  });\n};"
            ),
            ["drops column orders.coupon"],
        ),
        (
            down("exports.down = (knex) => knex.schema.alterTable('orders', (t) => t.dropColumns('a', 'b'));"),
            ["drops column orders.a", "drops column orders.b"],
        ),
        (
            "module.exports = {\n  async up(knex) {},\n  async down(knex) {\n"
            "    await knex('orders').where('id', '>', 2).del();\n  },\n};",
            ["deletes rows from orders"],
        ),
        (
            "export async function down(knex) {\n  await knex.raw('TRUNCATE TABLE audit_log');\n}",
            ["truncates table audit_log"],
        ),
        (down("exports.down = (knex) => knex('orders').update({ coupon: null });"), ["overwrites rows of orders"]),
        (
            down(
                "exports.down = (knex) => knex.schema.alterTable('orders', (t) => {\n"
                "  t.string('note', 20).alter();\n});"
            ),
            ["changes the type of column orders.note (may narrow it)"],
        ),
        (down("exports.down = (knex) => knex('audit').truncate();"), ["truncates table audit"]),
    ],
)
def test_data_losing_down_functions_are_destructive(source, reasons):
    v = knex.classify_down(source)
    assert (v["destructive"], v["irreversible"], v["runnable"], v["unclassified"]) == (True, False, True, False)
    assert v["reasons"] == reasons


@pytest.mark.parametrize(
    "source",
    [
        down(
            "exports.down = function(knex) {\n  return knex.schema.alterTable('orders', (t) => {\n"
            "    t.dropIndex(['total'], 'ix_orders_total');\n  });\n};"
        ),
        down("exports.down = (knex) => knex.raw('DROP INDEX ix_orders_total');"),
        # a name in a comment or a string is not a call
        down(
            "// knex.schema.dropTable('orders') is done by hand\nexports.down = (knex) =>\n"
            "  knex.schema.table('orders', (t) => { t.dropUnique(['code']); t.comment('dropTable later'); });"
        ),
        down("exports.down = down;\n\nasync function down(knex) {\n  await knex.schema.dropView('v_orders');\n}"),
    ],
)
def test_down_functions_that_lose_nothing_are_reversible(source):
    assert knex.classify_down(source) == base.verdict()


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (down("exports.down = async (knex) => {\n  await dropEverything(knex);\n};"), "calls dropEverything()"),
        (down("exports.down = (knex, t) => knex.raw(`DELETE FROM ${t}`);"), "runs SQL built at run time"),
        (down("exports.down = (knex) => knex.raw('DELETE FROM ' + table);"), "runs SQL built at run time"),
        (down("exports.down = require('./shared').down;"), "not a function the classifier can read"),
        (down("exports.down = (knex) => knex.raw('DELETE FROM ??', ['orders']);"), "bound at run time"),
        (down("exports.down = (knex) => knex.raw('DROP INDEX ix');\nconst s = 'unterminated;"), "to its end"),
    ],
)
def test_what_the_classifier_cannot_follow_is_unclassified(source, reason):
    v = knex.classify_down(source)
    assert v["unclassified"] and v["destructive"] and v["runnable"]
    assert any(reason in r for r in v["reasons"]), v["reasons"]


def test_missing_empty_and_throwing_down_functions_are_irreversible():
    none = knex.classify_down("exports.up = function(knex) {};\n")
    assert (none["irreversible"], none["runnable"], none["reasons"]) == (True, False, ["there is no down function"])
    for empty in ("exports.down = function() {};", "exports.down = () => Promise.resolve();"):
        v = knex.classify_down(down(empty))
        assert (v["irreversible"], v["runnable"], v["destructive"]) == (True, True, False)
    thrown = knex.classify_down(down("exports.down = () => {\n  throw new Error('no way back');\n};"))
    assert (thrown["irreversible"], thrown["runnable"]) == (True, False)
    assert thrown["reasons"] == ["down() throws (no way back)"]
    maybe = knex.classify_down(
        down(
            "exports.down = async (knex) => {\n  if (await knex('orders').first()) {\n"
            "    throw new Error('orders exist');\n  }\n  await knex.schema.dropTable('orders');\n};"
        )
    )
    assert (maybe["irreversible"], maybe["runnable"], maybe["destructive"]) == (True, True, True)
    assert maybe["reasons"] == ["down() may throw (orders exist)", "drops table orders"]


def test_the_test_apps_migrations_are_classified_as_their_names_say():
    verdicts = {p.name: knex.classify_down(p.read_text()) for p in sorted((APP / "migrations").glob("*.js"))}
    assert [(v["destructive"], v["irreversible"], v["runnable"]) for v in verdicts.values()] == [
        (True, False, True),  # create_orders: dropTable
        (False, True, False),  # convert_to_cents: throws
        (True, False, True),  # add_coupon: dropColumn
        (False, False, True),  # index_total: dropIndex
    ]


# ----------------------------------------------------------------------------- the tool, no database


class FakeModule:
    def __init__(self, **params):
        self.params = {"url": "postgresql+psycopg://u@h/db", "url_env": None, "settings": {}, **params}

    def get_bin_path(self, name, required=False):
        return None


class FakeClient:
    def __init__(self, applied, locked=0):
        self.applied, self.locked = applied, locked

    def has_table(self, name):
        return True

    def rows(self, sql):
        if "is_locked" in sql:
            return [(str(self.locked),)]
        return [(name,) for name in self.applied]


def tool(applied, locked=0, url="postgresql+psycopg://app:p%40ss w@db.example:5433/shop"):
    dbm = content.module_utils("dbmigrate")
    module = FakeModule(migrations=str(APP), url=url)
    return knex.Knex(module, dbm.parse_url(url), FakeClient(applied, locked))


def test_steps_walk_down_the_applied_files_newest_first_and_a_held_lock_is_dirty():
    names = sorted(p.name for p in (APP / "migrations").glob("*.js"))
    t = tool(names)
    assert t.current() == names[-1] and t.dirty is None
    steps = t.steps(names[-1], names[1])
    assert [(s["revision"], s["to"]) for s in steps] == [(names[3], names[2]), (names[2], names[1])]
    assert steps[0]["source"] == "migrations/" + names[3]
    with pytest.raises(base.Fail, match="the revision is the file name"):
        t.steps(names[-1], names[1][:-3])
    with pytest.raises(base.Fail, match="never applied"):
        gap = tool([names[0], names[1], names[3]])
        gap.steps(gap.current(), names[0])
    # The plan's path from above the database's revision (a run that stopped part-way) is still a path.
    part = tool(names[:3])
    part.current()
    assert [s["revision"] for s in part.steps(names[3], names[1])] == [names[3], names[2]]
    locked = tool(names, locked=1)
    locked.current()
    with pytest.raises(base.Fail, match="knex_migrations_lock is held"):
        locked.require_clean()


def test_the_url_knex_gets_is_nodes_form_with_the_password_only_there():
    t = tool([])
    assert t.node_url() == "postgres://app:p%40ss%20w@db.example:5433/shop"
    assert t._env() == {"DATABASE_URL": "postgres://app:p%40ss%20w@db.example:5433/shop"}
    assert "p@ss w" not in " ".join(t._options()) and "p%40ss" not in " ".join(t._options())
    assert tool([], url="mysql+pymysql://root@127.0.0.1:3306/shop").node_url() == "mysql://root@127.0.0.1:3306/shop"
