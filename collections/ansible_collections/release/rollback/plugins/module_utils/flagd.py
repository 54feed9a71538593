# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""flagd flag files: turn flags off deterministically and read them back.

``state: DISABLED`` alone makes flagd fall back to the application's code default, which is not a
reliable kill switch. A flag is *off* here when it is ``ENABLED`` with ``defaultVariant`` set to its
off variant (the variant whose value is ``false``, or the one named ``off``) and no ``targeting``,
so every evaluation returns the off value.

The edit is surgical: only the text of the release's flag objects is replaced; every other byte of
the file (other flags, key order, indentation, trailing newline) stays as it was. Pure Python,
standard library only.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from json.decoder import scanstring

from ansible_collections.release.rollback.plugins.module_utils.flag_common import FlagError, each_flag

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


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


def _read_text(path):
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise FlagError("the flags file %s does not exist" % path, unavailable=True) from None
    except PermissionError:
        raise FlagError("the flags file %s cannot be read (permission denied)" % path, unavailable=True) from None
    except OSError as exc:
        raise FlagError("the flags file %s cannot be read: %s" % (path, exc.strerror), unavailable=True) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FlagError("the flags file %s is not UTF-8 text" % path) from None


def load(path):
    return _parse(path, _read_text(path))


def _parse(path, text):
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise FlagError("the flags file %s is not valid JSON: %s" % (path, exc)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("flags"), dict):
        raise FlagError('the flags file %s has no top-level "flags" object (flagd format)' % path)
    return doc


def _members(text, start):
    """(key, value_start, value_end) of each member of the JSON object whose ``{`` is at ``start``."""
    i = _WS.match(text, start + 1).end()
    if text[i] == "}":
        return
    while True:
        key, i = scanstring(text, i + 1)
        i = _WS.match(text, i).end()
        i = _WS.match(text, i + 1).end()  # past ':'
        end = _DECODER.raw_decode(text, i)[1]
        yield key, i, end
        i = _WS.match(text, end).end()
        if text[i] == "}":
            return
        i = _WS.match(text, i + 1).end()  # past ','


def flag_spans(text):
    """Flag key -> (start, end) of its value's text. The last duplicate wins, as in ``json.loads``."""
    top = _WS.match(text, 0).end()
    spans = {}
    flags_at = None
    for key, start, _end in _members(text, top):
        if key == "flags":
            flags_at = start
    for key, start, end in _members(text, flags_at):
        spans[key] = (start, end)
    return spans


def _render_like(original, value, text, start):
    """``value`` as JSON text laid out like ``original`` (indented or one line) at ``start``."""
    if "\n" not in original:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    line_start = text.rfind("\n", 0, start) + 1
    base = _WS.match(text, line_start).group(0).replace("\n", "").replace("\r", "")
    inner = re.search(r"\n([ \t]*)\S", original)
    unit = (inner.group(1)[len(base) :] if inner else "") or "  "
    indent = len(unit) if set(unit) == {" "} else unit
    rendered = json.dumps(value, ensure_ascii=False, indent=indent)
    newline = "\r\n" if "\r\n" in original else "\n"
    return rendered.replace("\n", newline + base)


def turn_off(path, names, check_mode=False, strict=True, expected=None):
    """Turn ``names`` off in the flagd file at ``path``.

    Returns ``{"changed", "flags", "errors", "unavailable"}``: per flag ``before``, ``after``,
    ``read_back`` and ``time``; ``errors`` maps a flag that could not be turned off to why (the
    other flags are still turned off). Raises FlagError when the file itself cannot be read, and,
    when ``strict``, for the first flag that could not be turned off.
    """
    result = _turn_off(path, names, check_mode, expected)
    if strict and result["errors"]:
        first = next(n for n in names if n in result["errors"])
        raise FlagError(result["errors"][first], unavailable=result["unavailable"])
    return result


def _turn_off(path, names, check_mode, expected=None):
    text = _read_text(path)
    doc = _parse(path, text)
    flags = doc["flags"]
    spans = flag_spans(text)
    edits = {}

    def read(name):
        if name not in flags:
            raise FlagError("flag %s is not in %s" % (name, path))
        return flag_state(flags[name])

    def write(name):
        flag = flags[name]
        off = off_variant(flag)
        if off is None:
            raise FlagError("flag %s has no off variant (a variant whose value is false, or one named off)" % name)
        flag = dict(flags[name])
        flag["state"] = "ENABLED"
        flag["defaultVariant"] = off
        flag.pop("targeting", None)
        edits[name] = flag

    result = each_flag("flagd", names, read, write, check_mode=check_mode, read_back=False, expected=expected)
    if check_mode:
        # Nothing is written: the edits are only worked out, for the diff of what the file would become.
        for name in names:
            if (result["flags"].get(name) or {}).get("would_change"):
                try:
                    write(name)
                except FlagError as exc:
                    result["errors"][name] = str(exc)
    if edits:
        new_text = text
        for name, (start, end) in sorted(spans.items(), key=lambda kv: kv[1][0], reverse=True):
            if name in edits:
                new_text = new_text[:start] + _render_like(text[start:end], edits[name], text, start) + new_text[end:]
        result["diff"] = {"before_header": path, "after_header": path, "before": text, "after": new_text}
    if edits and not check_mode:
        try:
            _write_atomic(path, new_text)
        except FlagError as exc:
            result["unavailable"] = True
            for name in edits:
                entry = result["flags"][name]
                entry.update(after=entry["before"], left_on=True, error=str(exc), changed=False)
                entry.pop("time", None)
                result["errors"][name] = str(exc)
            result["changed"] = False
            return result
        reread = load(path)["flags"]
        for name in edits:
            entry = result["flags"][name]
            entry["read_back"] = entry["after"] = flag_state(reread[name])
            if not entry["after"]["off"]:
                result["errors"][name] = "flag %s still reads as on after the change" % name
                entry["left_on"] = True
    return result


def _write_atomic(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(path)
        fd, tmp = tempfile.mkstemp(prefix=".flags-", dir=directory)
    except OSError as exc:
        raise FlagError("the flags file %s cannot be written: %s" % (path, exc.strerror), unavailable=True) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, st.st_mode & 0o7777)
        if hasattr(os, "chown") and os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise FlagError("the flags file %s cannot be written: %s" % (path, exc.strerror), unavailable=True) from None
