# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Digests of plans and of live states, written once: the plan records the digest of each state it
will change (its compare-and-swap "from"), and the module that changes it compares the digest of
what it reads just before the change. Pure Python, standard library only."""

from __future__ import annotations

import hashlib
import json


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def state_digest(value):
    """``sha256:<hex>`` of a value's canonical JSON."""
    return "sha256:" + hashlib.sha256(canonical(value).encode("utf-8")).hexdigest()
