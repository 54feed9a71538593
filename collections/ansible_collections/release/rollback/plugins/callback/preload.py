# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Load the collection's filters once, in the controller process, before any worker is forked."""

from __future__ import annotations

DOCUMENTATION = r"""
name: preload
type: aggregate
author: release-rollback contributors (@release-rollback)
version_added: 1.0.0
short_description: Load the collection's filters once per play run instead of once per task
description:
  - "ansible-playbook forks a worker for every task on every host, and a worker that templates one of
    the collection's filters (C(release.rollback.stage_gate), C(release.rollback.build_plan), ...) imports
    the filter plugin and the module_utils behind it from source, because the collection loader keeps no
    bytecode. That costs about 0.2 s of CPU per task."
  - "This callback imports them once in the controller process when the playbook starts, so every
    forked worker inherits them already loaded. It prints nothing and changes no result."
  - "The C(release-rollback) driver enables it for its own jobs. With C(ansible-playbook) or AWX, enable it
    with C(callbacks_enabled = release.rollback.preload) in C(ansible.cfg) or
    E(ANSIBLE_CALLBACKS_ENABLED=release.rollback.preload)."
requirements:
  - enable in configuration (C(callbacks_enabled))
"""

from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import filter_loader


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "release.rollback.preload"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Any one of the collection's filters loads the plugin file, and with it every module_util
        # the filters use; forked workers then find them in sys.modules.
        filter_loader.get("release.rollback.stage_gate")
