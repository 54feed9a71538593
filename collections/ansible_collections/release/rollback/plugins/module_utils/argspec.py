# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Schemas written for ansible-core's ``ArgumentSpecValidator``, shared by every file the tool checks
(the manifest, a runbook): the spec without its descriptions, the options at a path, and the first
unknown key with the key it most likely meant. Pure Python."""

from __future__ import annotations

import difflib


def validator(spec):
    """ansible-core's ``ArgumentSpecValidator`` for ``spec``, imported when a file is first checked: the
    validator brings in much of ``ansible.module_utils``, which a command that checks no file (``status``,
    ``report``, ``audit verify``) does not need to load."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    return ArgumentSpecValidator(spec)


def strip_descriptions(options):
    """``options`` as ``ArgumentSpecValidator`` takes them: every ``description`` left out, at any depth."""
    out = {}
    for name, opt in options.items():
        entry = {k: v for k, v in opt.items() if k != "description"}
        if "options" in opt:
            entry["options"] = strip_descriptions(opt["options"])
        out[name] = entry
    return out


def options_at(schema, path):
    """The options of the section at ``path`` (a tuple of keys; list elements have no index)."""
    options = schema
    for key in path:
        options = (options.get(key) or {}).get("options") or {}
    return options


def unknown_keys(result):
    """The validator result's unknown keys, each as a tuple path, shallowest first."""
    found = {tuple(p) if isinstance(p, tuple) else (p,) for p in result._unsupported_parameters}
    return sorted(found, key=lambda p: (len(p), p))


def closest(key, known):
    """`` (did you mean X?)`` for the known key nearest ``key``, or an empty string."""
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    return " (did you mean %s?)" % close[0] if close else ""
