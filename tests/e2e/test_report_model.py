"""One report model, rendered as Markdown, HTML and JSON: every fact of a run is in all three.

One real rollback (module-scoped) of a two-host demo fleet whose load-balancer snapshot fails
validation, with a smoke check in the manifest: the database is rolled back after a backup, the
flag is turned off, the config file is *not* restored, and validation runs its checks. The facts
are read from the run's own stage results (state.json), not from the report, and each is looked
for in report.md, in the text of report.html as headless Chromium renders it, and in the
human-facing sections of report.json and of ``run --json``'s answer.
"""

from __future__ import annotations

import html
import json
import re
import subprocess

import pytest
import yaml
from browser import chromium
from conftest import Cli
from release_rollback.demo import build_fleet

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory, ansible_home):
    root = tmp_path_factory.mktemp("report-model")
    fleet = build_fleet(root / "fleet", 2)
    try:
        snapshot = fleet.lb / "releases" / f"{fleet.good}.conf"
        snapshot.write_text(f"# release {fleet.good}\nupstream app {{\n    server nowhere;\n}}\n")
        doc = yaml.safe_load(fleet.manifest.read_text())
        doc["rollback_manifest"]["validation"]["smoke"] = [
            {"name": "web1 answers its health check", "url": f"http://127.0.0.1:{fleet.ports['web1']}/health"},
            {"name": "web2 answers its health check", "url": f"http://127.0.0.1:{fleet.ports['web2']}/health"},
        ]
        fleet.manifest.write_text(yaml.safe_dump(doc))
        cli = Cli(root / "runs", root)
        done = cli(
            "run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes", "--json"
        )  # fmt: skip
        assert done.returncode == 5, done.stdout + done.stderr
        (run_dir,) = cli.run_dirs()
        dom = chromium(root, "--dump-dom", (run_dir / "report.html").as_uri())
        assert dom.returncode == 0, dom.stderr[-2000:]
        yield {
            "results": {n: s["result"] for n, s in json.loads((run_dir / "state.json").read_text())["stages"].items()},
            "md": (run_dir / "report.md").read_text(),
            "html": _page_text(dom.stdout),
            "json": _sections_text(json.loads((run_dir / "report.json").read_text())),
            "report": json.loads((run_dir / "report.json").read_text()),
            "run --json": _sections_text(json.loads(done.stdout)),
        }
    finally:
        subprocess.run(["chattr", "-i", str(fleet.flags)], capture_output=True)
        fleet.stop()


def _page_text(dom: str) -> str:
    """What a reader of the rendered page sees: the text without tags, entities decoded."""
    body = re.sub(r"<style>.*?</style>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


def _sections_text(rep: dict) -> str:
    """Every text of the JSON report's sections (what a program shows people), joined."""
    texts = []
    for sec in rep["sections"]:
        texts.append(sec["title"])
        for fact in sec["facts"]:
            texts.append(" ".join([fact["label"] or ""] + [p["text"] for p in fact["parts"]]))
        for row in (sec["table"] or {}).get("rows", []):
            texts.append(" ".join(row))
        texts += sec["items"] or []
    return " ".join(texts)


def _in_all(run, fact: str) -> None:
    flat = " ".join(fact.split())
    for fmt in ("md", "html", "json", "run --json"):
        text = run[fmt] if fmt == "md" else " ".join(run[fmt].split())
        assert fact in run[fmt] or flat in text, f"{fact!r} is missing from the {fmt} report"


def test_the_database_backup_its_checksum_and_restore_command_are_in_every_format(partial_run):
    db = partial_run["results"]["database"]["database"]
    backup = db["backup"]
    for fact in (backup["path"], backup["sha256"], backup["restore_command"]):
        _in_all(partial_run, fact)
    assert "pg_restore" not in backup["restore_command"]  # the demo is SQLite: its own restore command


def test_each_database_integrity_check_is_in_every_format(partial_run):
    checks = partial_run["results"]["database"]["database"]["integrity"]
    assert checks
    for check in checks:
        _in_all(partial_run, f"{check['check']}: {'ok' if check['ok'] else 'FAILED'}")


def test_the_time_each_flag_was_turned_off_is_in_every_format(partial_run):
    flags = partial_run["results"]["feature_flags"]["flags"]
    assert flags
    for name, state in flags.items():
        _in_all(partial_run, name)
        _in_all(partial_run, state["time"])


def test_a_config_file_that_failed_validation_is_not_restored_in_every_format(partial_run):
    infra = partial_run["results"]["infrastructure"]["infrastructure"]
    assert infra["restored"] is False
    _in_all(partial_run, f"{infra['path']} not restored")
    _in_all(partial_run, infra["error"])
    for fmt in ("md", "html", "json", "run --json"):
        assert f"{infra['path']} restored from" not in partial_run[fmt], fmt


def test_each_validation_check_and_host_read_back_is_in_every_format(partial_run):
    validate = partial_run["results"]["validate"]
    assert len(validate["checks"]) == 2
    for check in validate["checks"]:
        _in_all(partial_run, check["name"])
        _in_all(partial_run, check["value"])
    for host, res in validate["hosts"].items():
        _in_all(partial_run, res["msg"])
        assert res["version"] and res["health"], host


def test_what_each_stage_did_is_named_in_every_format(partial_run):
    rep = partial_run["report"]
    done = {s["stage"]: s["done"] for s in rep["steps"]}
    assert done["feature_flags"] == "turned off new-checkout (flagd)"
    assert re.fullmatch(r"web1, web2: \w+ -> \w+", done["code_config"])
    assert done["database"].startswith("alembic b2 -> a1, backup /")
    assert "not restored" in done["infrastructure"]
    for text in done.values():
        _in_all(partial_run, text)
