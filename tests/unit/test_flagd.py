"""flagd files: a deterministic off, read back, and other flags left alone."""

import json

import pytest


def flags_file(tmp_path):
    doc = {
        "flags": {
            "new-checkout": {
                "state": "ENABLED",
                "variants": {"on": True, "off": False},
                "defaultVariant": "on",
                "targeting": {"if": [True, "on", "off"]},
            },
            "dark-mode": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
        }
    }
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def test_off_means_enabled_with_the_off_default_and_no_targeting(mu, tmp_path):
    path = flags_file(tmp_path)
    result = mu.flagd.turn_off(str(path), ["new-checkout"])
    flag = json.loads(path.read_text())["flags"]["new-checkout"]
    assert flag["state"] == "ENABLED" and flag["defaultVariant"] == "off" and "targeting" not in flag
    assert result["flags"]["new-checkout"]["before"]["off"] is False
    assert result["flags"]["new-checkout"]["read_back"]["off"] is True
    assert json.loads(path.read_text())["flags"]["dark-mode"]["defaultVariant"] == "on"
    assert mu.flagd.turn_off(str(path), ["new-checkout"])["changed"] is False


def test_a_missing_file_is_unavailable_and_an_unknown_flag_is_not(mu, tmp_path):
    with pytest.raises(mu.flagd.FlagError) as err:
        mu.flagd.turn_off(str(tmp_path / "nope.json"), ["a"])
    assert err.value.unavailable
    with pytest.raises(mu.flagd.FlagError) as err:
        mu.flagd.turn_off(str(flags_file(tmp_path)), ["ghost"])
    assert not err.value.unavailable
