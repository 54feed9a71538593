"""The infrastructure modules called directly (ansible ad-hoc on localhost): locking, edge cases, no-ops."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKE_TERRAFORM = Path(__file__).resolve().parent / "bin" / "terraform"

pytestmark = pytest.mark.integration


def adhoc(module: str, args: dict, *flags: str) -> subprocess.Popen:
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
    )
    cmd = [str(Path(sys.executable).parent / "ansible"), "localhost", "-m", f"release.rollback.{module}"]
    return subprocess.Popen(
        [*cmd, *flags, "-a", json.dumps(args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def result(proc: subprocess.Popen) -> dict:
    """The module's result from ``localhost | STATUS => {...}``, with ``failed`` set from STATUS."""
    out, err = proc.communicate(timeout=120)
    assert "localhost | " in out, out + err
    head, _, body = out[out.index("localhost | ") :].partition(" => ")
    res = json.loads(body)
    res["failed"] = "FAILED" in head
    return res


def call(module: str, args: dict) -> dict:
    return result(adhoc(module, args))


def test_in_place_validation_waits_for_the_lock_held_by_another_tool(tmp_path):
    live, snap = tmp_path / "up.conf", tmp_path / "1.conf"
    live.write_text("bad\n")
    snap.write_text("good\n")
    seen = tmp_path / "seen"
    # The validator records what it saw in place: the snapshot, while the lock is held by the module.
    validator = ["sh", "-c", f"cat {live} > {seen}"]
    lock = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)  # the module locks the config's directory
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = adhoc("config_file_revert", {"path": str(live), "snapshot": str(snap), "validate_command": validator})
        time.sleep(3)
        assert proc.poll() is None  # waiting for the lock
        assert live.read_text() == "bad\n" and not seen.exists()
    finally:
        os.close(lock)
    res = result(proc)
    assert res["restored"] is True and res["validation"]["mode"] == "in_place"
    assert seen.read_text() == "good\n" and live.read_text() == "good\n"
    assert (tmp_path / "up.conf.rolled-back").read_text() == "bad\n"


def test_in_place_validation_failure_leaves_the_live_file_byte_for_byte(tmp_path):
    live, snap = tmp_path / "up.conf", tmp_path / "1.conf"
    live.write_bytes(b"live \xff bytes\n")
    os.chmod(live, 0o640)
    snap.write_text("broken\n")
    res = call(
        "config_file_revert",
        {"path": str(live), "snapshot": str(snap), "validate_command": ["sh", "-c", "echo nope >&2; exit 1"]},
    )
    assert res["failed"] is True and "failed validation (in place)" in res["msg"] and "nope" in res["msg"]
    assert live.read_bytes() == b"live \xff bytes\n"
    assert oct(live.stat().st_mode & 0o777) == "0o640"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.conf", "up.conf"]


def _listing(directory: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode) for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("mode", ["candidate", "in_place"])
def test_check_mode_writes_nothing_and_shows_the_diff(tmp_path, mode):
    conf = tmp_path / "conf"
    conf.mkdir()
    live, snap = conf / "up.conf", conf / "1.conf"
    live.write_text("server 10.0.0.2;\n")
    snap.write_text("server 10.0.0.1;\n")
    marker = tmp_path / "reloaded"
    seen = tmp_path / "validated"
    validator = ["sh", "-c", f"cat {{path}} > {seen}"] if mode == "candidate" else ["sh", "-c", f"touch {seen}"]
    before = _listing(conf)
    args = {
        "path": str(live),
        "snapshot": str(snap),
        "validate_command": validator,
        "reload_command": ["touch", str(marker)],
        "run_id": "r1",
    }
    out, err = adhoc("config_file_revert", args, "--check", "--diff").communicate(timeout=120)
    assert "localhost | CHANGED => " in out, out + err
    res = json.loads(out.split("localhost | CHANGED => ", 1)[1])
    assert res["changed"] is True and res["restored"] is False
    assert _listing(conf) == before, "check mode changed, added or left a file beside the config"
    assert not marker.exists()
    diff = out.split("localhost | ", 1)[0]
    assert f"--- before: {live}" in diff and "-server 10.0.0.2;" in diff and "+server 10.0.0.1;" in diff
    if mode == "candidate":
        assert res["validation"]["mode"] == "candidate" and seen.read_text() == "server 10.0.0.1;\n"
    else:
        assert res["validation"]["mode"] == "skipped_in_check_mode" and not seen.exists()


def test_a_live_file_already_equal_to_the_snapshot_changes_nothing(tmp_path):
    live, snap = tmp_path / "up.conf", tmp_path / "1.conf"
    live.write_text("same\n")
    snap.write_text("same\n")
    marker = tmp_path / "reloaded"
    res = call(
        "config_file_revert",
        {"path": str(live), "snapshot": str(snap), "reload_command": ["touch", str(marker)]},
    )
    assert res["changed"] is False and res["restored"] is False
    assert not marker.exists()


def test_a_missing_snapshot_is_one_sentence(tmp_path):
    res = call("config_file_revert", {"path": str(tmp_path / "up.conf"), "snapshot": str(tmp_path / "nope.conf")})
    assert res["failed"] is True and res["msg"].startswith("the snapshot") and "does not exist" in res["msg"]


def _project(tmp_path, wanted: dict, applied: dict) -> Path:
    project = tmp_path / "infra"
    project.mkdir()
    state = tmp_path / "state.json"
    doc = {"terraform": {"backend": {"local": {"path": str(state)}}}, "resource": {"null_resource": wanted}}
    (project / "main.tf.json").write_text(json.dumps(doc))
    state.write_text(json.dumps({"resources": {f"null_resource.{k}": v for k, v in applied.items()}}))
    return project


def test_terraform_plan_without_changes_applies_nothing(tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_TF_LOG", str(log))
    project = _project(tmp_path, {"web": {"n": 1}}, {"web": {"n": 1}})
    res = call("terraform_revert", {"project_path": str(project), "binary": str(FAKE_TERRAFORM)})
    assert res["changed"] is False and res["applied"] is False
    assert res["plan_summary"] == {"add": 0, "change": 0, "destroy": 0, "resources": []}
    assert "apply" not in [json.loads(line)["argv"][0] for line in log.read_text().splitlines()]


def test_terraform_replace_counts_as_an_add_and_a_destroy(tmp_path):
    project = _project(tmp_path, {"web": {"replace_key": "b"}}, {"web": {"replace_key": "a"}})
    res = call("terraform_revert", {"project_path": str(project), "binary": str(FAKE_TERRAFORM)})
    assert res["failed"] is True and "destroys 1 resource(s) (null_resource.web)" in res["msg"]
    assert res["plan_summary"]["add"] == 1 and res["plan_summary"]["destroy"] == 1
    assert res["plan_summary"]["resources"] == [{"address": "null_resource.web", "actions": ["delete", "create"]}]


def test_terraform_check_mode_plans_but_does_not_apply(tmp_path):
    project = _project(tmp_path, {"web": {"n": 2}}, {"web": {"n": 1}})
    args = {"project_path": str(project), "binary": str(FAKE_TERRAFORM)}
    res = result(adhoc("terraform_revert", args, "--check"))
    assert res["changed"] is True and res["applied"] is False
    assert res["plan_summary"]["change"] == 1
    assert json.loads((tmp_path / "state.json").read_text())["resources"] == {"null_resource.web": {"n": 1}}


def test_terraform_missing_binary_and_failing_plan_are_one_sentence(tmp_path):
    project = _project(tmp_path, {"web": {"n": 1}}, {})
    res = call("terraform_revert", {"project_path": str(project), "binary": "tofu-not-installed"})
    assert res["failed"] is True and "tofu-not-installed is not on this host's PATH" in res["msg"]
    (project / "main.tf.json").write_text("{ not json")
    res = call("terraform_revert", {"project_path": str(project), "binary": str(FAKE_TERRAFORM)})
    assert res["failed"] is True and "plan failed" in res["msg"] and "Failed to load configuration" in res["msg"]
