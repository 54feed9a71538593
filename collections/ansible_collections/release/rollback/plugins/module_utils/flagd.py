# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""flagd flag files: turn flags off deterministically and read them back.

``state: DISABLED`` alone makes flagd fall back to the application's code default, which is not a
reliable kill switch. A flag is *off* here when it is ``ENABLED`` with ``defaultVariant`` set to its
off variant (the variant whose value is ``false``, or the one named ``off``) and no ``targeting``,
so every evaluation returns the off value. Pure Python, standard library only.
"""

from __future__ import annotations

import json
import os
import tempfile


class FlagError(Exception):
    """The flags cannot be changed; ``unavailable`` says whether the flag system itself is at fault."""

    def __init__(self, msg, unavailable=False):
        super().__init__(msg)
        self.unavailable = unavailable


def off_variant(flag):
    variants = flag.get("variants") or {}
    for name, value in variants.items():
        if value is False:
            return name
    if "off" in variants:
        return "off"
    return None


def flag_state(flag):
    """A flag's state as recorded in the report: enough to turn it back on later."""
    return {
        "state": flag.get("state"),
        "defaultVariant": flag.get("defaultVariant"),
        "targeting": flag.get("targeting"),
        "off": is_off(flag),
    }


def is_off(flag):
    off = off_variant(flag)
    return (
        off is not None
        and flag.get("state") == "ENABLED"
        and flag.get("defaultVariant") == off
        and not flag.get("targeting")
    )


def load(path):
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise FlagError("the flags file %s does not exist" % path, unavailable=True) from None
    except PermissionError:
        raise FlagError("the flags file %s cannot be read (permission denied)" % path, unavailable=True) from None
    except ValueError as exc:
        raise FlagError("the flags file %s is not valid JSON: %s" % (path, exc)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("flags"), dict):
        raise FlagError('the flags file %s has no top-level "flags" object (flagd format)' % path)
    return doc


def turn_off(path, names, check_mode=False):
    """Turn ``names`` off in the flagd file at ``path``; returns per-flag before/after and ``changed``."""
    doc = load(path)
    flags = doc["flags"]
    report = {}
    missing = [n for n in names if n not in flags]
    if missing:
        raise FlagError("flag(s) %s are not in %s" % (", ".join(missing), path))
    changed = False
    for name in names:
        flag = flags[name]
        before = flag_state(flag)
        off = off_variant(flag)
        if off is None:
            raise FlagError("flag %s has no off variant (a variant whose value is false, or one named off)" % name)
        if not before["off"]:
            flag["state"] = "ENABLED"
            flag["defaultVariant"] = off
            flag.pop("targeting", None)
            changed = True
        report[name] = {"before": before, "after": flag_state(flag)}
    if changed and not check_mode:
        _write_atomic(path, doc)
        reread = load(path)["flags"]
        for name in names:
            report[name]["read_back"] = flag_state(reread[name])
            if not report[name]["read_back"]["off"]:
                raise FlagError("flag %s still reads as on after the change" % name, unavailable=True)
    else:
        for name in names:
            report[name]["read_back"] = report[name]["after"]
    return {"changed": changed, "flags": report}


def _write_atomic(path, doc):
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
        fd, tmp = tempfile.mkstemp(prefix=".flags-", dir=directory)
    except OSError as exc:
        raise FlagError("the flags file %s cannot be written: %s" % (path, exc.strerror), unavailable=True) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise FlagError("the flags file %s cannot be written: %s" % (path, exc.strerror), unavailable=True) from None
