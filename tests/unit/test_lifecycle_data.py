"""The run lifecycle as data (module_utils/lifecycle.py): the generated page, and the rules every
command is checked against. The CLI's use of it is proven by tests/e2e/test_lifecycle*.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from release_rollback import content

lifecycle = content.module_utils("lifecycle")
ROOT = Path(__file__).resolve().parents[2]
RUN = "/srv/ops/.rollback/runs/20261204T031500-1234"


def test_docs_lifecycle_md_is_generated_from_the_lifecycle_data():
    # Regenerate with: python -m release_rollback.docs
    assert (ROOT / "docs" / "lifecycle.md").read_text() == lifecycle.markdown()


@pytest.mark.parametrize("state", [s["name"] for s in lifecycle.STATES if not s["final"]])
def test_every_state_that_is_not_final_names_a_command_with_the_run_s_real_path(state):
    commands = lifecycle.next_commands(state, RUN, pid=4242)
    assert commands and all(RUN in c or "4242" in c for c in commands)
    assert not any(placeholder in c for c in commands for placeholder in ("RUN_DIR", "PLAN", "NAME"))


@pytest.mark.parametrize("state", [s["name"] for s in lifecycle.STATES])
@pytest.mark.parametrize("command", ["run", "resume", "abort", "approve"])
def test_every_refusal_names_the_run_s_directory_to_look_at(command, state):
    # A refused command points at the run it refused: the operator pastes the next command as it is.
    problem = lifecycle.refusal(command, state, RUN, pid=4242)
    assert problem is None or f"{RUN}" in problem, problem


@pytest.mark.parametrize(
    "command,state,fragment",
    [
        ("run", "completed", "is completed and never executes again"),
        ("run", "aborted", "is aborted and never executes again"),
        ("run", "paused", "has already started executing"),
        ("resume", "completed", "never executes again"),
        ("resume", "planned", "has not started"),
        ("abort", "completed", "only an unfinished run can be aborted"),
        ("abort", "running", "is running now; stop it first"),
        ("approve", "aborted", "is not possible while run"),
    ],
)
def test_commands_a_state_does_not_allow_are_refused_with_what_to_do_instead(command, state, fragment):
    problem = lifecycle.refusal(command, state, RUN, pid=4242)
    assert problem and fragment in problem


@pytest.mark.parametrize(
    "command,state",
    [
        ("approve", "planned"),
        ("run", "approved"),
        ("resume", "paused"),
        ("resume", "partially completed"),
        ("abort", "paused"),
        ("abort", "approved"),
        ("signoff", "completed"),
    ],
)
def test_commands_a_state_allows_pass(command, state):
    assert lifecycle.refusal(command, state, RUN) is None


def test_final_states_allow_no_execution():
    for state in lifecycle.FINAL:
        assert not lifecycle.allowed("run", state) and not lifecycle.allowed("resume", state)
        assert not lifecycle.allowed("abort", state)
