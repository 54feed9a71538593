"""AWX as code: the workflow follows the stage table, and the configuration playbook is valid for awx.awx."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from release_rollback import content

ROOT = Path(__file__).resolve().parents[2]
AWX = ROOT / "awx"
BIN = Path(sys.executable).parent
stages = content.module_utils("stages")

DEFINITION = yaml.safe_load((AWX / "workflow.yml").read_text())
TEMPLATES = {t["name"]: t for t in DEFINITION["rollback_awx_job_templates"]}
NODES = {n["identifier"]: n for n in DEFINITION["rollback_awx_workflow"]["nodes"]}


def _stage_of(node: dict) -> str | None:
    ujt = node["unified_job_template"]
    return TEMPLATES[ujt["name"]]["stage"] if ujt["type"] == "job_template" else None


def _is_approval(node: dict) -> bool:
    return node["unified_job_template"]["type"] == "workflow_approval"


def _children(node: dict, succeeded: bool) -> list[str]:
    related = node["related"]
    edges = related["success_nodes"] if succeeded else related["failure_nodes"]
    return [e["identifier"] for e in edges + related["always_nodes"]]


def _walk(fails: frozenset[str] = frozenset(), denied: frozenset[str] = frozenset()) -> list[str]:
    """The nodes AWX runs, in order, when the stages in ``fails`` fail and the approvals in ``denied`` are denied."""
    parents = {i: [] for i in NODES}
    for ident, node in NODES.items():
        for edge in ("success_nodes", "failure_nodes", "always_nodes"):
            for child in node["related"][edge]:
                parents[child["identifier"]].append(ident)
    roots = [i for i, p in parents.items() if not p]
    assert roots == ["assess"], f"the workflow must start at assess alone, not {roots}"
    ran: list[str] = []
    reached = set(roots)
    done: set[str] = set()
    while True:
        # A node runs once every parent is done (or never will be) and one of them leads to it.
        ready = [
            i
            for i in NODES
            if i not in done and i in reached and all(p in done or not _can_run(p, done, reached) for p in parents[i])
        ]
        if not ready:
            return ran
        ident = ready[0]
        done.add(ident)
        ran.append(ident)
        node = NODES[ident]
        ok = ident not in denied if _is_approval(node) else _stage_of(node) not in fails
        reached.update(_children(node, ok))


def _can_run(ident: str, done: set[str], reached: set[str]) -> bool:
    return ident in reached and ident not in done


def _stages_run(**kw) -> list[str]:
    return [s for s in (_stage_of(NODES[i]) for i in _walk(**kw)) if s]


def test_every_stage_has_one_job_template_and_one_node():
    assert sorted(t["stage"] for t in TEMPLATES.values() if t["stage"]) == sorted(stages.STAGE_NAMES)
    for template in TEMPLATES.values():
        assert (ROOT / template["playbook"]).is_file(), template["playbook"]
        if template["stage"]:
            assert template["playbook"] == f"playbooks/{template['stage']}.yml"
    node_stages = [_stage_of(n) for n in NODES.values() if _stage_of(n)]
    assert sorted(node_stages) == sorted(stages.STAGE_NAMES)


def test_when_everything_succeeds_the_stages_run_in_the_procedures_order():
    assert _stages_run() == list(stages.STAGE_NAMES)
    assert _walk() == [
        "assess",
        "plan_approval",
        "record_approval",
        "feature_flags",
        "code_config",
        "database_approval",
        "database",
        "infrastructure",
        "validate",
        "report",
    ]


def test_the_plan_approval_comes_before_any_stage_that_changes_hosts():
    order = _walk()
    changing = [n for n in order if _stage_of(NODES[n]) and stages.stage(_stage_of(NODES[n]))["changes_hosts"]]
    assert order.index("plan_approval") < order.index("record_approval") < min(order.index(n) for n in changing)
    assert order.index("assess") < order.index("plan_approval")
    # Denied (or timed out): nothing changes, the report documents it.
    assert _stages_run(denied=frozenset({"plan_approval"})) == ["assess", "report"]


def test_the_database_approval_comes_right_before_the_destructive_database_stage():
    order = _walk()
    assert order.index("database_approval") + 1 == order.index("database")
    assert (
        "destructive" in NODES["database_approval"]["unified_job_template"]["description"].lower()
        or "drop" in (NODES["database_approval"]["unified_job_template"]["description"])
    )
    # Denied: the database stage never runs, the rest of the procedure does (partially completed).
    assert _stages_run(denied=frozenset({"database_approval"})) == [
        "assess",
        "feature_flags",
        "code_config",
        "infrastructure",
        "validate",
        "report",
    ]


@pytest.mark.parametrize("failing", stages.STAGE_NAMES)
def test_failure_paths_follow_the_stage_table(failing):
    """The stages the workflow runs after a failure are exactly those the stage table lets run."""
    ran = _stages_run(fails=frozenset({failing}))
    results = {}
    expected = []
    for name in stages.STAGE_NAMES:
        if name == failing or stages.gate(name, results)["run"]:
            expected.append(name)
            results[name] = {"status": "failed" if name == failing else "ok"}
    assert ran == expected
    rule = stages.stage(failing)["on_failure"]
    after = ran[ran.index(failing) + 1 :]
    if rule in (stages.BLOCK, stages.HALT):
        assert after == (["report"] if failing != "report" else [])
    else:
        assert after == list(stages.STAGE_NAMES[stages.STAGE_NAMES.index(failing) + 1 :])


def test_surveys_ask_for_documented_variables_with_valid_questions():
    documented = set()
    for spec in (content.collections_path() / "ansible_collections/release/rollback/roles").glob(
        "*/meta/argument_specs.yml"
    ):
        for entry in yaml.safe_load(spec.read_text())["argument_specs"].values():
            documented |= set(entry.get("options") or {})
    documented |= {"rollback_approved_by", "rollback_approval_reason"}
    types = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
    surveys = [t["survey"] for t in TEMPLATES.values()] + [DEFINITION["rollback_awx_workflow"]["survey"]]
    for survey in surveys:
        assert survey, "every job template has a survey"
        for question in survey:
            assert question["variable"] in documented, question["variable"]
            assert question["type"] in types
            assert question["question_name"] and "required" in question
            if question["type"] in ("multiplechoice", "multiselect"):
                assert question["choices"]
                if "default" in question and question["type"] == "multiplechoice":
                    assert question["default"] in question["choices"]
    assert TEMPLATES["release-rollback approval"]["survey"][0]["variable"] == "rollback_approved_by"


@pytest.fixture(scope="module")
def _awx_download(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    where = tmp_path_factory.mktemp("awx-collection")
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:", "-d", str(where)]
    proc = subprocess.run([*pip, "ansible>=11,<13"], capture_output=True, text=True, timeout=300)
    return where, proc


@pytest.fixture
def awx_collection(_awx_download, need) -> Path:
    """awx.awx from the ``ansible`` package on PyPI (Galaxy is out of reach): only that collection, unpacked."""
    where, proc = _awx_download
    need(proc.returncode == 0, "the ansible package from PyPI (for the awx.awx collection): " + proc.stderr[-300:])
    if (where / "ansible_collections").is_dir():
        return where
    (wheel,) = where.glob("ansible-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        whl.extractall(where, [n for n in whl.namelist() if n.startswith("ansible_collections/awx/awx/")])
    wheel.unlink()
    assert (
        where / "ansible_collections" / "awx" / "awx" / "plugins" / "modules" / "workflow_job_template.py"
    ).is_file()
    return where


def _env(collections: Path) -> dict[str, str]:
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false")


def test_configure_playbook_passes_syntax_check_with_awx_awx(awx_collection):
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", str(AWX / "configure.yml")],
        capture_output=True,
        text=True,
        env=_env(awx_collection),
        cwd=AWX,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _doc(collections: Path, module: str) -> dict:
    proc = subprocess.run(
        [str(BIN / "ansible-doc"), "--json", module],
        capture_output=True,
        text=True,
        env=_env(collections),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)[module]["doc"]["options"]


def test_configure_playbook_uses_only_options_the_awx_modules_have(awx_collection):
    (play,) = yaml.safe_load((AWX / "configure.yml").read_text())
    used = {}
    for task in play["tasks"]:
        module = next(k for k in task if k.startswith(("awx.awx.", "ansible.builtin.")))
        if module.startswith("awx.awx."):
            used[module] = task[module]
    assert set(used) >= {"awx.awx.job_template", "awx.awx.workflow_job_template"}
    for module, args in used.items():
        options = _doc(awx_collection, module)
        unknown = set(args) - set(options) - {a for o in options.values() for a in o.get("aliases", [])}
        assert not unknown, f"{module} has no option(s) {sorted(unknown)}"
    node_options = _doc(awx_collection, "awx.awx.workflow_job_template")["workflow_nodes"]["suboptions"]
    for node in NODES.values():
        assert set(node) <= set(node_options), set(node) - set(node_options)
        assert set(node["unified_job_template"]) <= set(node_options["unified_job_template"]["suboptions"])
        assert set(node["related"]) <= set(node_options["related"]["suboptions"])
        assert node["unified_job_template"]["type"] in ("job_template", "workflow_approval")
