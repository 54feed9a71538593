"""LaunchDarkly, Flagsmith and a generic HTTP flag service, against a local server that checks the
exact requests and replays the services' documented answers (errors included)."""

from __future__ import annotations

import pytest
from flag_stub import Exchange, ReplayServer
from release_rollback import content
from release_rollback.demo import free_port

launchdarkly = content.module_utils("launchdarkly")
flagsmith = content.module_utils("flagsmith")
flag_http = content.module_utils("flag_http")

TOKEN = "api-0123456789-planted-secret"
SEMANTIC = "application/json; domain-model=launchdarkly.semanticpatch"


# ----------------------------------------------------------------------------------- LaunchDarkly
def ld_flag(key: str, on: bool, version: int = 3) -> dict:
    """A feature flag as GET /api/v2/flags/{projectKey}/{featureFlagKey}?env=... documents it (abridged)."""
    return {
        "key": key,
        "name": key,
        "kind": "boolean",
        "variations": [{"_id": "a1", "value": True}, {"_id": "b2", "value": False}],
        "environments": {
            "production": {"on": on, "offVariation": 1, "fallthrough": {"variation": 0}, "_version": version}
        },
        "_version": version,
    }


def ld_get(key: str, on: bool, **kw) -> Exchange:
    return Exchange(
        "GET",
        f"/api/v2/flags/shop/{key}?env=production",
        reply=ld_flag(key, on),
        headers={"Authorization": TOKEN},
        **kw,
    )


def ld_patch(key: str, status: int = 200, reply=None) -> Exchange:
    return Exchange(
        "PATCH",
        f"/api/v2/flags/shop/{key}",
        status=status,
        reply=reply if reply is not None else ld_flag(key, False, 4),
        headers={"Authorization": TOKEN, "Content-Type": SEMANTIC},
        body={
            "environmentKey": "production",
            "comment": "release-rollback run r1",
            "instructions": [{"kind": "turnFlagOff"}],
        },
    )


def ld_off(server: ReplayServer, names: list[str]) -> dict:
    return launchdarkly.turn_off(
        server.url, "shop", "production", names, TOKEN, comment="release-rollback run r1", timeout=5
    )


def test_launchdarkly_turns_two_flags_off_with_a_semantic_patch_and_reads_them_back():
    with ReplayServer() as server:
        server.expect(
            ld_get("new-checkout", True),
            ld_patch("new-checkout"),
            ld_get("new-checkout", False),
            ld_get("new-search", True),
            ld_patch("new-search"),
            ld_get("new-search", False),
        )
        result = ld_off(server, ["new-checkout", "new-search"])
        server.check()
    assert result["errors"] == {} and result["changed"]
    for name in ("new-checkout", "new-search"):
        entry = result["flags"][name]
        assert entry["before"]["state"] == "on" and not entry["before"]["off"]
        assert entry["after"]["off"] and entry["read_back"]["off_value"] is False
        assert entry["time"].endswith("Z") and entry["backend"] == "launchdarkly"


def test_launchdarkly_flag_already_off_is_not_patched():
    with ReplayServer() as server:
        server.expect(ld_get("new-checkout", False))
        result = ld_off(server, ["new-checkout"])
        server.check()
    assert not result["changed"] and result["flags"]["new-checkout"]["after"]["off"]


def test_launchdarkly_refusing_the_token_is_unavailable_and_the_other_flags_are_not_tried():
    with ReplayServer() as server:
        server.expect(
            Exchange(
                "GET",
                "/api/v2/flags/shop/new-checkout?env=production",
                status=401,
                reply={"code": "unauthorized", "message": "Invalid access token"},
            )
        )
        result = ld_off(server, ["new-checkout", "new-search"])
        server.check()
    assert result["unavailable"] and not result["changed"]
    assert "HTTP 401" in result["errors"]["new-checkout"] and "Invalid access token" in result["errors"]["new-checkout"]
    assert result["flags"]["new-search"]["left_on"] and "not tried" in result["errors"]["new-search"]


def test_launchdarkly_unknown_flag_fails_alone_and_the_next_flag_still_goes_off():
    with ReplayServer() as server:
        server.expect(
            Exchange(
                "GET",
                "/api/v2/flags/shop/typo?env=production",
                status=404,
                reply={"code": "not_found", "message": "Unknown resource"},
            ),
            ld_get("new-search", True),
            ld_patch("new-search"),
            ld_get("new-search", False),
        )
        result = ld_off(server, ["typo", "new-search"])
        server.check()
    assert not result["unavailable"]
    assert "HTTP 404" in result["errors"]["typo"] and result["flags"]["typo"]["left_on"]
    assert result["flags"]["new-search"]["after"]["off"]


def test_launchdarkly_rate_limit_is_retried_after_the_advertised_delay():
    with ReplayServer() as server:
        server.expect(
            ld_get("new-checkout", True),
            ld_patch("new-checkout", status=429, reply={"code": "rate_limited", "message": "Rate limited"}),
        )
        # the retried PATCH must be identical
        server.expect(ld_patch("new-checkout"), ld_get("new-checkout", False))
        server.expected[1].reply_headers = {"Retry-After": "0"}
        result = ld_off(server, ["new-checkout"])
        server.check()
    assert result["errors"] == {} and result["flags"]["new-checkout"]["after"]["off"]


def test_launchdarkly_patch_conflict_is_a_failure_with_the_services_message():
    with ReplayServer() as server:
        server.expect(
            ld_get("new-checkout", True),
            ld_patch(
                "new-checkout",
                status=409,
                reply={"code": "optimistic_locking_error", "message": "Conflict: the flag was updated"},
            ),
        )
        result = ld_off(server, ["new-checkout"])
        server.check()
    assert "HTTP 409" in result["errors"]["new-checkout"] and not result["unavailable"]
    assert result["flags"]["new-checkout"]["left_on"]


def test_launchdarkly_flag_still_on_after_a_200_is_caught_by_the_read_back():
    with ReplayServer() as server:
        server.expect(ld_get("new-checkout", True), ld_patch("new-checkout"), ld_get("new-checkout", True))
        result = ld_off(server, ["new-checkout"])
        server.check()
    assert "still reads as on" in result["errors"]["new-checkout"]
    assert result["flags"]["new-checkout"]["left_on"]


# -------------------------------------------------------------------------------------- Flagsmith
ENV_KEY = "ser.Abc123envkey"
FS_HEADERS = {"Authorization": f"Api-Key {TOKEN}"}


def fs_state(state_id: int, enabled: bool) -> dict:
    """A feature state as the admin API's featurestates endpoints document it (abridged)."""
    return {
        "id": state_id,
        "feature": 42,
        "enabled": enabled,
        "environment": 7,
        "identity": None,
        "feature_segment": None,
        "feature_state_value": None,
    }


def fs_list(name: str, *states: dict) -> Exchange:
    return Exchange(
        "GET",
        f"/api/v1/environments/{ENV_KEY}/featurestates/?feature_name={name}",
        reply={"count": len(states), "next": None, "previous": None, "results": list(states)},
        headers=FS_HEADERS,
    )


def test_flagsmith_sets_the_environment_state_disabled_and_reads_it_back():
    with ReplayServer() as server:
        server.expect(
            fs_list("new_checkout", fs_state(901, True), dict(fs_state(902, True), identity=5)),
            Exchange(
                "PATCH",
                f"/api/v1/environments/{ENV_KEY}/featurestates/901/",
                reply=fs_state(901, False),
                headers=dict(FS_HEADERS, **{"Content-Type": "application/json"}),
                body={"enabled": False},
            ),
            Exchange(
                "GET",
                f"/api/v1/environments/{ENV_KEY}/featurestates/901/",
                reply=fs_state(901, False),
                headers=FS_HEADERS,
            ),
        )
        result = flagsmith.turn_off(server.url, ENV_KEY, ["new_checkout"], TOKEN, timeout=5)
        server.check()
    entry = result["flags"]["new_checkout"]
    assert result["errors"] == {} and entry["before"]["state"] == "enabled" and entry["after"]["off"]
    assert entry["after"]["feature_state"] == 901


def test_flagsmith_permission_denied_is_unavailable():
    with ReplayServer() as server:
        server.expect(
            Exchange(
                "GET",
                f"/api/v1/environments/{ENV_KEY}/featurestates/?feature_name=new_checkout",
                status=403,
                reply={"detail": "You do not have permission to perform this action."},
            )
        )
        result = flagsmith.turn_off(server.url, ENV_KEY, ["new_checkout"], TOKEN, timeout=5)
        server.check()
    assert result["unavailable"] and "do not have permission" in result["errors"]["new_checkout"]


def test_flagsmith_unknown_feature_is_a_failure_not_unavailable():
    with ReplayServer() as server:
        server.expect(fs_list("nope"))
        result = flagsmith.turn_off(server.url, ENV_KEY, ["nope"], TOKEN, timeout=5)
        server.check()
    assert not result["unavailable"] and "found 0" in result["errors"]["nope"]


# ---------------------------------------------------------------------------------- generic HTTP
HTTP_SPEC = {
    "method": "PUT",
    "url": "{base}/v1/envs/{environment}/flags/{flag}",
    "headers": {"Authorization": "Bearer {token}", "X-Team": "shop"},
    "body": {"enabled": False, "reason": "rollback of {flag}"},
}
HTTP_READ = {"url": "{base}/v1/envs/{environment}/flags/{flag}", "field": "data.enabled", "off_value": False}


def _spec(server: ReplayServer):
    spec = dict(HTTP_SPEC, url=HTTP_SPEC["url"].replace("{base}", server.url))
    read = dict(HTTP_READ, url=HTTP_READ["url"].replace("{base}", server.url), headers=HTTP_SPEC["headers"])
    return spec, read


def test_generic_http_sends_the_templated_request_and_checks_the_read_back():
    auth = {"Authorization": f"Bearer {TOKEN}", "X-Team": "shop"}
    with ReplayServer() as server:
        server.expect(
            Exchange("GET", "/v1/envs/prod%2Feu/flags/new.checkout", reply={"data": {"enabled": True}}, headers=auth),
            Exchange(
                "PUT",
                "/v1/envs/prod%2Feu/flags/new.checkout",
                status=204,
                headers=dict(auth, **{"Content-Type": "application/json"}),
                body={"enabled": False, "reason": "rollback of new.checkout"},
            ),
            Exchange("GET", "/v1/envs/prod%2Feu/flags/new.checkout", reply={"data": {"enabled": False}}, headers=auth),
        )
        spec, read = _spec(server)
        result = flag_http.turn_off(["new.checkout"], spec, read, token=TOKEN, environment="prod/eu", timeout=5)
        server.check()
    entry = result["flags"]["new.checkout"]
    assert result["errors"] == {} and entry["before"]["state"] is True and entry["after"]["off"]


def test_generic_http_server_error_is_unavailable():
    with ReplayServer() as server:
        server.expect(
            Exchange("GET", "/v1/envs/prod/flags/a", reply={"data": {"enabled": True}}),
            Exchange(
                "PUT",
                "/v1/envs/prod/flags/a",
                status=500,
                reply={"error": "database is down"},
                body={"enabled": False, "reason": "rollback of a"},
            ),
        )
        spec, read = _spec(server)
        spec["status"] = [200, 204]
        result = flag_http.turn_off(
            ["a"],
            spec,
            read,
            token=TOKEN,
            environment="prod",
            timeout=5,
        )
        server.check()
    assert result["unavailable"] and "database is down" in result["errors"]["a"]


def test_generic_http_unreachable_service_is_unavailable():
    base = f"http://127.0.0.1:{free_port()}"
    spec = dict(HTTP_SPEC, url=HTTP_SPEC["url"].replace("{base}", base))
    read = dict(HTTP_READ, url=HTTP_READ["url"].replace("{base}", base))
    result = flag_http.turn_off(["a", "b"], spec, read, token=TOKEN, environment="prod", timeout=2)
    assert result["unavailable"] and result["flags"]["b"]["left_on"]
    assert "refused" in result["errors"]["a"].lower()


def test_generic_http_read_back_without_the_field_is_a_failure():
    with ReplayServer() as server:
        server.expect(Exchange("GET", "/v1/envs/prod/flags/a", reply={"data": {}}))
        spec, read = _spec(server)
        read.pop("headers")
        result = flag_http.turn_off(["a"], spec, read, token=TOKEN, environment="prod", timeout=5)
        server.check()
    assert "no field data.enabled" in result["errors"]["a"]


@pytest.mark.parametrize("where", ["url", "body"])
def test_the_token_placeholder_is_refused_outside_headers(where):
    manifest = content.module_utils("manifest")
    request = {"url": "https://flags.example.com/{flag}", "body": {"x": 1}}
    if where == "url":
        request["url"] += "?key={token}"
    else:
        request["body"] = {"key": "{token}"}
    with pytest.raises(manifest.ManifestError, match=r"\{token\}"):
        manifest.parse_manifest(
            {
                "flags": {
                    "backend": "http",
                    "names": ["a"],
                    "request": request,
                    "read_back": {"url": "https://flags.example.com/{flag}"},
                }
            }
        )
