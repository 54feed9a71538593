# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release-name rule, written once: for names in a manifest or on the command line, and for
release directories found on a host (which are checked like input). Kept apart from the manifest's
other checks so that the modules that read a host ship only this. Pure Python, standard library only.
"""

from __future__ import annotations

import re

VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


class NameRuleError(ValueError):
    """A name that breaks the release-name rule; the message says the rule."""


def is_release_name(value):
    return isinstance(value, str) and bool(VERSION_RE.match(value)) and value not in (".", "..")


def check_version(value, what="version"):
    """Return ``value`` if it is a safe release name, else raise NameRuleError."""
    if not is_release_name(value):
        text = repr(value) if not isinstance(value, str) else value
        raise NameRuleError(
            "%s %r is not a release name: use letters, digits, '.', '_', '+' or '-' "
            "(at most 128 characters, no '/' or spaces)" % (what, text if len(text) <= 60 else text[:57] + "...")
        )
    return value
