"""The manifest's flags section for every backend, and the plan's flag rows."""

from __future__ import annotations

import pytest
from release_rollback import content

manifest = content.module_utils("manifest")
plan = content.module_utils("plan")


def parse(flags: dict) -> dict:
    return manifest.parse_manifest({"flags": flags})["flags"]


def test_flagd_keeps_its_old_shape():
    assert parse({"file": "/etc/flagd/flags.json", "names": ["a"]}) == {
        "backend": "flagd",
        "names": ["a"],
        "file": "/etc/flagd/flags.json",
    }


def test_unleash_defaults_the_project_and_keeps_the_token_variable_name():
    out = parse(
        {
            "backend": "unleash",
            "url": "https://unleash.example.com",
            "environment": "production",
            "names": ["a", "b"],
            "token_env": "UNLEASH_ADMIN_TOKEN",
        }
    )
    assert out["project"] == "default" and out["token_env"] == "UNLEASH_ADMIN_TOKEN"
    assert out["timeout"] == 10 and out["validate_certs"] is True


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {"backend": "unleash", "names": ["a"], "url": "https://u", "environment": "p", "token": "x"},
            "never put a token",
        ),
        ({"backend": "unleash", "names": ["a"], "environment": "p"}, "flags.url is missing"),
        ({"backend": "launchdarkly", "names": ["a"], "project": "p"}, "flags.environment is missing"),
        ({"backend": "flagsmith", "names": ["a"], "environment": "k", "file": "/x"}, "unknown key flags.file"),
        ({"backend": "flagd", "names": ["a", "a"], "file": "/x"}, "twice"),
        ({"backend": "unleash", "names": ["a"], "url": "https://me:pw@u", "environment": "p"}, "credentials"),
        ({"backend": "unleash", "names": ["a"], "url": "ftp://u", "environment": "p"}, "http:// or https://"),
        (
            {"backend": "launchdarkly", "names": ["a"], "project": "p", "environment": "e", "token_env": "A B"},
            "token_env",
        ),
        ({"backend": "nope", "names": ["a"]}, "not supported"),
        (
            {
                "backend": "http",
                "names": ["a"],
                "request": {"url": "https://x/{flag}", "verb": "POST"},
                "read_back": {},
            },
            "unknown key flags.request.verb",
        ),
    ],
)
def test_bad_flags_sections_are_refused_with_the_fix(flags, message):
    with pytest.raises(manifest.ManifestError, match=message):
        parse(flags)


def test_http_backend_normalises_its_requests():
    out = parse(
        {
            "backend": "http",
            "names": ["a"],
            "environment": "prod",
            "token_env": "FLAGS_TOKEN",
            "request": {"method": "put", "url": "https://f/{flag}", "headers": {"Authorization": "Bearer {token}"}},
            "read_back": {"url": "https://f/{flag}", "field": "data.on"},
        }
    )
    assert out["request"] == {
        "method": "PUT",
        "url": "https://f/{flag}",
        "headers": {"Authorization": "Bearer {token}"},
        "body": None,
        "status": None,
    }
    assert out["read_back"]["method"] == "GET" and out["read_back"]["off_value"] is False


def test_the_plan_lists_each_flag_with_its_backend_and_state():
    flags = parse({"backend": "launchdarkly", "project": "shop", "environment": "production", "names": ["a", "b", "c"]})
    states = {
        "flags": {
            "a": {"before": {"off": False}},
            "b": {"before": {"off": True}},
            "c": {"error": "reading flag c: HTTP 404"},
        }
    }
    rows = plan.flag_rows(flags, states)
    assert [{k: r[k] for k in ("name", "backend", "state")} for r in rows] == [
        {"name": "a", "backend": "launchdarkly", "state": "on"},
        {"name": "b", "backend": "launchdarkly", "state": "off"},
        {"name": "c", "backend": "launchdarkly", "state": "unknown: reading flag c: HTTP 404"},
    ]
    # Each row keeps the digest of the state read (the flags stage's compare-and-swap "from"); a flag
    # that could not be read has none, so the stage will not touch it.
    assert rows[0]["from"] == plan.state_digest({"off": False}) and rows[2]["from"] is None
    assert plan.flag_system(flags) == "launchdarkly (project shop, environment production)"
