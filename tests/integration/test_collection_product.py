"""The collection as a product: built, installed offline into a clean path, documented, and run from there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "collections" / "ansible_collections" / "release" / "rollback"
BIN = Path(sys.executable).parent
MODULES = sorted(p.stem for p in (COLLECTION / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
ROLES = sorted(p.name for p in (COLLECTION / "roles").iterdir() if p.is_dir())


def _env(collections_path: Path) -> dict[str, str]:
    """Only the clean path: no checkout, no sys.path collections, no ansible.cfg from the project."""
    env = dict(os.environ)
    env.pop("ANSIBLE_CONFIG", None)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(collections_path),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_ROLES_PATH=str(collections_path / "no-roles"),
        ANSIBLE_NOCOLOR="1",
    )
    return env


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Path:
    """``ansible-galaxy collection build`` of the checkout's collection."""
    work = tmp_path_factory.mktemp("galaxy")
    build = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "build", str(COLLECTION), "--output-path", str(work)],
        capture_output=True,
        text=True,
        cwd=work,
        timeout=120,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (built,) = work.glob("release-rollback-*.tar.gz")
    return built


@pytest.fixture(scope="module")
def installed(tarball) -> Path:
    """The tarball installed with ``ansible-galaxy collection install --offline`` into an empty path."""
    work = tarball.parent
    clean = work / "clean"
    install = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "install", "--offline", str(tarball), "-p", str(clean)],
        capture_output=True,
        text=True,
        cwd=work,
        env=_env(clean),
        timeout=120,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert (clean / "ansible_collections" / "release" / "rollback" / "MANIFEST.json").is_file()
    return clean


def test_tarball_holds_the_collection_and_nothing_from_the_build(installed):
    root = installed / "ansible_collections" / "release" / "rollback"
    manifest = json.loads((root / "MANIFEST.json").read_text())
    assert manifest["collection_info"]["namespace"] == "release"
    assert manifest["collection_info"]["name"] == "rollback"
    files = {f["name"] for f in json.loads((root / "FILES.json").read_text())["files"]}
    for module in MODULES:
        assert f"plugins/modules/{module}.py" in files
    for role in ROLES:
        assert f"roles/{role}/README.md" in files
    assert "meta/execution-environment.yml" in files
    assert not [f for f in files if "__pycache__" in f or f.endswith((".pyc", ".tar.gz"))]


def test_installed_collection_is_the_only_one_ansible_sees(installed):
    proc = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "list", "release.rollback", "--format", "json"],
        capture_output=True,
        text=True,
        env=_env(installed),
        cwd=installed,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert list(found) == [str(installed / "ansible_collections")]


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders_every_module_from_the_installed_collection(installed, module):
    proc = subprocess.run(
        [str(BIN / "ansible-doc"), "--json", f"release.rollback.{module}"],
        capture_output=True,
        text=True,
        env=_env(installed),
        cwd=installed,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)[f"release.rollback.{module}"]
    assert doc["doc"]["short_description"]
    assert doc["doc"]["options"], f"{module} documents no options"
    assert doc["examples"].strip() and doc["return"] is not None
    text = subprocess.run(
        [str(BIN / "ansible-doc"), f"release.rollback.{module}"],
        capture_output=True,
        text=True,
        env=_env(installed),
        cwd=installed,
        timeout=120,
    )
    assert text.returncode == 0 and "EXAMPLES:" in text.stdout and "OPTIONS" in text.stdout, text.stderr


def test_ansible_doc_lists_every_role_with_its_entry_points(installed):
    proc = subprocess.run(
        [str(BIN / "ansible-doc"), "-t", "role", "--json", "-l", "release.rollback"],
        capture_output=True,
        text=True,
        env=_env(installed),
        cwd=installed,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert sorted(name.split(".")[-1] for name in listed) == ROLES


def _specs(role: str) -> dict:
    return yaml.safe_load((COLLECTION / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_equal_defaults(role):
    defaults = yaml.safe_load((COLLECTION / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    with_default: dict[str, object] = {}
    for entry, spec in _specs(role).items():
        for name, option in (spec.get("options") or {}).items():
            if "default" not in option:
                assert name not in defaults, f"{role}:{entry} requires {name}, which defaults/main.yml defaults"
                continue
            assert name in defaults, f"{role}:{entry} defaults {name}, which defaults/main.yml lacks"
            assert option["default"] == defaults[name], f"{role}:{entry} {name}: spec and defaults/main.yml differ"
            with_default[name] = option["default"]
    assert sorted(with_default) == sorted(defaults), f"{role}: defaults/main.yml has variables no spec documents"


@pytest.mark.parametrize("role", ROLES)
def test_role_readme_documents_every_variable_with_its_default(role):
    readme = (COLLECTION / "roles" / role / "README.md").read_text()
    lines = readme.splitlines()
    assert lines[0] == f"# release.rollback.{role}"
    for entry, spec in _specs(role).items():
        assert f"### `{entry}`" in readme, f"{role}: entry point {entry} is not in the README"
        for name, option in (spec.get("options") or {}).items():
            rows = [line for line in lines if line.startswith(f"| `{name}` |")]
            assert rows, f"{role}: {name} is not documented in README.md"
            if "default" in option:
                shown = option["default"] if isinstance(option["default"], str) else json.dumps(option["default"])
                shown = shown.replace("|", "&#124;") or '""'
                assert any(f"`{shown}`" in row for row in rows), f"{role}: README shows another default for {name}"
            elif option.get("required"):
                assert any("| required |" in row for row in rows), f"{role}: README must say {name} is required"
            else:
                assert any("| unset |" in row for row in rows), f"{role}: README must say {name} is optional"


def test_rollback_runs_from_the_installed_collection_against_a_fleet(installed, fleet, tmp_path):
    """The installed tarball only, its playbook run by name from an empty directory: the whole
    rollback completes (the playbooks ship in the collection)."""
    work = tmp_path / "operator"
    work.mkdir()
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            str(fleet.inventory),
            "release.rollback.rollback",
            "-e",
            f"@{fleet.manifest}",
            "-e",
            "rollback_approved_by=alice",
            "-e",
            f"rollback_run_dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        cwd=work,
        env=_env(installed),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr
    for host in fleet.hosts:
        assert fleet.live(host) == f"./releases/{fleet.good}"
    assert fleet.db_revision() == "a1"
    assert fleet.flag()["defaultVariant"] == "off"
    assert fleet.lb_release() == fleet.good
    report = json.loads((run_dir / "report.json").read_text())
    assert report["exit_state"] == "completed"
    assert {s["stage"]: s["status"] for s in report["steps"]}["code_config"] == "ok"


def test_execution_environment_dependencies_come_from_the_collection(installed):
    proc = subprocess.run(
        [str(BIN / "ansible-builder"), "introspect", "--sanitize", str(installed)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    deps = yaml.safe_load(proc.stdout)
    python = [line.split("#")[0].strip() for line in deps["python"]]
    system = [line.split("#")[0].strip() for line in deps["system"]]
    assert python == ["alembic>=1.13", "SQLAlchemy>=2.0"]
    assert "openssh-clients [platform:rpm]" in system
    assert all("from collection release.rollback" in line for line in deps["python"] + deps["system"])


def test_execution_environment_definition_builds_a_context_with_the_collection(tarball, tmp_path):
    """``ansible-builder create`` validates the v3 definition and lays out the build (no image build here):
    the collection, and the driver's wheel that the jobs' ledger commands run from."""
    awx = tmp_path / "awx"
    shutil.copytree(ROOT / "awx", awx)
    shutil.copy2(tarball, awx / tarball.name)
    wheel = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(awx), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert wheel.returncode == 0, wheel.stdout + wheel.stderr
    (built_wheel,) = awx.glob("release_rollback-*.whl")
    definition = yaml.safe_load((awx / "execution-environment.yml").read_text())
    assert definition["version"] == 3
    requirements = yaml.safe_load((awx / "requirements.yml").read_text())
    assert requirements["collections"] == [{"name": f"collections/{tarball.name}", "type": "file"}]
    proc = subprocess.run(
        [str(BIN / "ansible-builder"), "create", "-f", "execution-environment.yml", "--context", "ctx"],
        capture_output=True,
        text=True,
        cwd=awx,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ctx = awx / "ctx"
    containerfile = next(p for p in (ctx / "Containerfile", ctx / "Dockerfile") if p.exists()).read_text()
    assert "ansible-galaxy collection install" in containerfile and "-r requirements.yml" in containerfile
    assert (ctx / "_build" / "collections" / tarball.name).is_file()
    assert {"alembic>=1.13", "SQLAlchemy>=2.0"} <= set((ctx / "_build" / "requirements.txt").read_text().split())
    assert "openssh-clients [platform:rpm]" in (ctx / "_build" / "bindep.txt").read_text()
    # The driver is installed in the image's Python, after everything else, with the ledger's PostgreSQL extra.
    assert (ctx / "_build" / "driver" / built_wheel.name).is_file()
    final = containerfile[containerfile.rindex("FROM ") :]
    install = next(line for line in final.splitlines() if "release_rollback-*.whl" in line)
    assert install.startswith("RUN /usr/bin/python3.11 -m pip install") and "[postgresql]" in install, install
    assert "release-rollback --version" in install
