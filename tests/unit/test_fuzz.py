"""Fuzz the parsers at the edge: whatever comes in, the only failure is the documented one sentence."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from release_rollback import content
from release_rollback.rundir import PlanFileError, read_plan_file

manifest = content.module_utils("manifest")
plan = content.module_utils("plan")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=300),
    st.sampled_from(["../..", "/etc/passwd", "a\nb", "$(reboot)", "`id`", "x" * 5000, "flagd", "alembic", "{version}"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
    max_leaves=20,
)
sections = st.fixed_dictionaries(
    {},
    optional={
        "app": values,
        "version": values,
        "previous_version": values,
        "reason": values,
        "flags": st.fixed_dictionaries({}, optional={"backend": values, "file": values, "names": values}) | values,
        "database": st.fixed_dictionaries(
            {}, optional={"tool": values, "config": values, "url": values, "target_revision": values, "python": values}
        )
        | values,
        "infrastructure": st.fixed_dictionaries(
            {}, optional={"kind": values, "path": values, "snapshot": values, "validate_command": values}
        )
        | values,
        "validation": st.fixed_dictionaries({}, optional={"retries": values, "delay": values, "smoke": values})
        | values,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(values, sections, st.builds(lambda s: {"rollback_manifest": s}, sections)))
@example({"app": None, "validation": {"\n": None}})  # an unknown key with a line break, named in the sentence
@example({"validation": {"k" * 5000: None}})
def test_manifest_parser_fails_only_with_one_sentence(data):
    try:
        parsed = manifest.parse_manifest(data)
    except manifest.ManifestError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600
        return
    # Whatever passes is safe to use as names and paths.
    for key in ("version", "previous_version"):
        if parsed[key] is not None:
            assert "/" not in parsed[key] and "\n" not in parsed[key]
    if parsed["flags"]:
        assert all("/" not in n for n in parsed["flags"]["names"])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2000))
def test_plan_file_reader_fails_only_with_plan_file_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("plan") / "plan.yml"
    path.write_text(text)
    try:
        read_plan_file(path)
    except PlanFileError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_approval_check_never_crashes_and_never_approves_garbage(plan_doc, approval):
    doc = plan_doc if isinstance(plan_doc, dict) else {"steps": [], "hash": "sha256:x"}
    problem = plan.approval_problem(doc, approval)
    assert problem is None or isinstance(problem, str)
    if not (isinstance(approval, dict) and approval.get("plan_hash") == plan.plan_hash(doc)):
        assert problem is not None
