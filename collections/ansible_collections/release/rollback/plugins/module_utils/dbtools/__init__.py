# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The database stage's migration tools: one file per tool behind ``base.MigrationTool``.

``registry.TOOLS`` names them; ``db_migrate`` and the manifest take the list from there.
"""
