# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release record: which releases were rolled back (known-bad), as JSON lines later plans read.

Pure Python, standard library only.
"""

from __future__ import annotations

import json
import os

from ansible_collections.release.rollback.plugins.module_utils import safefs as _safefs


def json_lines(fh):
    """The JSON values of a file of JSON lines; a line that is not JSON is passed over."""
    for line in fh:
        try:
            yield json.loads(line)
        except ValueError:
            continue


def known_bad(record_file, app=None):
    """Releases the controller's release record marks rolled back / known-bad: version -> run id.

    ``app`` limits it to one application. A missing or unreadable record is empty.
    """
    out = {}
    if not record_file or not os.path.exists(record_file):
        return out
    with open(record_file, encoding="utf-8") as fh:
        for entry in json_lines(fh):
            if not isinstance(entry, dict) or not entry.get("version"):
                continue
            if app and entry.get("app") not in (None, app):
                continue
            if entry.get("known_bad") or entry.get("status") == "rolled_back":
                out[str(entry["version"])] = entry.get("run_id")
            elif entry.get("status") == "good":
                out.pop(str(entry["version"]), None)  # cleared after a fix: usable again
    return out


def record_release(record_file, rep):
    """Append the release's fate to the release record that later plans read (JSON lines)."""
    if not record_file or rep.get("release_record", {}).get("status") != "rolled back":
        return False
    os.makedirs(os.path.dirname(os.path.abspath(record_file)), exist_ok=True)
    entry = {
        "app": rep.get("app"),
        "version": rep.get("from_version"),
        "status": "rolled_back",
        "known_bad": True,
        "rolled_back_to": rep.get("to_version"),
        "run_id": rep.get("run_id"),
        "time": rep.get("generated"),
    }
    if rep["release_record"].get("environment"):
        entry["environment"] = rep["release_record"]["environment"]
    # Appended without following a link planted at its name, 0600 whatever the umask.
    _safefs.append_line(record_file, json.dumps(entry, sort_keys=True), mode=0o600)
    return True
