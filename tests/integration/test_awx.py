"""AWX as code: the workflow follows the stage table, and the configuration playbook is valid for awx.awx."""

from __future__ import annotations

import json
import os
import re
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


class _Loader(yaml.SafeLoader):
    """YAML with Ansible's ``!unsafe`` (the credential types' injector templates)."""


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
CONFIG = {k: v for f in sorted((AWX / "config").glob("*.yml")) for k, v in yaml.load(f.read_text(), _Loader).items()}
TEMPLATES = {t["name"]: t for t in CONFIG["controller_templates"]}
(WORKFLOW,) = CONFIG["controller_workflows"]
NODES = {n["identifier"]: n for n in WORKFLOW["workflow_nodes"]}
# What awx/config/ holds, and the awx.awx module each entry's keys are the options of.
LAYOUT = {
    "controller_execution_environments": "awx.awx.execution_environment",
    "controller_credential_types": "awx.awx.credential_type",
    "controller_credentials": "awx.awx.credential",
    "controller_projects": "awx.awx.project",
    "controller_templates": "awx.awx.job_template",
    "controller_workflows": "awx.awx.workflow_job_template",
}


def _template_stage(template: dict) -> str | None:
    stem = Path(template["playbook"]).stem
    return stem if stem in stages.STAGE_NAMES else None


def _stage_of(node: dict) -> str | None:
    ujt = node["unified_job_template"]
    return _template_stage(TEMPLATES[ujt["name"]]) if ujt["type"] == "job_template" else None


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
        ok = ident not in denied if _is_approval(node) else ident not in fails and _stage_of(node) not in fails
        reached.update(_children(node, ok))


def _can_run(ident: str, done: set[str], reached: set[str]) -> bool:
    return ident in reached and ident not in done


def _stages_run(**kw) -> list[str]:
    return [s for s in (_stage_of(NODES[i]) for i in _walk(**kw)) if s]


def test_every_stage_has_one_job_template_and_one_node():
    assert sorted(_template_stage(t) for t in TEMPLATES.values() if _template_stage(t)) == sorted(stages.STAGE_NAMES)
    for template in TEMPLATES.values():
        assert (ROOT / template["playbook"]).is_file(), template["playbook"]
        assert (ROOT / "collections/ansible_collections/release/rollback" / template["playbook"]).is_file()
    node_stages = [_stage_of(n) for n in NODES.values() if _stage_of(n)]
    assert sorted(node_stages) == sorted(stages.STAGE_NAMES)


APPROVED = [
    "assess",
    "plan_approval",
    "record_approval",
    "feature_flags",
    "code_config",
    "destructive_check",
    "database_approval",
    "database",
    "infrastructure",
    "validate",
    "report",
    "signoff_approval",
    "signoff",
]


def test_when_everything_succeeds_the_stages_run_in_the_procedures_order():
    assert _stages_run() == list(stages.STAGE_NAMES)
    assert _walk() == APPROVED


def test_the_plan_approval_comes_before_any_stage_that_changes_hosts():
    order = _walk()
    changing = [n for n in order if _stage_of(NODES[n]) and stages.stage(_stage_of(NODES[n]))["changes_hosts"]]
    assert order.index("plan_approval") < order.index("record_approval") < min(order.index(n) for n in changing)
    assert order.index("assess") < order.index("plan_approval")
    # Denied (or timed out): nothing changes, the report documents it.
    assert _stages_run(denied=frozenset({"plan_approval"})) == ["assess", "report"]
    # The approval job refuses (a launcher injected rollback_approval, nobody approved): nothing changes either.
    assert _stages_run(fails=frozenset({"record_approval"})) == ["assess", "report"]


def test_the_database_approval_comes_right_before_the_database_stage():
    order = _walk()
    assert order.index("destructive_check") + 1 == order.index("database_approval")
    assert order.index("database_approval") + 1 == order.index("database")
    # Denied: the database stage never runs, the rest of the procedure does (partially completed).
    assert _stages_run(denied=frozenset({"database_approval"})) == [
        "assess",
        "feature_flags",
        "code_config",
        "infrastructure",
        "validate",
        "report",
    ]


def test_destructive_steps_take_the_destructive_approval_then_its_record_then_the_database():
    """The destructive check fails when the plan has destructive steps: its failure path asks for them."""
    order = _walk(fails=frozenset({"destructive_check"}))
    assert order == [
        "assess",
        "plan_approval",
        "record_approval",
        "feature_flags",
        "code_config",
        "destructive_check",
        "destructive_approval",
        "record_destructive_approval",
        "database",
        "infrastructure",
        "validate",
        "report",
        "signoff_approval",
        "signoff",
    ]
    assert "database_approval" not in order
    # Denied: the database stage runs without the destructive approval (its guard refuses those steps
    # and says why); the approval record is never made.
    denied = _walk(fails=frozenset({"destructive_check"}), denied=frozenset({"destructive_approval"}))
    assert "record_destructive_approval" not in denied
    assert denied.index("destructive_approval") + 1 == denied.index("database")
    # The record job fails (API unreadable, approval not found): the database still runs, without it.
    broken = _walk(fails=frozenset({"destructive_check", "record_destructive_approval"}))
    assert broken.index("record_destructive_approval") + 1 == broken.index("database")
    record = TEMPLATES[NODES["record_destructive_approval"]["unified_job_template"]["name"]]
    assert record["playbook"] == "playbooks/approval.yml"
    assert record["extra_vars"] == {
        "rollback_approval_node": "destructive_approval",
        "rollback_approve_destructive": True,
    }
    plan = TEMPLATES[NODES["record_approval"]["unified_job_template"]["name"]]
    assert plan["playbook"] == "playbooks/approval.yml" and "extra_vars" not in plan
    check = TEMPLATES[NODES["destructive_check"]["unified_job_template"]["name"]]
    assert check["playbook"] == "playbooks/destructive_check.yml"


def test_signoff_follows_a_successful_report_after_its_own_approval_node():
    order = _walk()
    assert order[-3:] == ["report", "signoff_approval", "signoff"]
    assert _is_approval(NODES["signoff_approval"])
    assert TEMPLATES[NODES["signoff"]["unified_job_template"]["name"]]["playbook"] == "playbooks/signoff.yml"
    assert "signoff" not in _walk(denied=frozenset({"signoff_approval"}))
    assert "signoff_approval" not in _walk(fails=frozenset({"report"}))


def test_approval_and_signoff_jobs_have_the_awx_api_credential_and_no_approver_question():
    readers = {"playbooks/approval.yml", "playbooks/signoff.yml", "playbooks/manual_step.yml"}
    for template in TEMPLATES.values():
        spec = (template.get("survey_spec") or {}).get("spec") or []
        assert "rollback_approved_by" not in [q["variable"] for q in spec], template["name"]
        assert "rollback_signed_off_by" not in [q["variable"] for q in spec], template["name"]
        has_api = "rollback_awx_api_credential" in template["credentials"]
        assert has_api == (template["playbook"] in readers), template["name"]
    assert "rollback_approved_by" not in [q["variable"] for q in WORKFLOW["survey_spec"]["spec"]]
    (api,) = [c for c in CONFIG["controller_credentials"] if c["name"] == "release-rollback AWX API"]
    assert api["credential_type"] == "Red Hat Ansible Automation Platform"
    assert set(api["inputs"]) == {"host", "oauth_token", "verify_ssl"}


def test_every_job_runs_in_the_always_registered_execution_environment():
    (ee,) = CONFIG["controller_execution_environments"]
    configure = (AWX / "configure.yml").read_text()
    assert "when:" not in configure  # nothing is registered only sometimes
    (play,) = yaml.safe_load(configure)
    assert play["vars"]["rollback_awx_ee_image"]  # a default image name
    assert ee["name"] == "{{ rollback_awx_execution_environment }}" and ee["image"] == "{{ rollback_awx_ee_image }}"
    assert all(t["execution_environment"] == ee["name"] for t in TEMPLATES.values())
    (project,) = CONFIG["controller_projects"]
    assert project["default_environment"] == ee["name"]
    requirements = yaml.safe_load((ROOT / "collections" / "requirements.yml").read_text())
    assert "awx.awx" in [c["name"] for c in requirements["collections"]]


def test_credential_types_inject_only_environment_variables_the_collection_reads():
    """Each injected variable is one the collection reads: a role default's env lookup, or an *_env key
    of the manifest schema (the manifest names it, as docs/ansible-playbook-and-awx.md shows)."""
    collection = ROOT / "collections/ansible_collections/release/rollback"
    role_env = set()
    for defaults in collection.glob("roles/*/defaults/main.yml"):
        role_env |= set(re.findall(r"lookup\('ansible\.builtin\.env', '([A-Z_]+)'\)", defaults.read_text()))
    schema = (collection / "plugins/module_utils/manifest_schema.py").read_text()
    env_keys = set(re.findall(r'"([a-z_]+_env)"', schema))
    docs = (ROOT / "docs" / "ansible-playbook-and-awx.md").read_text()
    injected = {}
    for ctype in CONFIG["controller_credential_types"]:
        assert set(ctype["injectors"]) == {"env"}, "secrets go to environment variables only, never files or extra vars"
        assert ctype["kind"] == "cloud"
        fields = {f["id"]: f for f in ctype["inputs"]["fields"]}
        for var, template in ctype["injectors"]["env"].items():
            (field,) = re.fullmatch(r"\{\{ (\w+) \}\}", template).groups()
            assert field in fields, (ctype["name"], var)
            injected[var] = fields[field]
    assert "ROLLBACK_DB_URL" in role_env and "ROLLBACK_DB_URL" in injected
    # libpq's own variable: the ledger's password, read by the PostgreSQL client library itself.
    for var in set(injected) - role_env - {"PGPASSWORD"}:
        # Read through the manifest: some *_env key names it in the documented manifest.
        assert re.search(rf"\b({'|'.join(env_keys)}): {var}\b", docs), f"{var}: no manifest *_env names it in the docs"
    assert {"ROLLBACK_FLAGS_TOKEN", "ROLLBACK_SLACK_WEBHOOK"} <= set(injected)
    secret_fields = {v for v, f in injected.items() if f.get("secret")}
    assert {"ROLLBACK_DB_URL", "ROLLBACK_FLAGS_TOKEN", "ROLLBACK_SLACK_WEBHOOK"} <= secret_fields
    stage_templates = [t for t in TEMPLATES.values() if _template_stage(t)]
    assert all("rollback_awx_stage_credentials" in t["credentials"] for t in stage_templates)
    names = {c["credential_type"] for c in CONFIG["controller_credentials"]}
    assert {c["name"] for c in CONFIG["controller_credential_types"]} <= names
    for cred in CONFIG["controller_credentials"]:
        for value in cred["inputs"].values():
            # Secrets come from the environment of whoever configures AWX, never from this file.
            assert "lookup('ansible.builtin.env'" in value or value.startswith("{{ rollback_awx_"), value


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
    collection = content.collections_path() / "ansible_collections/release/rollback"
    for spec in (collection / "roles").glob("*/meta/argument_specs.yml"):
        for entry in yaml.safe_load(spec.read_text())["argument_specs"].values():
            documented |= set(entry.get("options") or {})
    types = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
    surveys = [(t, t.get("survey_spec")) for t in TEMPLATES.values()] + [(None, WORKFLOW["survey_spec"])]
    for template, survey in surveys:
        if template and not template["survey_enabled"]:
            assert survey is None
            continue
        assert survey["spec"], "an enabled survey asks something"
        # A playbook-level variable is documented in the header of the playbook that reads it.
        playbook = (collection / template["playbook"]).read_text() if template else ""
        for question in survey["spec"]:
            if template is None:
                assert question["variable"] == "rollback_approval_reason"
            else:
                assert question["variable"] in documented or question["variable"] in playbook, question["variable"]
            assert question["type"] in types
            assert question["question_name"] and "required" in question
            if question["type"] in ("multiplechoice", "multiselect"):
                assert question["choices"]
                if "default" in question and question["type"] == "multiplechoice":
                    assert question["default"] in question["choices"]


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
    """awx/config/ is infra.aap_configuration's layout: each entry's keys are options of the awx.awx module
    its dispatch role (and awx/configure.yml) passes them to; configure.yml applies every list."""
    (play,) = yaml.safe_load((AWX / "configure.yml").read_text())
    assert set(CONFIG) == set(LAYOUT)
    used = {}
    for task in play["tasks"]:
        module = next(k for k in task if k.startswith(("awx.awx.", "ansible.builtin.")))
        if module.startswith("awx.awx."):
            used[module] = task
    assert set(used) == set(LAYOUT.values())
    for var, module in LAYOUT.items():
        assert used[module]["loop"] == "{{ " + var + " }}"
        options = _doc(awx_collection, module)
        names = set(options) | {a for o in options.values() for a in o.get("aliases", [])}
        unknown = set(used[module][module]) - names
        assert not unknown, f"{module} has no option(s) {sorted(unknown)}"
        for entry in CONFIG[var]:
            unknown = set(entry) - names
            assert not unknown, f"{var} {entry['name']}: {module} has no option(s) {sorted(unknown)}"
            # configure.yml passes every key the entry has.
            assert set(entry) <= set(used[module][module]), set(entry) - set(used[module][module])
    node_options = _doc(awx_collection, "awx.awx.workflow_job_template")["workflow_nodes"]["suboptions"]
    for node in NODES.values():
        assert set(node) <= set(node_options), set(node) - set(node_options)
        assert set(node["unified_job_template"]) <= set(node_options["unified_job_template"]["suboptions"])
        assert set(node["related"]) <= set(node_options["related"]["suboptions"])
        assert node["unified_job_template"]["type"] in ("job_template", "workflow_approval")
