# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The per-run record a module keeps on the host where it changes something.

Written before each change and after it (atomically, mode 0600, never through a link; no secrets),
and read by every attempt of the same run, so that an attempt killed between two writes leaves its
facts to the next one: the database stage's restore point and backups, a flag's state before this
run turned it off, the config file an infrastructure revert replaced and kept. The stage's published
result is rebuilt from the record on every attempt: a resume merges what the earlier attempt did
instead of overwriting it. Pure Python, standard library only.
"""

from __future__ import annotations

import json
import os
import re

from ansible_collections.release.rollback.plugins.module_utils import safefs as _safefs

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def path(directory, run_id, part=None):
    """``<directory>/.release-rollback-run-<run id>[.<part>].json``, or None without a usable run id."""
    if not directory or not run_id or not _RUN_ID.match(str(run_id)):
        return None
    return os.path.join(directory, ".release-rollback-run-%s%s.json" % (run_id, "." + part if part else ""))


def load(record_path):
    """The record (a dict), or None when there is none yet. Raises ValueError naming the file when it
    cannot be read."""
    if not record_path:
        return None
    try:
        text = _safefs.read_text(record_path, 1 << 24)
        if text is None:
            return None
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise ValueError("the run's record %s cannot be read (%s): inspect or move it" % (record_path, exc)) from None
    return data if isinstance(data, dict) else None


def save(record_path, record):
    """Write the record atomically, readable by its owner only, never through a link. A missing
    directory (the run directory of a run started with ansible-playbook, before its report) is made,
    private to its owner."""
    directory = os.path.dirname(os.path.abspath(record_path))
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700, exist_ok=True)
    _safefs.write_file(record_path, json.dumps(record, indent=1, sort_keys=True, default=str), mode=0o600)
