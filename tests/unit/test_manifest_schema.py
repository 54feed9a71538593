"""The manifest's schema is checked at every depth: unknown keys get the key they most likely meant."""

from __future__ import annotations

import pytest
from release_rollback import content

schema = content.module_utils("manifest_schema")

DB = {"tool": "alembic", "config": "/srv/app/alembic.ini", "target_revision": "a1"}


@pytest.mark.parametrize(
    "data,sentence",
    [
        ({"datbase": DB}, "unknown manifest key 'datbase' (did you mean database?): the keys are app, database,"),
        (
            {"database": dict(DB, backup_dri="/var/backups")},
            "unknown key database.backup_dri (did you mean backup_dir?): the keys of database are assertions,",
        ),
        (
            {"database": dict(DB, assertions=[{"sql": "select 1", "expcet": 1}])},
            "unknown key database.assertions.expcet (did you mean expect?): the keys of database.assertions are",
        ),
        (
            {"validation": {"prometheus": {"url": "http://p:9090", "queries": [{"query": "up", "maxx": 1}]}}},
            "unknown key validation.prometheus.queries.maxx (did you mean max?)",
        ),
        (
            {"notify": {"channels": [{"kind": "slack", "url_env": "SLACK_URL", "evnts": ["completed"]}]}},
            "unknown key notify.channels.evnts (did you mean events?)",
        ),
        (
            {"infrastructure": {"kind": "config_file", "snapshot_path": "/x"}},
            "unknown key infrastructure.snapshot_path",
        ),
        ({"rca": {"kind": "github", "repo": "acme/shop", "token_env": "GH", "labes": []}}, "did you mean labels?"),
        ({"flags": {"names": ["a"], "file": "/f.json", "token": "s3cr3t"}}, "never put a token in the manifest"),
    ],
)
def test_unknown_keys_at_any_depth_are_refused_with_a_suggestion(mu, data, sentence):
    with pytest.raises(mu.manifest.ManifestError) as err:
        mu.manifest.parse_manifest({"rollback_manifest": data})
    assert sentence in str(err.value)
    assert "\n" not in str(err.value) and "s3cr3t" not in str(err.value)


@pytest.mark.parametrize(
    "data,sentence",
    [
        ({"database": True}, "database must be a mapping (key: value lines), not bool"),
        ({"validation": {"smoke": {"url": "http://x"}}}, "validation.smoke must be a list, not dict"),
        ({"validation": {"smoke": ["http://x"]}}, "validation.smoke[0] must be a mapping (key: value lines), not str"),
        ({"notify": {"channels": [{"kind": "pager", "url_env": "X"}]}}, "notify.channels[0].kind must be one of"),
        (
            {"validation": {"prometheus": {"queries": [{"query": "up", "max": 1}]}}},
            "validation.prometheus.url is missing",
        ),
    ],
)
def test_values_of_the_wrong_shape_or_type_are_one_sentence(mu, data, sentence):
    with pytest.raises(mu.manifest.ManifestError) as err:
        mu.manifest.parse_manifest(data)
    assert sentence in str(err.value)
    assert "\n" not in str(err.value)


def test_every_key_the_parser_reads_is_declared_in_the_schema(mu):
    """The declared schema and the parser agree: a full manifest passes both."""
    full = {
        "app": "shop",
        "version": "2.0.0",
        "previous_version": "1.9.0",
        "reason": "errors after deploy",
        "flags": {"backend": "unleash", "names": ["a"], "url": "https://u", "environment": "prod", "token_env": "T"},
        "database": dict(DB, backup_dir="/b", critical_tables=["orders"], assertions=[{"sql": "select 1"}]),
        "infrastructure": {"kind": "config_file", "path": "/etc/lb.conf", "snapshot": "/etc/lb/{version}.conf"},
        "validation": {
            "retries": 3,
            "delay": 1,
            "timeout": 2,
            "smoke": [{"name": "home", "url": "http://x/", "status": 200}, {"command": ["true"]}],
            "prometheus": {"url": "http://p", "queries": [{"name": "up", "query": "up", "min": 1}]},
            "alertmanager": {"url": "http://a", "matchers": ['service="shop"']},
        },
        "notify": {"report_url": "https://r/{run_id}", "channels": [{"kind": "webhook", "url": "https://h"}]},
        "rca": {"kind": "webhook", "url": "https://t"},
    }
    parsed = mu.manifest.parse_manifest(full)
    assert parsed["database"]["backup_dir"] == "/b" and parsed["validation"]["prometheus"]["queries"][0]["min"] == 1
