# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every migration tool the database stage runs, by the manifest's ``database.tool``.

A tool is one file in this package (see ``base.MigrationTool``) with ``TOOL = <its class>``; it is
registered by its name in the import below. Ansible ships a module to the host with only the
module_utils it imports by name, so the list is written out rather than found on disk; a test
keeps it equal to the files of the package.
"""

from __future__ import annotations

from ansible_collections.release.rollback.plugins.module_utils.dbtools import (  # one name per tool file
    alembic,
    dbmate,
    django,
    knex,
    rails,
    sqitch,
    sql,
)

TOOLS = {}


def register(tool):
    """Add a ``MigrationTool`` subclass under its ``name`` (a tool file's ``TOOL`` is added here)."""
    if not tool.name or (tool.name in TOOLS and TOOLS[tool.name] is not tool):
        raise ValueError("a migration tool needs a name of its own: %r" % (tool.name,))
    TOOLS[tool.name] = tool
    return tool


for _file in (alembic, sql, sqitch, django, rails, knex, dbmate):
    register(_file.TOOL)


def names():
    return tuple(TOOLS)


def get(name):
    return TOOLS.get(name)


def table_markdown():
    """The database stage's table of tools (docs/database.md), from the tools' own descriptions."""
    lines = [
        "| Tool | Reads | Engines | Runs | Its classifier recognises | Settings |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, tool in TOOLS.items():
        settings = "<br>".join("`%s`: %s" % (k, v) for k, v in sorted(tool.settings_doc.items())) or "none"
        lines.append(
            "| `%s` | `%s:` | %s | %s | %s | %s |"
            % (name, tool.needs, ", ".join(tool.engines), tool.runs, tool.recognises, settings)
        )
    return "\n".join(lines) + "\n"
