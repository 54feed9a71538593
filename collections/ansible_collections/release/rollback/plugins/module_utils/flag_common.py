# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every flag backend shares: the error type, the per-flag loop with read-back, and HTTP.

A backend supplies ``read(name) -> state`` (a dict with at least ``off``) and ``write(name)``;
``each_flag`` reads the state before, turns the flag off, reads it back and records the time, and
goes on with the other flags when one fails, so exposure is cut as far as the flag system allows.
Pure Python, standard library only.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from urllib.error import HTTPError, URLError
from urllib.parse import quote

from ansible.module_utils.urls import ConnectionError as _UrlConnectionError
from ansible.module_utils.urls import open_url
from ansible_collections.release.rollback.plugins.module_utils.digest import state_digest

USER_AGENT = "release-rollback"
_RETRY_STATUSES = (429, 502, 503, 504)


class FlagError(Exception):
    """A flag cannot be changed; ``unavailable`` says whether the flag system itself is at fault."""

    def __init__(self, msg, unavailable=False):
        super().__init__(msg)
        self.unavailable = unavailable


def utcnow():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def each_flag(backend, names, read, write, check_mode=False, read_back=True, expected=None):
    """Turn ``names`` off one by one. Returns ``{"changed", "flags", "errors", "unavailable", "stale"}``.

    ``flags`` maps each name to ``backend``, ``before``, ``after``, ``read_back``, ``time`` (when it
    was turned off), ``changed`` and, when it could not be turned off, ``left_on`` and ``error``.
    Once the flag system is unavailable the remaining flags are not tried.

    ``expected`` (compare-and-swap): flag name -> digest of the state the plan found. A flag that is
    on and whose state is not the one the plan found is left as it is, marked ``stale``. A flag the
    plan could not read (None: the flag system was down) is turned off: the approval covered turning
    it off whatever its state, as the plan says, so the procedure's "retry later" can finish.
    """
    result = {"changed": False, "flags": {}, "errors": {}, "unavailable": False, "stale": []}
    down = None
    for name in names:
        entry = {"backend": backend, "changed": False}
        result["flags"][name] = entry
        if down is not None:
            entry.update(left_on=True, error="not tried: %s" % down)
            result["errors"][name] = entry["error"]
            continue
        try:
            entry["before"] = read(name)
            if entry["before"].get("off"):
                entry["after"] = entry["read_back"] = entry["before"]
                continue
            if (expected or {}).get(name) and expected[name] != state_digest(entry["before"]):
                entry.update(
                    stale=True,
                    left_on=True,
                    error="flag %s was not touched: its state changed since the plan was made (%s now): make a new plan"
                    % (name, entry["before"].get("state")),
                )
                result["errors"][name] = entry["error"]
                result["stale"].append(name)
                continue
            if check_mode:
                entry["would_change"] = True
                result["changed"] = True
                continue
            entry["time"] = utcnow()
            write(name)
            entry["changed"] = result["changed"] = True
            if read_back:
                entry["after"] = entry["read_back"] = read(name)
                if not entry["after"].get("off"):
                    raise FlagError("flag %s still reads as on after the change" % name)
        except FlagError as exc:
            entry.update(left_on=not (entry.get("after") or {}).get("off", False), error=str(exc))
            result["errors"][name] = str(exc)
            if exc.unavailable:
                result["unavailable"] = True
                down = "the flag system is unavailable (%s)" % exc
    return result


def path_part(value):
    """``value`` quoted for use as one URL path segment."""
    return quote(str(value), safe="")


class Response:
    def __init__(self, status, body, headers):
        self.status = status
        self.body = body
        self.headers = headers

    @property
    def json(self):
        try:
            return json.loads(self.body or "null")
        except ValueError:
            return None

    def message(self):
        """The error message of a JSON error body (``message``, ``detail`` or ``error``), or its text."""
        data = self.json
        if isinstance(data, dict):
            for key in ("message", "detail", "error", "details"):
                if data.get(key):
                    return str(data[key])[:300]
        return (self.body or "").strip()[:300] or "no body"


def request(method, url, headers=None, body=None, timeout=10, validate_certs=True, retries=2):
    """One HTTP request; retries 429/502/503/504 (honouring a short Retry-After).

    Returns a Response for any HTTP status; a connection failure raises FlagError(unavailable).
    ``body`` may be bytes, text or a JSON-serialisable value.
    """
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode("utf-8")
    all_headers = {"Accept": "application/json"}
    all_headers.update(headers or {})
    attempt = 0
    while True:
        try:
            # Ansible's open_url: proxies from the environment, certificate checks unless turned off,
            # no credentials from ~/.netrc (the backends authenticate with their own headers).
            resp = open_url(
                url,
                data=body,
                headers=all_headers,
                method=method,
                timeout=timeout,
                validate_certs=validate_certs,
                http_agent=USER_AGENT,
                use_netrc=False,
            )
            with resp:
                resp_obj = Response(resp.status, resp.read().decode("utf-8", "replace"), dict(resp.headers))
        except HTTPError as exc:
            resp_obj = Response(exc.code, exc.read().decode("utf-8", "replace"), dict(exc.headers or {}))
        except (URLError, OSError, ValueError, _UrlConnectionError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise FlagError("%s %s failed: %s" % (method, _where(url), reason), unavailable=True) from None
        if resp_obj.status in _RETRY_STATUSES and attempt < retries:
            attempt += 1
            time.sleep(_retry_after(resp_obj.headers, attempt))
            continue
        return resp_obj


def _retry_after(headers, attempt):
    value = {k.lower(): v for k, v in (headers or {}).items()}.get("retry-after")
    try:
        return min(max(float(value), 0.0), 5.0)
    except (TypeError, ValueError):
        return min(0.5 * attempt, 5.0)


def _where(url):
    """The URL without its query string (which could carry credentials) for messages."""
    return url.split("?", 1)[0]


def expect(resp, what, url, ok=(200,)):
    """Raise FlagError unless ``resp.status`` is in ``ok``.

    Authentication and permission refusals, rate limits and server errors make the flag system
    *unavailable* (the stage goes on to code and can be retried); anything else is a failure of
    this flag (wrong key, project or environment).
    """
    if resp.status in ok:
        return resp
    text = "%s: HTTP %d from %s: %s" % (what, resp.status, _where(url), resp.message())
    unavailable = resp.status in (401, 403, 407, 408, 429) or resp.status >= 500
    if resp.status in (401, 403):
        text += " (the token was refused: check it and its permissions)"
    raise FlagError(text, unavailable=unavailable)
