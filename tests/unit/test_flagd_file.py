"""flagd flag files: a deterministic off, a surgical edit, and the unavailable paths."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from release_rollback import content

flagd = content.module_utils("flagd")
FlagError = content.module_utils("flag_common").FlagError

# A hand-written file: odd spacing, a one-line flag, unicode, key order, no trailing newline after a
# comment-free last brace; everything but the release's flags must survive byte for byte.
ORIGINAL = """{
    "$schema": "https://flagd.dev/schema/v0/flags.json",
    "flags": {
        "new-checkout": {
            "state": "ENABLED",
            "variants": {"on": true, "off": false},
            "defaultVariant": "on",
            "targeting": {"if": [{"in": ["@example.com", {"var": "email"}]}, "on", "off"]}
        },
        "dark-mode":   {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
        "new-search": {"state":"DISABLED","variants":{"y":true,"n":false},"defaultVariant":"y","targeting":{}},
        "greeting": {
          "state": "ENABLED",
          "variants": {"hello": "Grüß dich", "bye": "Tschüß"},
          "defaultVariant": "hello"
        }
    },
    "metadata": {"owner": "shop"}
}"""


def _outside(text: str, names: list[str]) -> str:
    """The file's text with the values of ``names`` cut out: what must not change."""
    spans = flagd.flag_spans(text)
    out, pos = [], 0
    for start, end in sorted(spans[n] for n in names):
        out.append(text[pos:start])
        pos = end
    out.append(text[pos:])
    return "\x00".join(out)


def test_only_the_release_flags_bytes_change_and_they_read_back_off(tmp_path):
    path = tmp_path / "flags.json"
    path.write_text(ORIGINAL, encoding="utf-8")
    os.chmod(path, 0o640)

    result = flagd.turn_off(str(path), ["new-checkout", "new-search"], strict=False)

    after = path.read_text(encoding="utf-8")
    assert _outside(after, ["new-checkout", "new-search"]) == _outside(ORIGINAL, ["new-checkout", "new-search"])
    doc = json.loads(after)
    assert doc["flags"]["new-checkout"] == {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
    }
    assert doc["flags"]["new-search"]["state"] == "ENABLED"
    assert doc["flags"]["new-search"]["defaultVariant"] == "n"
    assert "targeting" not in doc["flags"]["new-search"]
    assert doc["flags"]["dark-mode"]["defaultVariant"] == "on"
    assert result["changed"] and not result["errors"]
    checkout = result["flags"]["new-checkout"]
    assert checkout["before"]["defaultVariant"] == "on" and checkout["before"]["targeting"]
    assert checkout["after"]["off"] and checkout["read_back"]["off"] and checkout["time"].endswith("Z")
    assert os.stat(path).st_mode & 0o777 == 0o640
    # the indented flag keeps its indentation; the one-line flag stays on one line
    assert '\n        "new-checkout": {\n            "state": "ENABLED",' in after
    assert '"new-search": {"state": "ENABLED", ' in after


def test_a_second_run_changes_nothing(tmp_path):
    path = tmp_path / "flags.json"
    path.write_text(ORIGINAL, encoding="utf-8")
    flagd.turn_off(str(path), ["new-checkout"], strict=False)
    once = path.read_bytes()
    result = flagd.turn_off(str(path), ["new-checkout"], strict=False)
    assert path.read_bytes() == once
    assert not result["changed"] and result["flags"]["new-checkout"]["before"]["off"]


def test_check_mode_changes_no_byte(tmp_path):
    path = tmp_path / "flags.json"
    path.write_text(ORIGINAL, encoding="utf-8")
    result = flagd.turn_off(str(path), ["new-checkout"], check_mode=True, strict=False)
    assert path.read_text(encoding="utf-8") == ORIGINAL
    assert result["changed"] and result["flags"]["new-checkout"]["would_change"]


def test_a_missing_flag_fails_alone_and_the_others_still_go_off(tmp_path):
    path = tmp_path / "flags.json"
    path.write_text(ORIGINAL, encoding="utf-8")
    result = flagd.turn_off(str(path), ["no-such-flag", "new-checkout"], strict=False)
    assert "no-such-flag" in result["errors"] and not result["unavailable"]
    assert result["flags"]["no-such-flag"]["left_on"]
    assert json.loads(path.read_text())["flags"]["new-checkout"]["defaultVariant"] == "off"


def test_a_flag_without_an_off_variant_is_left_on_with_the_reason(tmp_path):
    path = tmp_path / "flags.json"
    path.write_text(ORIGINAL, encoding="utf-8")
    result = flagd.turn_off(str(path), ["greeting"], strict=False)
    assert "no off variant" in result["errors"]["greeting"]
    assert path.read_text(encoding="utf-8") == ORIGINAL


def test_an_immutable_file_is_unavailable_and_unchanged(tmp_path):
    path = tmp_path / "flags.json"
    path.write_text(ORIGINAL, encoding="utf-8")
    locked = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    if locked.returncode != 0:
        pytest.fail(f"chattr +i failed: {locked.stderr.decode()}")
    try:
        result = flagd.turn_off(str(path), ["new-checkout"], strict=False)
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    assert result["unavailable"] and not result["changed"]
    assert result["flags"]["new-checkout"]["left_on"]
    assert "cannot be written" in result["errors"]["new-checkout"]
    assert path.read_text(encoding="utf-8") == ORIGINAL


def test_a_missing_file_is_unavailable(tmp_path):
    with pytest.raises(FlagError) as err:
        flagd.turn_off(str(tmp_path / "nope.json"), ["x"])
    assert err.value.unavailable


def test_a_file_that_is_not_flagd_json_is_a_failure_not_unavailable(tmp_path):
    path = tmp_path / "flags.json"
    path.write_text('{"flags": [1, 2]}')
    with pytest.raises(FlagError) as err:
        flagd.turn_off(str(path), ["x"], strict=False)
    assert not err.value.unavailable


def test_strict_mode_raises_for_a_flag_it_could_not_turn_off(tmp_path):
    path = tmp_path / "flags.json"
    path.write_text(ORIGINAL, encoding="utf-8")
    with pytest.raises(FlagError, match="ghost") as err:
        flagd.turn_off(str(path), ["ghost"])
    assert not err.value.unavailable
