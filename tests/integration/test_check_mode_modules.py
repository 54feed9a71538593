"""Every module that declares check mode changes nothing in it: ansible-playbook --check --diff, one
module at a time, against a real local fleet, and every file, link and directory (content, mode and
mtime, so a lock, candidate or temporary file that came and went counts too) is as it was.

A module whose documentation declares check mode support and has no case here fails the test that
lists them: a new module cannot slip past.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from release_rollback.demo import BAD, FLAG, GOOD, build_fleet
from replay import ReplayServer
from treestate import changes, tree_state

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "collections" / "ansible_collections" / "release" / "rollback" / "plugins" / "modules"
FAKE_TERRAFORM = Path(__file__).resolve().parent / "bin" / "terraform"
RUN_ID = "20261205T120000-0001"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A running two-host demo fleet, plus the run directory, records and Terraform project the
    controller modules use, all under one root."""
    root = tmp_path_factory.mktemp("check-mode")
    fleet = build_fleet(root / "fleet", 2)
    (root / "run").mkdir()
    (root / "records").mkdir()
    infra = root / "infra"
    state = infra / "terraform.tfstate.json"
    for version, instances in ((BAD, 4), (GOOD, 3)):
        (infra / "releases" / version).mkdir(parents=True)
        doc = {
            "terraform": {"backend": {"local": {"path": str(state)}}},
            "resource": {"null_resource": {"web": {"triggers": {"release": version, "instances": instances}}}},
        }
        (infra / "releases" / version / "main.tf.json").write_text(json.dumps(doc))
    state.write_text(
        json.dumps({"version": 4, "resources": {"null_resource.web": {"triggers": {"release": BAD, "instances": 4}}}})
    )
    server = ReplayServer().start()
    server.answer("/hooks/rollback", (204, "text/plain", ""))
    yield type("World", (), {"root": root, "fleet": fleet, "hook": server.url, "hook_server": server})
    server.stop()
    fleet.stop()


def check_diff(world, hosts: str, task: dict, tmp_path: Path, env: dict | None = None):
    """Run ``task`` with ansible-playbook --check --diff; its result is kept outside the world's tree."""
    book = tmp_path / "book.yml"
    keep = {
        "name": "Keep the result",
        "ansible.builtin.copy": {"content": "{{ out | to_json }}", "dest": str(tmp_path / "result.json")},
        "delegate_to": "localhost",
        "check_mode": False,
        "diff": False,
    }
    play = {"name": "Check mode", "hosts": hosts, "gather_facts": False, "tasks": [dict(task, register="out"), keep]}
    book.write_text(yaml.safe_dump([play]))
    run_env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", **(env or {}))
    proc = subprocess.run(
        ["ansible-playbook", "-i", str(world.fleet.inventory), str(book), "--check", "--diff"],
        cwd=ROOT,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc, json.loads((tmp_path / "result.json").read_text())


def cases(world) -> dict[str, tuple[str, dict, dict]]:
    """module -> (hosts, arguments, environment): a call that would change something for real."""
    fleet, root = world.fleet, world.root
    web1 = fleet.app_root("web1")
    conf = str(fleet.hosts["web1"] / "etc" / "app.conf")
    port = fleet.ports["web1"]
    marker = str(root / "fleet" / "ran-a-command")
    release = web1 / "releases" / BAD
    service = {
        "manager": "command",
        "restart_command": f"touch {marker}",
        "health_url": f"http://127.0.0.1:{port}/health",
        "version_url": f"http://127.0.0.1:{port}/version",
        "retries": 2,
        "delay": 0.1,
    }
    lb = [sys.executable, "-m", "release_rollback.demo_service"]
    plan = {"app": "demo-shop", "run_id": RUN_ID, "from_version": BAD, "to_version": GOOD, "hosts": {}}
    notify = {"notify": {"channels": [{"kind": "webhook", "url": world.hook + "/hooks/rollback"}]}}
    return {
        "release_facts": ("web1", {"app_root": str(web1)}, {}),
        "release_claim": ("web1", {"app_root": str(web1), "run_id": RUN_ID, "operator": "alice"}, {}),
        "release_lock": ("web1", {"app_root": str(web1), "run_id": RUN_ID}, {}),
        "release_snapshot": (
            "web1",
            {"app_root": str(web1), "release": GOOD, "config_files": [conf], "db_revision": "a1"},
            {},
        ),
        "release_switch": (
            "web1",
            {"app_root": str(web1), "target": GOOD, "config_files": [conf], "run_id": RUN_ID, "lock": True},
            {},
        ),
        "code_rollback": (
            "web1",
            dict(
                service,
                app_root=str(web1),
                target=GOOD,
                expect_live=BAD,
                config_files=[conf],
                run_id=RUN_ID,
                lock=True,
                remove_rolled_back=True,
            ),
            {},
        ),
        "app_service": ("web1", dict(service, restart=True, expect_version=GOOD), {}),
        "service_checks": (
            "localhost",
            {"smoke": [{"name": "smoke that writes", "command": f"touch {marker}"}]},
            {},
        ),
        "flag_off": (
            "localhost",
            {
                "backend": "flagd",
                "file": str(fleet.flags),
                "names": [FLAG],
                "run_id": RUN_ID,
                "record_dir": str(root / "records"),
            },
            {},
        ),
        "config_file_revert": (
            "localhost",
            {
                "path": str(fleet.lb / "upstreams.conf"),
                "snapshot": str(fleet.lb / "releases" / f"{GOOD}.conf"),
                "validate_command": [*lb, "lb-check", "{path}"],
                "reload_command": [*lb, "lb-reload", str(fleet.lb)],
                "run_id": RUN_ID,
                "record_dir": str(root / "records"),
            },
            {},
        ),
        "db_migrate": (
            "localhost",
            {
                "state": "downgraded",
                "tool": "alembic",
                "config": str(release / "alembic.ini"),
                "url": f"sqlite:///{fleet.db}",
                "python": sys.executable,
                "target_revision": "a1",
                "expected_revision": "b2",
                "run_id": RUN_ID,
                "backup_dir": str(fleet.db.parent / "backups"),
                "critical_tables": ["orders"],
            },
            {},
        ),
        "terraform_revert": (
            "localhost",
            {
                "project_path": str(root / "infra" / "releases" / GOOD),
                "binary": str(FAKE_TERRAFORM),
                "workspace": "production",
            },
            {"FAKE_TF_LOG": str(root.parent / f"{root.name}-terraform-calls.jsonl")},
        ),
        "rollback_report": (
            "localhost",
            {"run_dir": str(root / "run"), "plan": plan, "results": {}, "record_file": str(root / "releases.jsonl")},
            {},
        ),
        "rollback_notify": (
            "localhost",
            {"run_dir": str(root / "run"), "event": "started", "plan": plan, "manifest": notify},
            {},
        ),
        "rollback_signoff": ("localhost", {"run_dir": str(root / "run"), "by": "Rita"}, {}),
    }


def declares_check_mode(module: Path) -> bool:
    doc = yaml.safe_load(module.read_text().split('DOCUMENTATION = r"""', 1)[1].split('"""', 1)[0])
    return doc["attributes"]["check_mode"]["support"] in ("full", "partial")


def test_every_module_that_declares_check_mode_has_a_case_here(world):
    declared = {m.stem for m in MODULES.glob("*.py") if m.stem != "__init__" and declares_check_mode(m)}
    assert declared, "no module declares check mode: the documentation was not read"
    assert declared - set(cases(world)) == set(), "modules that declare check mode and have no check-mode case"


MODULE_NAMES = [
    "release_facts",
    "release_claim",
    "release_lock",
    "release_snapshot",
    "release_switch",
    "code_rollback",
    "app_service",
    "service_checks",
    "flag_off",
    "config_file_revert",
    "db_migrate",
    "terraform_revert",
    "rollback_report",
    "rollback_notify",
    "rollback_signoff",
]


@pytest.mark.parametrize("module", MODULE_NAMES)
def test_a_module_in_check_mode_writes_nothing(world, module, tmp_path):
    hosts, args, env = cases(world)[module]
    world.hook_server.requests.clear()
    before = tree_state(world.root)
    revision = world.fleet.db_revision()

    proc, result = check_diff(world, hosts, {f"release.rollback.{module}": args}, tmp_path, env)

    assert changes(before, tree_state(world.root)) == [], proc.stdout[-3000:]
    assert world.fleet.db_revision() == revision == "b2"
    assert world.hook_server.requests == [], "a notification was sent in check mode"
    # What each module says it would do (the dry run's output), not only that it did nothing.
    if module in ("release_switch", "code_rollback"):
        assert result["changed"] is True
        assert f"+-> ./releases/{GOOD}" in proc.stdout and "+checkout = classic" in proc.stdout
    if module == "code_rollback":
        assert result["host_result"]["release"] == BAD
        assert result["host_result"]["msg"] == f"check mode: would switch from {BAD} to {GOOD}"
    if module in ("release_claim", "release_lock"):
        assert result["changed"] is True  # it would take the lock
    if module == "app_service":
        assert result["restarted"] is False and result["changed"] is True
    if module == "service_checks":
        (smoke,) = result["checks"]
        assert smoke["skipped"] is True and smoke["msg"] == "not run in check mode: a smoke command may change things"
    if module == "flag_off":
        assert result["changed"] is True
        assert '-      "defaultVariant": "on",' in proc.stdout and '+      "defaultVariant": "off"' in proc.stdout
    if module == "config_file_revert":
        assert result["changed"] is True and f"+# release {GOOD}" in proc.stdout
    if module == "db_migrate":
        assert result["changed"] is True and result["current"] == "b2"
        assert "-revision b2" in proc.stdout and "+revision a1" in proc.stdout
    if module == "terraform_revert":
        log = Path(env["FAKE_TF_LOG"])
        verbs = [json.loads(line)["argv"] for line in log.read_text().splitlines()]
        assert [v[0] for v in verbs] == ["version", "plan", "show", "output"], verbs
        assert "-lock=false" in verbs[1] and "-lock=true" not in verbs[1]
        assert result["applied"] is False and result["changed"] is True
        assert "null_resource.web: update" in proc.stdout
    if module == "rollback_report":
        assert result["report"] == {} and result["recorded"] is False
    if module == "rollback_signoff":
        assert result.get("skipped") is True  # it does not support check mode: Ansible skips it
