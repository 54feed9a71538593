"""The Rails tool's classifier on migration source text (no database, no Ruby), and the URL it gives
Rails."""

from __future__ import annotations

import pytest
from release_rollback import content

rails = content.module_utils("dbtools.rails")


def migration(body: str) -> str:
    return f"# frozen_string_literal: true\n\nclass Thing < ActiveRecord::Migration[6.1]\n{body}\nend\n"


def verdict(body: str) -> tuple:
    v = rails.classify_source(migration(body))
    kind = (
        "cannot run"
        if not v["runnable"]
        else "irreversible"
        if v["irreversible"]
        else "unclassified"
        if v["unclassified"]
        else "destructive"
        if v["destructive"]
        else "reversible"
    )
    return kind, v["reasons"]


DOWN = "  def up\n    add_column :orders, :x, :string\n  end\n\n  def down\n%s\n  end"
CHANGE = "  def change\n%s\n  end"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # down, as it is written
        (DOWN % "    remove_column :orders, :coupon", ("destructive", ["drops column orders.coupon"])),
        (DOWN % "    remove_column(:orders, :coupon, :string)", ("destructive", ["drops column orders.coupon"])),
        (
            DOWN % '    remove_columns "orders", :a, :b',
            ("destructive", ["drops column orders.a", "drops column orders.b"]),
        ),
        (DOWN % "    drop_table :coupons, if_exists: true", ("destructive", ["drops table coupons (and its rows)"])),
        (
            DOWN % "    change_column :orders, :note, :string, limit: 20",
            ("destructive", ["changes the type of column orders.note to string (may narrow it)"]),
        ),
        (DOWN % "    remove_reference :orders, :customer", ("destructive", ["drops column orders.customer_id"])),
        (
            DOWN % "    change_table :orders do |t|\n      t.remove :note\n      t.index :total\n    end",
            ("destructive", ["drops column orders.note"]),
        ),
        (DOWN % "    remove_index :orders, :placed_on\n    rename_column :orders, :a, :b", ("reversible", [])),
        (
            DOWN % "    create_table :legacy do |t|\n      t.string :name, null: false\n      t.timestamps\n    end",
            ("reversible", []),
        ),
        (
            DOWN % '    execute "UPDATE orders SET coupon = NULL"',
            ("destructive", ["sets column orders.coupon to NULL"]),
        ),
        (
            DOWN
            % "    execute <<~SQL\n      DELETE FROM orders WHERE total = 0;\n      CREATE INDEX ix ON orders (a);\n"
            "    SQL",
            ("destructive", ["deletes rows from orders"]),
        ),
        (DOWN % "    execute 'CREATE INDEX ix_a ON orders (a)'", ("reversible", [])),
        (
            DOWN % '    sql = "DROP TABLE coupons"\n    execute sql',
            ("destructive", ["drops table coupons"]),
        ),
        (
            DOWN % '    execute "DELETE FROM #{table_name}"',
            (
                "unclassified",
                ["runs SQL built at run time (execute), which cannot be read before it runs"],
            ),
        ),
        (
            DOWN % """    execute "UPDATE orders SET a = '#{quote("x}")}'"\n    remove_column :orders, :a""",
            (
                "unclassified",
                [
                    "drops column orders.a",
                    "runs SQL built at run time (execute), which cannot be read before it runs",
                ],
            ),
        ),
        (
            DOWN % "    Order.where(total: 0).delete_all",
            ("unclassified", ["calls Order.where.delete_all, which the classifier cannot follow"]),
        ),
        (DOWN % "    cleanup_orders", ("unclassified", ["calls cleanup_orders, which the classifier cannot follow"])),
        (
            DOWN % "    raise ActiveRecord::IrreversibleMigration",
            ("cannot run", ["down raises ActiveRecord::IrreversibleMigration"]),
        ),
        (
            DOWN % '    raise ActiveRecord::IrreversibleMigration, "cents"\n    remove_column :orders, :x',
            ("cannot run", ["down raises ActiveRecord::IrreversibleMigration (cents)", "drops column orders.x"]),
        ),
        (
            DOWN % '    raise "orders exist" if select_value("SELECT COUNT(*) FROM orders").to_i > 0\n'
            "    remove_index :orders, :a",
            ("irreversible", ["down may raise RuntimeError (orders exist): the schema may not be reverted"]),
        ),
        (
            DOWN % "    if column_exists?(:orders, :x)\n      remove_column :orders, :x\n    end",
            ("destructive", ["drops column orders.x"]),
        ),
        (
            DOWN % "    remove_column :orders, :x if column_exists?(:orders, :x)",
            ("destructive", ["drops column orders.x"]),
        ),
        (
            DOWN % "    # nothing: end do if\n",
            ("irreversible", ["down does nothing on the way down: the schema would not be reverted"]),
        ),
        (
            "  def self.up\n  end\n\n  def self.down\n    drop_table :a\n  end",
            ("destructive", ["drops table a (and its rows)"]),
        ),
        (
            "  def up\n    add_index :orders, :a\n  end",
            (
                "irreversible",
                [
                    "the migration has no down or change method: ActiveRecord would only delete its version, "
                    "the schema would not be reverted"
                ],
            ),
        ),
        # change: what ActiveRecord runs backwards
        (CHANGE % "    add_index :orders, :placed_on", ("reversible", [])),
        (CHANGE % "    add_column :orders, :coupon, :string", ("destructive", ["drops column orders.coupon"])),
        (
            CHANGE % "    create_table :coupons do |t|\n      t.string :code\n    end",
            ("destructive", ["drops table coupons (and its rows)"]),
        ),
        (
            CHANGE % "    change_table :orders do |t|\n      t.string :a, :b\n      t.index :a\n    end",
            ("destructive", ["drops column orders.a", "drops column orders.b"]),
        ),
        (CHANGE % "    remove_column :orders, :note, :string", ("reversible", [])),
        (
            CHANGE % "    remove_column :orders, :note",
            (
                "cannot run",
                [
                    "ActiveRecord cannot reverse remove_column orders.note without a type in change "
                    "(IrreversibleMigration)"
                ],
            ),
        ),
        (
            CHANGE % "    change_column :orders, :note, :text",
            ("cannot run", ["ActiveRecord cannot reverse change_column orders.note in change (IrreversibleMigration)"]),
        ),
        (
            CHANGE % '    execute "UPDATE orders SET total = total * 100"',
            ("cannot run", ["ActiveRecord cannot reverse execute in change (IrreversibleMigration)"]),
        ),
        (
            CHANGE % "    drop_table :legacy",
            (
                "cannot run",
                [
                    "ActiveRecord cannot reverse drop_table legacy without its definition (a block or options) "
                    "in change (IrreversibleMigration)"
                ],
            ),
        ),
        (CHANGE % "    drop_table :legacy do |t|\n      t.string :name\n    end", ("reversible", [])),
        (CHANGE % "    change_column_default :orders, :total, from: nil, to: 0", ("reversible", [])),
        (
            CHANGE % "    add_column :orders, :x, :integer\n    reversible do |dir|\n"
            '      dir.up { execute "UPDATE orders SET x = 1" }\n'
            '      dir.down do\n        execute "UPDATE orders SET total = 0"\n      end\n    end',
            ("destructive", ["drops column orders.x", "overwrites column orders.total (its old values are lost)"]),
        ),
        (
            CHANGE % '    reversible do |dir|\n      dir.up { execute "UPDATE orders SET total = total * 100" }\n'
            "      dir.down { raise ActiveRecord::IrreversibleMigration }\n    end",
            ("cannot run", ["change raises ActiveRecord::IrreversibleMigration"]),
        ),
        (
            CHANGE % '    reversible do |dir|\n      dir.up { execute "UPDATE orders SET total = 1" }\n    end',
            ("irreversible", ["change does nothing on the way down: the schema would not be reverted"]),
        ),
        (CHANGE % "", ("irreversible", ["change does nothing on the way down: the schema would not be reverted"])),
        (
            CHANGE
            % "    add_column :orders, :x, :string\n    Order.reset_column_information\n    Order.update_all(x: 'a')",
            ("unclassified", ["drops column orders.x", "calls Order.update_all, which the classifier cannot follow"]),
        ),
    ],
)
def test_each_way_down_is_classified_failing_closed(body, expected):
    assert verdict(body) == expected


def test_strings_and_comments_that_look_like_ruby_do_not_confuse_the_reader():
    body = (
        "  # def down; end\n"
        "  def change\n"
        '    add_index :orders, :placed_on, name: "end do if" # do end\n'
        "    say_with_time 'indexing' do\n"
        "      add_index :orders, [:a, :b], where: %q(a > 0 and b <> 'end')\n"
        "    end\n"
        "  end"
    )
    assert verdict(body) == ("reversible", [])


@pytest.mark.parametrize(
    "source",
    [
        "class Thing < ActiveRecord::Migration[6.1]\n  def down\n    remove_column :a, :b\n",  # no end
        "module Shop\n  class Thing < ActiveRecord::Migration[6.1]\n  end\nend\n",  # no class at the top
        "class Thing\n  def down\n  end\nend\n",  # not a migration
        "class Thing < ActiveRecord::Migration[6.1]\n  def down\n    execute <<~SQL\n      DROP TABLE a\n  end\nend\n",
    ],
)
def test_ruby_it_cannot_read_is_unclassified(source):
    v = rails.classify_source(source)
    assert v["unclassified"] and v["destructive"] and v["runnable"]
    assert v["reasons"][0].startswith("the migration's Ruby cannot be read")


def test_a_missing_file_cannot_run():
    v = rails.classify_source(None)
    assert (v["irreversible"], v["runnable"]) == (True, False)


class _Module:
    def __init__(self, url):
        self.params = {"url": url, "migrations": "/srv/shop/current", "settings": {}, "url_env": "SHOP_DB"}


class _Client:
    def sqlite_path(self):
        return "/srv/shop/shared/db.sqlite3"


def _tool(url):
    tool = rails.Rails.__new__(rails.Rails)
    tool.p = {"url": url, "url_env": "SHOP_DB"}
    tool.conn = content.module_utils("dbmigrate").parse_url(url)
    tool.client = _Client()
    tool.rails_env = "production"
    return tool


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://shop:p%40ss%2Fw@db1:5433/shop", "postgresql://shop:p%40ss%2Fw@db1:5433/shop"),
        ("postgresql://shop@db1/shop?sslmode=require", "postgresql://shop@db1/shop?sslmode=require"),
        ("mysql+pymysql://root:pw@127.0.0.1:3306/shop", "mysql2://root:pw@127.0.0.1:3306/shop"),
        ("sqlite:////srv/shop/shared/db.sqlite3", "sqlite3:/srv/shop/shared/db.sqlite3"),
    ],
)
def test_rails_gets_the_manifest_database_in_its_own_url_form_in_the_environment(url, expected):
    tool = _tool(url)
    assert tool.rails_url() == expected
    env = tool.app_env()
    assert env == {"DATABASE_URL": expected, "RAILS_ENV": "production", "SHOP_DB": expected}
