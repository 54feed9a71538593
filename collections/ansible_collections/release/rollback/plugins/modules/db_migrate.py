#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: db_migrate
short_description: Read, classify and roll back a database's migrations, guarded, backed up and checked by identity
version_added: "1.0.0"
description:
  - Runs the migration tool against the database the way the application does; for Alembic, the
    application's Python, its C(alembic.ini) and C(env.py), with the URL in C(DATABASE_URL) and in the
    application's own variable O(url_env). Works with PostgreSQL, MariaDB/MySQL and SQLite.
  - Before anything else it proves that the backup, the migration and the integrity checks reach the
    same database, by identity rather than by URL text (PostgreSQL's system identifier, database name
    and oid; MariaDB/MySQL's host name, port, data directory and database; an SQLite file's device and
    inode), reading what C(env.py) really connects to. If they differ it refuses and names both. An
    SQLite file that does not exist is an error; it is never created.
  - With O(state=status) it reads the current revision and, given O(target_revision), lists the down
    steps in order, each classified as destructive (drops a table or column, truncates, deletes or
    overwrites rows, sets a column to NULL, narrows a type), irreversible (empty or missing downgrade,
    any C(raise)) or unclassified (what the classifier cannot read; it needs the same approval as a
    destructive step).
  - With O(state=downgraded) it refuses, before touching the database, any step that cannot run and any
    step needing approval that is not in O(approved_steps); then it takes a backup (C(pg_dump),
    C(mariadb-dump)/C(mysqldump), or an SQLite online copy) into O(backup_dir) and verifies it (sha256,
    and C(pg_restore --list), the dump's completion line, or C(PRAGMA integrity_check), each with every
    table of the database). The first backup of a run (O(run_id)) is the run's restore point, kept in a
    record next to the backups; a retry of the same run takes an additional backup, labelled with the
    revision the database is at, and never replaces the restore point. Then it downgrades one revision
    at a time, so a failure stops at the failing step and reports the exact revision reached (and, on a
    database without transactional DDL, the part of the failing step that was applied); a later attempt
    refuses to go on from a half-applied step until the schema is put right. Then it checks the result
    (revision == target, O(critical_tables) exist, O(assertions) hold).
  - The password goes to the tools in the environment (C(DATABASE_URL), C(PGPASSWORD), C(MYSQL_PWD),
    C(SQITCH_PASSWORD)), never on a command line; it is never returned or logged, and is redacted from the
    tools' error output, of which the meaningful end is returned.
options:
  state:
    description: Read the revision and the down steps, or downgrade to O(target_revision).
    type: str
    choices: [status, downgraded]
    default: status
  tool:
    description:
      - The migration tool, one of the collection's registry of tools (C(alembic), C(sql), C(sqitch), C(django),
        C(rails), C(knex), C(dbmate)); the database stage's documentation has what each runs and recognises.
      - C(alembic) runs the application's Alembic; C(sql) runs C(NNN_name.down.sql) scripts itself, in the
        golang-migrate convention (table C(schema_migrations(version, dirty))), with C(psql), C(mariadb) or
        Python's sqlite3; the others run the tool's own command from the application's directory
        (O(migrations)) with the application's environment.
    type: str
    default: alembic
  settings:
    description:
      - The tool's own settings, for example C(table) (the migrations table of C(sql), C(knex), C(dbmate)).
        A key the tool does not take is refused, naming the ones it does.
    type: dict
    default: {}
  config:
    description: The application's C(alembic.ini) (O(tool=alembic)).
    type: path
  migrations:
    description:
      - The directory of C(NNN_name.up.sql) / C(NNN_name.down.sql) scripts (O(tool=sql)), or the sqitch
        project (C(sqitch.plan), C(revert/)) for O(tool=sqitch), which sqitch reverts one change at a time.
      - For C(django), C(rails), C(knex) and C(dbmate), the application's directory in the release (where
        C(manage.py), C(bin/rails), C(knexfile.js) or C(db/migrations) are).
    type: path
  registry:
    description: The sqitch registry (C(--registry)), when it is not the default.
    type: str
  url:
    description: SQLAlchemy database URL, passed to C(env.py) as C(DATABASE_URL) (and as O(url_env)).
    type: str
    required: true
  url_env:
    description:
      - The environment variable the application's C(env.py) reads its URL from (for example C(APP_DB_URL)),
        when it is not C(DATABASE_URL). The module sets it to O(url), so Alembic migrates the database the
        backup is taken of; the identity check catches an C(env.py) that still goes elsewhere.
    type: str
  python:
    description: The application's Python interpreter (defaults to the one running this module).
    type: path
  target_revision:
    description: The revision to downgrade to (C(base) for none).
    type: str
  expected_revision:
    description: The revision the plan was made at; the module refuses to run from any other.
    type: str
  expected_identity:
    description: The identity of the database the plan was made for; the module refuses any other database.
    type: dict
  run_id:
    description:
      - The rollback run's id. The run's restore point (its first backup) and its other backups are kept in
        a record in O(backup_dir) under this id, so every attempt of the run finds and keeps them.
    type: str
  approved_steps:
    description: Ids (revisions) of destructive, irreversible or unclassified down steps a human approved.
    type: list
    elements: str
    default: []
  backup_dir:
    description: Where the backups go (created with mode 0700), with the run's record.
    type: path
  app:
    description: The application's name, used in the backup's file name.
    type: str
    default: app
  critical_tables:
    description: Tables that must exist after the rollback.
    type: list
    elements: str
    default: []
  assertions:
    description:
      - SQL checks run after the rollback. Each has C(sql) (its first column of the first row is
        compared), C(expect) (a value compared as text, or V(true) for any truthy result) and an
        optional C(name).
    type: list
    elements: dict
    default: []
requirements:
  - For O(tool=alembic), Alembic importable by the application's Python (O(python)).
  - For O(tool=sqitch), C(sqitch).
  - For O(tool=django), Django importable by the application's Python (O(python)).
  - For O(tool=rails), Ruby with the application's Rails (C(bin/rails) or C(rails)).
  - For O(tool=knex) and O(tool=dbmate), the application's C(node_modules/.bin/knex) or C(dbmate) (or on C(PATH)).
  - For PostgreSQL, C(psql); C(pg_dump) and C(pg_restore) for the backup before a down step.
  - For MariaDB or MySQL, C(mariadb) (or C(mysql)); C(mariadb-dump) (or C(mysqldump)) for the backup.
  - For SQLite, Python's C(sqlite3) module (no external command).
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details:
      - Reads the revision and classifies the down steps (read-only queries and the integrity assertions); no
        backup is taken, no run record is written and no migration runs.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode) when in diff mode.
    support: partial
    details:
      - In check mode, the revision the database is at and the one it would reach, with each down step.
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
author:
  - release-rollback contributors (@release-rollback)
"""

EXAMPLES = r"""
- name: Downgrade to the previous release's revision
  release.rollback.db_migrate:
    state: downgraded
    config: /srv/shop/current/alembic.ini
    url: "{{ vault_shop_db_url }}"
    url_env: SHOP_DATABASE_URL
    target_revision: a1b2c3
    run_id: "{{ rollback_run_id }}"
    backup_dir: /var/backups/shop
    critical_tables: [orders, customers]
    assertions:
      - {name: orders kept, sql: "select count(*) > 0 from orders", expect: true}
"""

RETURN = r"""
current:
  description: The revision the database is at after the module ran.
  returned: always
  type: str
before:
  description: The revision before the module ran.
  returned: always
  type: str
steps:
  description: The down steps from the current revision to the target, in order, classified.
  returned: when target_revision is given
  type: list
database:
  description:
    - The stage's record (no credentials) - steps, steps applied in the run, C(identity) (the database
      proven to be the one the backup, the migration and the checks reach), C(restore_point) (the run's
      first backup, verified, with its restore command), C(backups) (every backup of the run, each with
      the revision it holds), C(half_applied), C(attempt), C(error) (the meaningful end of the tool's
      error output), integrity checks. C(backup) is the restore point too.
  returned: always
  type: dict
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.release.rollback.plugins.module_utils import dbmigrate as _db
from ansible_collections.release.rollback.plugins.module_utils.dbtools import base, registry
from ansible_collections.release.rollback.plugins.module_utils.dbtools import stage as _stage
from ansible_collections.release.rollback.plugins.module_utils.dbtools.client import Client

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="status", choices=["status", "downgraded"]),
            tool=dict(type="str", default="alembic"),
            config=dict(type="path"),
            migrations=dict(type="path"),
            registry=dict(type="str"),
            settings=dict(type="dict", default={}),
            url=dict(type="str", required=True, no_log=True),
            url_env=dict(type="str"),
            python=dict(type="path"),
            target_revision=dict(type="str"),
            expected_revision=dict(type="str"),
            expected_identity=dict(type="dict"),
            run_id=dict(type="str"),
            approved_steps=dict(type="list", elements="str", default=[]),
            backup_dir=dict(type="path"),
            app=dict(type="str", default="app"),
            critical_tables=dict(type="list", elements="str", default=[]),
            assertions=dict(type="list", elements="dict", default=[]),
        ),
        required_if=[("state", "downgraded", ("target_revision",))],
        supports_check_mode=True,
    )
    p = module.params
    record = {"tool": p["tool"], "to_revision": p["target_revision"]}
    try:
        conn = _db.parse_url(p["url"])
    except ValueError as exc:
        module.fail_json(msg=str(exc), database=record)
    if conn.get("password"):
        module.no_log_values.add(conn["password"])
    record["dialect"] = conn["dialect"]
    if p["url_env"] and not _ENV_NAME.match(p["url_env"]):
        module.fail_json(msg="url_env %r is not an environment variable name" % p["url_env"], database=record)
    kind = registry.get(p["tool"])
    problem = _stage.tool_problem(kind, p)
    if problem:
        module.fail_json(msg=problem, database=record)
    state = {"before": None, "current": None, "run": None}
    try:
        client = Client(module, conn, kind.workdir(p))
        tool = kind(module, conn, client)
        # Diff mode: in check mode, the revision it would reach and each down step.
        _stage.run(module, tool, client, conn, record, state, diff=module._diff)
    except base.Fail as exc:
        record.update(exc.extra.pop("record", {}))
        if exc.extra.get("detail"):
            record["error"] = exc.extra.pop("detail")
        exc.extra.pop("detail", None)
        record["current"] = state["current"]
        record["from_revision"] = state["before"]
        run = state["run"]
        if run:
            _stage.publish_run(record, run)
            if run.get("applied") or run.get("half_applied"):
                # The run already changed this database: a refusal now is a failure to finish, not
                # a stage that changed nothing.
                exc.extra["refused"] = False
        module.fail_json(msg=exc.msg, before=state["before"], current=state["current"], database=record, **exc.extra)


if __name__ == "__main__":
    main()
