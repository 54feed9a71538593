#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: config_file_revert
short_description: Restore a versioned infrastructure config, validated before it is applied, then reload and verify
version_added: "1.0.0"
description:
  - Puts the previous release's snapshot of a traffic or load-balancer config (nginx, HAProxy, ...) back, checked
    by the server's own validator before the server loads it, then reloads gracefully and verifies.
  - "Two ways to validate, chosen by O(validate_command):"
  - "B(candidate): the command names C({path}) (e.g. C(haproxy -c -f /etc/haproxy/global.cfg -f {path})). The
    snapshot is copied next to the live file and the command checks that copy; the live file is not touched
    until it passes."
  - "B(in place): the command does not name C({path}) (e.g. C(nginx -t)), because it checks the whole
    configuration that includes the file. Under an exclusive lock (an C(flock) on the file's directory, so no
    lock file is left beside the config), the snapshot is renamed
    into place, the command runs, and on failure the live file is renamed back at once. The running server
    never sees the candidate: it reads its configuration only when reloaded, and nothing reloads it in between
    (other tools that honour the lock wait)."
  - An invalid snapshot is never applied and the live config keeps serving.
  - If the reload fails, or O(verify_url) does not answer as expected afterwards, the previous live file is put
    back and the server reloaded again, so the server is left in the state it was found in.
options:
  path:
    description: The live configuration file.
    type: path
    required: true
  snapshot:
    description: The previous release's version of the file.
    type: path
    required: true
  validate_command:
    description:
      - Command (a list, or a string split like a shell would; no shell runs it) that checks the config.
      - With C({path}) in it, C({path}) is replaced by the candidate copy's path (candidate mode); without it, the
        command runs with the candidate in place under the lock (in-place mode).
    type: raw
  reload_command:
    description: Command (a list, or a string split like a shell would) that makes the server load the restored file.
    type: raw
  verify_url:
    description: URL fetched after the reload (through the server) until it answers 2xx and contains O(verify_contains).
    type: str
  verify_contains:
    description: Text the body of O(verify_url) must contain, e.g. the previous release's version.
    type: str
  verify_retries:
    description: How many times O(verify_url) is tried.
    type: int
    default: 20
  verify_delay:
    description: Seconds between tries.
    type: float
    default: 0.25
  timeout:
    description: Seconds each verification request may take.
    type: float
    default: 30
  expect_checksum:
    description:
      - Compare-and-swap, C(sha256:<hex>) of the live config when the plan was made.
      - When the live config is another one, nothing changes and the module fails with C(stale=true).
    type: str
  run_id:
    description:
      - The rollback run. The module then keeps the run's record C(.release-rollback-run-<run_id>.infrastructure.json)
        in O(record_dir) (mode 0600), written before the live file is replaced and after it is verified.
      - A later attempt of the same run that finds the snapshot already in place reports it as restored by the
        earlier attempt, with the file that attempt kept; if that attempt was stopped before it verified, the
        server is reloaded and verified again first.
    type: str
  record_dir:
    description: Where the run's record is kept; the live file's directory by default.
    type: path
requirements:
  - The commands given in O(validate_command) and O(reload_command) on the host (for example C(nginx),
    C(haproxy) or C(systemctl)).
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details:
      - Nothing beside the config file is written, replaced or reloaded, and no run record is written.
      - With O(validate_command) naming C({path}) (candidate mode), the snapshot is validated as a copy in a private
        temporary directory, deleted afterwards (a config whose includes are relative to its own directory may
        validate differently there).
      - With O(validate_command) not naming C({path}) (in-place mode), validation would put the snapshot in place,
        so it is not done; RV(validation) says C(skipped_in_check_mode).
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode) when in diff mode.
    support: full
    details:
      - The live file's text before and the snapshot's text after (a file that is not UTF-8 text is named, not shown).
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
author:
  - release-rollback contributors (@release-rollback)
"""

EXAMPLES = r"""
- name: Restore nginx's upstreams; nginx -t checks the whole config with the snapshot in place
  release.rollback.config_file_revert:
    path: /etc/nginx/conf.d/upstreams.conf
    snapshot: /etc/nginx/releases/1.4.1/upstreams.conf
    validate_command: nginx -t
    reload_command: nginx -s reload
    verify_url: http://127.0.0.1/version
    verify_contains: "1.4.1"

- name: Restore an HAProxy backend file; haproxy -c checks the candidate copy before anything moves
  release.rollback.config_file_revert:
    path: /etc/haproxy/conf.d/backends.cfg
    snapshot: /etc/haproxy/releases/1.4.1.cfg
    validate_command: haproxy -c -f /etc/haproxy/haproxy.cfg -f {path}
    reload_command: systemctl reload haproxy
"""

RETURN = r"""
restored:
  description: Whether the file was replaced (and stays replaced).
  returned: always
  type: bool
kept:
  description: Where the replaced live file was kept.
  returned: when restored
  type: str
validation:
  description:
    - How the snapshot was validated (candidate, in_place, none or skipped_in_check_mode) and what the validator said.
  returned: always
  type: dict
earlier_attempt:
  description: Whether an earlier attempt of the same run restored the file (this one found it in place).
  returned: when true
  type: bool
verified:
  description: What the verification URL answered after the reload.
  returned: when verify_url is set and the file was restored
  type: dict
"""

import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from ansible_collections.release.rollback.plugins.module_utils import runrecord, safefs


def _argv(value):
    """A command given as a list, or as a string split the way a shell would (no shell runs it)."""
    if value is None or isinstance(value, list):
        return value
    return shlex.split(str(value))


def _names_path(cmd):
    return any("{path}" in str(a) for a in _argv(cmd) or [])


def _put(data, path, like=None):
    """Write ``data`` to ``path`` atomically (temp file in the same directory, then rename).

    ``like`` is an ``os.stat_result`` whose mode and owner the new file gets (the live file's).
    """
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if like is not None:
            os.chmod(tmp, like.st_mode & 0o7777)
            with contextlib.suppress(OSError):  # not allowed for this user: it keeps the user's ownership
                os.chown(tmp, like.st_uid, like.st_gid)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class _Fd:
    """A raw descriptor that ``contextlib.closing`` closes."""

    def __init__(self, fd):
        self.fd = fd

    def close(self):
        os.close(self.fd)


class Revert:
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.path = self.p["path"]
        self.live = None
        self.live_stat = None
        self.kept = None
        record_dir = self.p["record_dir"] or os.path.dirname(self.path)
        self.record_path = runrecord.path(record_dir, self.p["run_id"], "infrastructure")
        self.record = None

    def note(self, state, **facts):
        """Keep what this run did to the file in the run's record (before and after each change)."""
        if not self.record_path or self.module.check_mode:
            return
        self.record = dict(self.record or {}, path=self.path, snapshot=self.p["snapshot"], state=state, **facts)
        runrecord.save(self.record_path, self.record)

    def earlier_attempt(self):
        """The snapshot is in place because an earlier attempt of this run put it there: finish and report it."""
        record = self.record or {}
        if record.get("path") != self.path or record.get("state") not in ("applying", "restored"):
            return
        verified = record.get("verified")
        if record["state"] == "applying" and not self.module.check_mode:
            # Stopped between the replacement and its verification: reload and verify now.
            if self.p["reload_command"]:
                rc, out, err = self.run(self.p["reload_command"])
                if rc != 0:
                    self.fail(
                        "the reload failed after an earlier attempt of this run put the snapshot in place (the "
                        "replaced file is kept as %s): %s" % (record.get("kept"), (err or out).strip()[-500:])
                    )
            if self.p["verify_url"]:
                ok, verified = self.verify()
                if not ok:
                    answer = verified.get("error") or verified["status"]
                    self.fail(
                        "an earlier attempt of this run put the snapshot in place (the replaced file is kept as %s), "
                        "but %s answers %s" % (record.get("kept"), verified["url"], answer),
                        verified=verified,
                    )
            self.note("restored", verified=verified)
        self.module.exit_json(
            changed=False,
            restored=True,
            earlier_attempt=True,
            kept=record.get("kept"),
            path=self.path,
            snapshot=self.p["snapshot"],
            validation=record.get("validation") or {"mode": "none", "output": ""},
            verified=verified,
            msg="restored by an earlier attempt of this run at %s" % record.get("applied_at"),
        )

    def run(self, cmd, path=None):
        argv = [str(a).replace("{path}", path) if path else str(a) for a in _argv(cmd)]
        try:
            return self.module.run_command(argv)
        except Exception as exc:  # a missing binary: say so in one sentence
            return 127, "", "%s: %s" % (argv[0], exc)

    def fail(self, msg, **extra):
        self.module.fail_json(msg=msg, restored=False, path=self.path, snapshot=self.p["snapshot"], **extra)

    def diff(self, wanted):
        """Ansible's diff of the live file (before) and the snapshot (after)."""

        def text(data, what):
            if data is None:
                return ""
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                return "(%s is not UTF-8 text: %d bytes)\n" % (what, len(data))

        return {
            "before": text(self.live, self.path),
            "after": text(wanted, self.p["snapshot"]),
            "before_header": self.path,
            "after_header": "%s (snapshot %s)" % (self.path, self.p["snapshot"]),
        }

    def put_back(self):
        """The live file as it was found (or no file, when there was none)."""
        if self.live is None:
            if os.path.exists(self.path):
                os.unlink(self.path)
        else:
            _put(self.live, self.path, like=self.live_stat)

    def validate(self, wanted):
        """Validate the snapshot; returns the validation record. Leaves the live file as it was found."""
        cmd = self.p["validate_command"]
        if not cmd:
            return {"mode": "none", "output": ""}
        if _names_path(cmd) and self.module.check_mode:
            # Check mode writes nothing beside the config: the copy is validated where nothing is managed.
            scratch = tempfile.mkdtemp(prefix="release-rollback-check-")
            try:
                candidate = os.path.join(scratch, os.path.basename(self.path))
                _put(wanted, candidate)
                rc, out, err = self.run(cmd, candidate)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            mode = "candidate"
        elif _names_path(cmd):
            candidate = self.path + ".rollback-candidate"
            _put(wanted, candidate, like=self.live_stat)
            try:
                rc, out, err = self.run(cmd, candidate)
            finally:
                os.unlink(candidate)
            mode = "candidate"
        elif self.module.check_mode:
            return {
                "mode": "skipped_in_check_mode",
                "output": "in-place validation puts the snapshot in place of the live file: not done in check mode",
            }
        else:
            _put(wanted, self.path, like=self.live_stat)
            try:
                rc, out, err = self.run(cmd)
            finally:
                self.put_back()
            mode = "in_place"
        record = {"mode": mode, "rc": rc, "output": (err + out).strip()[-1000:]}
        if rc != 0:
            self.fail(
                "the snapshot %s failed validation (%s), so it was not applied and the live config keeps "
                "serving: %s" % (self.p["snapshot"], mode.replace("_", " "), record["output"][-500:]),
                validation=record,
            )
        return record

    def verify(self):
        url = self.p["verify_url"]
        want = self.p["verify_contains"]
        last = {"url": url, "status": None, "contains": want, "attempts": 0}
        for attempt in range(1, max(1, self.p["verify_retries"]) + 1):
            last["attempts"] = attempt
            try:
                resp = open_url(url, timeout=self.p["timeout"], validate_certs=False, follow_redirects="none")
                body = resp.read().decode("utf-8", "replace")
                last["status"] = resp.getcode()
            except Exception as exc:
                body = ""
                last["status"] = getattr(exc, "code", None)
                last["error"] = str(exc)[:200]
            last["body"] = body[:200]
            if last["status"] is not None and 200 <= last["status"] < 300 and (not want or want in body):
                last.pop("error", None)
                return True, last
            time.sleep(self.p["verify_delay"])
        return False, last

    def main(self):
        p = self.p
        if not os.path.isfile(p["snapshot"]):
            self.fail("the snapshot %s does not exist: nothing to restore the config from" % p["snapshot"])
        with open(p["snapshot"], "rb") as fh:
            wanted = fh.read()
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            self.fail("the directory of %s does not exist: check infrastructure.path" % self.path)
        try:
            # The names this module writes beside the live file: a link at any of them (planted, or left
            # by anyone) stops it before anything changes, and nothing is written through it.
            safefs.refuse_links([self.path + ".rollback-candidate", self.path + ".rolled-back"], "the rollback")
            # The lock is the directory's: nothing is created beside the config to hold it.
            lock_fd = safefs.open_dir(directory)
        except OSError as exc:
            self.fail(str(exc))
        with contextlib.closing(_Fd(lock_fd)):
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            if os.path.exists(self.path):
                with open(self.path, "rb") as fh:
                    self.live = fh.read()
                self.live_stat = os.stat(self.path)
            try:
                self.record = runrecord.load(self.record_path)
            except ValueError as exc:
                self.fail(str(exc))
            if self.live == wanted:
                self.earlier_attempt()
                self.module.exit_json(
                    changed=False,
                    restored=False,
                    path=self.path,
                    snapshot=p["snapshot"],
                    validation={"mode": "none", "output": "the live file already is the snapshot"},
                )
            expected = p["expect_checksum"]
            found = ("sha256:" + hashlib.sha256(self.live).hexdigest()) if self.live is not None else None
            if expected and found != expected:
                # Compare-and-swap: the live config is not the one the plan found; it stays as it is.
                self.fail(
                    "%s was not touched: it changed since the plan was made (it is %s now, the plan saw %s): "
                    "make a new plan" % (self.path, found or "missing", expected),
                    stale=True,
                )
            validation = self.validate(wanted)
            diff = {"diff": self.diff(wanted)} if self.module._diff else {}
            if self.module.check_mode:
                self.module.exit_json(
                    changed=True,
                    restored=False,
                    path=self.path,
                    snapshot=p["snapshot"],
                    validation=validation,
                    **diff,
                )
            if self.live is not None:
                self.kept = self.path + ".rolled-back"
            self.note(
                "applying",
                kept=self.kept,
                from_checksum=found,
                applied_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                validation=validation,
            )
            if self.live is not None:
                _put(self.live, self.kept, like=self.live_stat)
            _put(wanted, self.path, like=self.live_stat)
            if p["reload_command"]:
                rc, out, err = self.run(p["reload_command"])
                if rc != 0:
                    self.note("put back")
                    self.put_back()
                    self.run(p["reload_command"])
                    self.fail(
                        "the reload failed, so the previous live config was put back: %s" % (err or out).strip()[-500:],
                        validation=validation,
                    )
            verified = None
            if p["verify_url"]:
                ok, verified = self.verify()
                if not ok:
                    self.note("put back", verified=verified)
                    self.put_back()
                    if p["reload_command"]:
                        self.run(p["reload_command"])
                    self.fail(
                        "after the reload %s answered %s%s, so the previous live config was put back and reloaded"
                        % (
                            verified["url"],
                            verified.get("error") or verified["status"],
                            (" without %r" % verified["contains"]) if verified["contains"] else "",
                        ),
                        validation=validation,
                        verified=verified,
                    )
        self.note("restored", verified=verified)
        self.module.exit_json(
            changed=True,
            restored=True,
            kept=self.kept,
            path=self.path,
            snapshot=p["snapshot"],
            validation=validation,
            verified=verified,
            **diff,
        )


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            snapshot=dict(type="path", required=True),
            validate_command=dict(type="raw"),
            reload_command=dict(type="raw"),
            verify_url=dict(type="str"),
            verify_contains=dict(type="str"),
            verify_retries=dict(type="int", default=20),
            verify_delay=dict(type="float", default=0.25),
            timeout=dict(type="float", default=30),
            expect_checksum=dict(type="str"),
            run_id=dict(type="str"),
            record_dir=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    Revert(module).main()


if __name__ == "__main__":
    main()
