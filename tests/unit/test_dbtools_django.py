"""The Django tool's classifier on migration source text and on the SQL `sqlmigrate --backwards` prints
(no database, no Django)."""

from __future__ import annotations

import pytest
from release_rollback import content

dj = content.module_utils("dbtools.django")
guard = content.module_utils("dbmigrate")

MIGRATION = """
from django.db import migrations, models


def forwards(apps, schema_editor):
    pass


def backwards(apps, schema_editor):
    pass


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]

    operations = [
        {ops}
    ]
"""


def classify(ops: str, sql: str | None = None, **kw) -> dict:
    return dj.classify_step(MIGRATION.format(ops=ops), sql, **kw)


def test_runpython_and_runsql_without_reverse_code_cannot_run_even_with_an_approval():
    for ops, reason in [
        ("migrations.RunPython(forwards)", "RunPython(forwards) has no reverse_code: Django raises IrreversibleError"),
        ("migrations.RunPython(forwards, None)", "RunPython(forwards) has no reverse_code"),
        ("migrations.RunSQL(\"UPDATE shop_order SET note = 'x'\")", "RunSQL has no reverse_sql"),
    ]:
        v = classify(ops, irreversible="Operation ... is not reversible")
        assert v["irreversible"] and not v["runnable"], ops
        assert v["reasons"][0].startswith(reason), v["reasons"]
        step = dict(v, id="shop.0002", revision="shop.0002", to="shop.0001_initial")
        assert "cannot run" in guard.guard_problem([step], ["shop.0002"])


def test_noop_reverses_and_python_reverse_code_are_flagged_for_review():
    v = classify("migrations.RunPython(forwards, migrations.RunPython.noop)")
    assert v["unclassified"] and v["destructive"] and v["runnable"] and not v["irreversible"]
    assert v["reasons"] == [
        "RunPython(forwards) is undone with RunPython.noop: the data it changed stays as it is (review)"
    ]
    v = classify("migrations.RunPython(forwards, reverse_code=backwards)")
    assert v["unclassified"] and v["runnable"]
    assert v["reasons"] == ["RunPython reverse_code backwards runs Python the classifier cannot read"]
    v = classify('migrations.RunSQL("CREATE INDEX i ON t (c)", migrations.RunSQL.noop)')
    assert v["unclassified"] and "RunSQL.noop" in v["reasons"][0]
    step = dict(v, id="shop.0002", revision="shop.0002", to="shop.0001_initial")
    assert "--destructive" in guard.guard_problem([step], [])
    assert guard.guard_problem([step], ["shop.0002"]) is None


def test_removed_fields_and_models_come_back_empty_and_need_an_approval():
    v = classify(
        'migrations.RemoveField(model_name="order", name="note")',
        'ALTER TABLE "shop_order" ADD COLUMN "note" varchar(40) NULL;',
    )
    assert v["irreversible"] and v["runnable"] and v["destructive"] and not v["unclassified"]
    assert v["reasons"] == ["undoing RemoveField re-creates column order.note empty: its data is not restored"]
    v = classify('migrations.DeleteModel(name="Coupon")', 'CREATE TABLE "shop_coupon" ("id" bigint NOT NULL);')
    assert v["irreversible"] and v["runnable"]
    assert v["reasons"] == ["undoing DeleteModel re-creates model Coupon's table empty: its rows are not restored"]


def test_the_down_sql_of_added_fields_and_models_is_classified_by_the_sql_classifier():
    v = classify(
        'migrations.AddField(model_name="order", name="note", field=models.CharField(max_length=40, null=True))',
        '--\n-- Add field note to order\n--\nALTER TABLE "shop_order" DROP COLUMN "note" CASCADE;',
    )
    assert v["destructive"] and not v["irreversible"] and not v["unclassified"]
    assert v["reasons"] == ["drops column shop_order.note"]
    v = classify('migrations.CreateModel(name="Coupon", fields=[])', 'DROP TABLE "shop_coupon" CASCADE;')
    assert v["reasons"] == ["drops table shop_coupon"]
    v = classify(
        'migrations.AddIndex(model_name="order", index=models.Index(fields=["total_cents"], name="ix"))',
        '--\n-- Create index ix on field(s) total_cents of model order\n--\nDROP INDEX "ix";',
    )
    assert not (v["destructive"] or v["irreversible"] or v["unclassified"]) and v["runnable"]
    assert v["reasons"] == []
    v = classify('migrations.AlterModelOptions(name="order", options={"ordering": ["id"]})', "--\n-- Change Meta\n--\n")
    assert v["reasons"] == [] and not v["destructive"]


def test_what_cannot_be_read_fails_closed():
    v = classify("migrations.SeparateDatabaseAndState(database_operations=[migrations.RunPython(forwards)])")
    assert not v["runnable"]
    v = classify("CustomBackfill()")
    assert v["unclassified"] and v["reasons"] == [
        "operation CustomBackfill is not one of Django's: what its down does cannot be read"
    ]
    v = dj.classify_step("class Migration:\n    operations = build()\n", "")
    assert v["unclassified"] and "not a literal list" in v["reasons"][0]
    v = dj.classify_step("class Migration(:\n", "")
    assert v["unclassified"] and "cannot be parsed" in v["reasons"][0]
    v = dj.classify_step(None, "DROP INDEX ix;")
    assert v["unclassified"] and v["reasons"] == ["the migration file cannot be read"]
    v = classify("migrations.AlterField(model_name='o', name='n', field=models.IntegerField())", sql_error="boom")
    assert v["unclassified"] and "sqlmigrate --backwards could not print the down's SQL (boom)" in v["reasons"]
    v = classify('migrations.RunSQL("x", "DO $$ BEGIN PERFORM 1; END $$")', "DO $$ BEGIN PERFORM 1; END $$")
    assert v["unclassified"] and "procedural SQL" in v["reasons"][0]


@pytest.mark.parametrize(
    ("attr", "expected"),
    [("name", "django"), ("needs", "migrations"), ("per_app", True)],
)
def test_the_tool_describes_itself(attr, expected):
    assert getattr(dj.TOOL, attr) == expected
    assert set(dj.TOOL.settings_doc) == {"manage_py", "database"}
