"""A command that starts no job, checks no file and sends nothing loads none of what those need.

An operator runs ``status``, ``report`` and ``audit verify`` many times in an incident, and every
test and job guard starts the CLI again: ansible-runner, ansible's HTTP client (with the TLS stack
under it) and ansible's argument-spec validator are imported by the code that uses them, when it
does. Checked through the installed entry point with ``python -X importtime``, which names every
module the process imports.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

# Each is loaded by the one thing that needs it: a job, a notification, a manifest or runbook check.
LOADED_ON_USE = ("ansible_runner", "ansible.module_utils.urls", "ansible.module_utils.common.arg_spec", "cryptography")


def _imported(args, tmp_path) -> set[str]:
    entry = shutil.which("release-rollback", path=os.path.dirname(sys.executable))
    assert entry, "the release-rollback entry point is not installed next to this Python"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", entry, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, RELEASE_ROLLBACK_RUNS_DIR=str(tmp_path / "runs")),
    )
    names = {line.rpartition("|")[2].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "release_rollback.cli" in names, proc.stderr[-2000:]
    return names


def test_status_loads_neither_ansible_runner_nor_the_http_client_nor_the_validator(tmp_path):
    (tmp_path / "runs").mkdir()
    names = _imported(["status"], tmp_path)
    loaded = sorted(n for n in names if any(n == m or n.startswith(m + ".") for m in LOADED_ON_USE))
    assert loaded == [], f"`release-rollback status` imported {loaded}"


def test_a_notification_and_a_manifest_check_still_load_what_they_use(tmp_path):
    code = (
        "from release_rollback import content\n"
        "import sys\n"
        "notify = content.module_utils('notify')\n"
        "try:\n"
        "    notify.http_json('http://127.0.0.1:9/', {}, timeout=1)\n"
        "except OSError:\n"
        "    pass\n"
        "content.module_utils('manifest_schema')._validate({})\n"
        "print('ansible.module_utils.urls' in sys.modules, 'ansible.module_utils.common.arg_spec' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.split() == ["True", "True"], out.stderr[-2000:]
