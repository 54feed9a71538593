# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A generic HTTP flag backend for in-house flag services: one request turns a flag off, one reads it.

``request`` is ``{method, url, headers, body, status}`` and ``read_back`` is ``{method, url,
headers, field, off_value}``. Their strings may hold the placeholders ``{flag}``, ``{environment}``
and ``{project}`` (URL-quoted inside URLs) and, in header values only, ``{token}``. The read-back
``field`` is a dotted path into the JSON answer (``data.enabled``, ``items.0.on``); the flag is off
when it equals ``off_value`` (default ``false``). Pure Python, standard library only.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from ansible_collections.release.rollback.plugins.module_utils.flag_common import (
    FlagError,
    each_flag,
    expect,
    request,
)

_PLACEHOLDER = re.compile(r"\{(flag|environment|project|token)\}")
_MISSING = object()


def fill(template, values, url=False):
    """``template`` with its placeholders replaced; inside URLs the values are quoted."""

    def sub(match):
        value = values.get(match.group(1))
        if value is None:
            raise FlagError("the template %r uses {%s}, which is not set" % (template, match.group(1)))
        return quote(str(value), safe="") if url else str(value)

    return _PLACEHOLDER.sub(sub, template)


def _fill_body(body, values):
    if isinstance(body, str):
        return fill(body, values)
    if isinstance(body, dict):
        return {k: _fill_body(v, values) for k, v in body.items()}
    if isinstance(body, list):
        return [_fill_body(v, values) for v in body]
    return body


def field_value(data, path):
    """The value at dotted ``path`` in ``data`` (list items by index), or a sentinel when absent."""
    for part in [p for p in str(path).split(".") if p]:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return _MISSING
    return data


def turn_off(
    names,
    spec,
    read_spec,
    token=None,
    environment=None,
    project=None,
    check_mode=False,
    timeout=10,
    validate_certs=True,
    expected=None,
):
    values = {"environment": environment, "project": project}
    secret = {"token": token}

    def headers_of(section):
        return {str(k): fill(str(v), dict(values, **secret)) for k, v in (section.get("headers") or {}).items()}

    def read(name):
        vals = dict(values, flag=name)
        target = fill(read_spec["url"], vals, url=True)
        resp = request(read_spec.get("method") or "GET", target, headers_of(read_spec), None, timeout, validate_certs)
        expect(resp, "reading flag %s" % name, target)
        value = field_value(resp.json, read_spec.get("field") or "enabled")
        if value is _MISSING:
            raise FlagError("reading flag %s: the answer has no field %s" % (name, read_spec.get("field") or "enabled"))
        off_value = read_spec.get("off_value", False)
        return {"state": value, "off": value == off_value}

    def write(name):
        vals = dict(values, flag=name)
        target = fill(spec["url"], vals, url=True)
        headers = headers_of(spec)
        body = _fill_body(spec.get("body"), vals)
        if body is not None and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        ok = tuple(spec.get("status") or range(200, 300))
        resp = request(spec.get("method") or "POST", target, headers, body, timeout, validate_certs)
        expect(resp, "turning flag %s off" % name, target, ok=ok)

    return each_flag("http", names, read, write, check_mode=check_mode, expected=expected)
