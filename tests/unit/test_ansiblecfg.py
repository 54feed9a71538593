"""Which ansible.cfg the driver's jobs read, and how many forks they get (driver/release_rollback/ansiblecfg.py).

The end-to-end proof (a project's ansible.cfg applies to a whole run, a world-writable directory's does
not) is in tests/e2e/test_cli_runs.py; these are the precedence rules and the machine's cap.
"""

from __future__ import annotations

import pytest
from release_rollback import ansiblecfg


@pytest.fixture
def places(tmp_path, monkeypatch):
    home, here, etc = tmp_path / "home", tmp_path / "project", tmp_path / "etc"
    for d in (home, here, etc):
        d.mkdir()
    monkeypatch.setattr(ansiblecfg, "SYSTEM_FILE", str(etc / "ansible.cfg"))
    return home, here, etc


def test_the_project_file_is_named_to_ansible_and_its_forks_kept(places):
    home, here, _etc = places
    (here / "ansible.cfg").write_text("[defaults]\nforks = 3 ; a small bastion\ncollections_path = ./vendor:/opt/c\n")
    cfg, env = ansiblecfg.job_env({"HOME": str(home)}, cwd=str(here))
    assert env == {"ANSIBLE_CONFIG": str(here / "ansible.cfg")}
    assert cfg.forks == "3" and cfg.collections == [str(here / "vendor"), "/opt/c"]


def test_ansible_config_wins_over_the_project_file_and_may_name_a_directory(places, tmp_path):
    home, here, _etc = places
    (here / "ansible.cfg").write_text("[defaults]\nforks = 3\n")
    chosen = tmp_path / "team"
    chosen.mkdir()
    (chosen / "ansible.cfg").write_text("[defaults]\ncallbacks_enabled = ansible.builtin.tree, timer\n")
    # Relative to where the operator stands, handed to the job (which runs elsewhere) as an absolute path.
    cfg, env = ansiblecfg.job_env({"HOME": str(home), "ANSIBLE_CONFIG": "../team"}, cwd=str(here))
    assert cfg.path == str(chosen / "ansible.cfg") and cfg.callbacks == ["ansible.builtin.tree", "timer"]
    # The file sets no forks, so the driver's default applies.
    assert env == {"ANSIBLE_CONFIG": str(chosen / "ansible.cfg"), "ANSIBLE_FORKS": str(ansiblecfg.machine_forks())}


def test_the_operators_forks_in_the_environment_are_left_alone(places):
    home, here, _etc = places
    _cfg, env = ansiblecfg.job_env({"HOME": str(home), "ANSIBLE_FORKS": "7"}, cwd=str(here))
    assert env == {}


def test_home_then_system_file_are_read_where_the_project_has_none(places):
    home, here, etc = places
    (etc / "ansible.cfg").write_text("[defaults]\nforks = 9\n")
    cfg, env = ansiblecfg.job_env({"HOME": str(home)}, cwd=str(here))
    assert cfg.path == str(etc / "ansible.cfg") and env == {}
    (home / ".ansible.cfg").write_text("[defaults]\nforks = 4\n")
    assert ansiblecfg.find({"HOME": str(home)}, cwd=str(here)).forks == "4"


def test_a_file_ansible_cannot_parse_is_left_to_ansible_playbook_to_report(places):
    home, here, _etc = places
    (here / "ansible.cfg").write_text("forks = 3 with no section\n")
    cfg, env = ansiblecfg.job_env({"HOME": str(home)}, cwd=str(here))
    assert env["ANSIBLE_CONFIG"] == str(here / "ansible.cfg") and cfg.forks is None


@pytest.mark.parametrize(
    ("available_kb", "nofile", "forks"),
    [
        (23_000_000, 1024, 50),  # a controller with room: the default
        (1_048_576, 1024, 17),  # 1 GiB available: half of it, 30 MB a fork
        (23_000_000, 64, 8),  # a tight descriptor limit
        (100_000, 1024, 1),  # nearly no memory: still one
    ],
)
def test_the_machine_caps_the_default_forks(available_kb, nofile, forks):
    meminfo = f"MemTotal:       24000000 kB\nMemAvailable:   {available_kb} kB\n"
    assert ansiblecfg.machine_forks(meminfo, nofile) == forks
