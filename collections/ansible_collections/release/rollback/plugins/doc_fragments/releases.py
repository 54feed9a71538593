# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Options of the modules that read or switch a host's deploy directory."""

    # Every module that reads <app_root>/releases and <app_root>/current.
    DOCUMENTATION = r"""
options:
  releases_dir:
    description: Name of the releases directory under O(app_root).
    type: str
    default: releases
  current_dir:
    description: Name of the live release link under O(app_root).
    type: str
    default: current
"""

    LAYOUT = r"""
options:
  layout:
    description:
      - Force the layout instead of detecting it from the C(current) link.
      - C(capistrano) appends to C(revisions.log) when a host is switched.
    type: str
    choices: [auto, ansistrano, capistrano, versions]
    default: auto
"""

    # The switch of a host back to a release (release_switch, code_rollback).
    SWITCH = r"""
options:
  app_root:
    description: The deploy_to directory.
    type: path
    required: true
  target:
    description: The release to switch to.
    type: str
    required: true
  config_files:
    description: Absolute paths of configuration files outside the release to restore from the target's snapshot.
    type: list
    elements: path
    default: []
  run_id:
    description: The rollback run, written into the lock and the C(ROLLED_BACK) mark.
    type: str
  reason:
    description: Why the release is rolled back, written into the C(ROLLED_BACK) mark.
    type: str
  user:
    description: Who rolls back, written into the mark, the lock and Capistrano's C(revisions.log).
    type: str
  remove_rolled_back:
    description: Delete the rolled-back release instead of keeping it marked (ansistrano's behaviour).
    type: bool
    default: false
  lock:
    description:
      - Hold C(<app_root>/.rollback.lock) for O(run_id) while the host changes.
      - Refuse when another run holds it.
    type: bool
    default: false
  break_stale_lock:
    description: Replace a lock older than an hour held by another run (its holder is reported).
    type: bool
    default: false
"""
