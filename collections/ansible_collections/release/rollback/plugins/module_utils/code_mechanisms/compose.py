# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compose projects (``podman-compose``): a release is a compose file plus its image pins.

- The deploy-time record (``snapshot``, ``<app_root>/snapshots/<release>/``) keeps a copy of the
  compose file (``compose.yml``) and the image each service runs, by digest (``record.json``).
- Live release: the recorded release whose compose file is the one on the host now (by content).
- Switch: the previous release's compose file is restored (the live one is kept beside it as
  ``<file>.rolled-back-<release>``), then only the services whose image or definition changed are
  brought up again, from a copy of that file with every image pinned to its recorded digest
  (``<file>.rollback-pinned.yml``, beside it so that relative paths mean the same). Their old
  containers are stopped and renamed ``<name>.rolled-back-<release>``, never removed.
- Needs PyYAML on the host (it reads and writes the compose file).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from datetime import datetime, timezone

from ansible_collections.release.rollback.plugins.module_utils import releases as _releases
from ansible_collections.release.rollback.plugins.module_utils import safefs
from ansible_collections.release.rollback.plugins.module_utils import service as _service
from ansible_collections.release.rollback.plugins.module_utils.code_mechanisms.base import MechanismError
from ansible_collections.release.rollback.plugins.module_utils.code_mechanisms.containers import Containers, _digest

COMPOSE_COPY = "compose.yml"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


def _yaml():
    try:
        import yaml
    except ImportError:
        raise MechanismError("compose projects need PyYAML on the host (python3-yaml)") from None
    return yaml


def _sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Compose(Containers):
    name = "compose"
    args = dict(
        compose_file=dict(type="path"),
        compose_project=dict(type="str"),
        compose_command=dict(type="raw"),
    )

    # -- helpers -----------------------------------------------------------------------------

    def _compose(self, params, run, *argv):
        cmd = params.get("compose_command") or ["podman-compose"]
        cmd = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        try:
            return run(cmd + ["-p", params["compose_project"]] + list(argv))
        except OSError as exc:
            raise MechanismError("%s does not answer: %s" % (cmd[0], exc)) from None

    def _services(self, params, run):
        """service -> the inspected container of the project's service (the first one)."""
        rc, out, err = self._cli(
            params,
            run,
            "ps",
            "-a",
            "--format",
            "json",
            "--filter",
            "label=%s=%s" % (PROJECT_LABEL, params["compose_project"]),
        )
        if rc != 0:
            raise MechanismError(
                "cannot list the containers of project %s: %s" % (params["compose_project"], err.strip())
            )
        found = {}
        for entry in json.loads(out or "[]"):
            name = (entry.get("Names") or [entry.get("Id")])[0]
            if ".rolled-back-" in name:
                continue  # an old container a rollback kept
            c, _err = self._container(params, run, name)
            svc = ((c or {}).get("Config") or {}).get("Labels", {}).get(SERVICE_LABEL)
            if svc and svc not in found:
                found[svc] = c
        return found

    def _records(self, root):
        found = {}
        snaps = os.path.join(root, "snapshots")
        for name in os.listdir(snaps) if os.path.isdir(snaps) else []:
            rec = _releases.read_record(root, name)
            if rec and rec.get("mechanism") == self.name:
                found[name] = rec
        return found

    def _file(self, params):
        try:
            with open(params["compose_file"], "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise MechanismError("cannot read the compose file %s: %s" % (params["compose_file"], exc)) from None

    # -- discover ----------------------------------------------------------------------------

    def discover(self, params, run):
        for key in ("compose_file", "compose_project"):
            if not params.get(key):
                raise MechanismError("set rollback_%s for a compose project" % key)
        self._runtime_answers(params, run)
        root = self._state_dir(params)
        records = self._records(root)
        sha = _sha(self._file(params))
        live = next((v for v, r in records.items() if r.get("compose_sha") == sha), None)
        if live is None:
            raise MechanismError(
                "the compose file %s matches no recorded release: run the snapshot role at deploy time "
                "(rollback_code_mechanism: compose, rollback_snapshot_release: the release's name)"
                % params["compose_file"]
            )
        by_digest = self._marks(root)
        marks = {v: list(by_digest.get(r["compose_sha"]) or []) for v, r in records.items()}
        marks = {v: m for v, m in marks.items() if m}
        names = sorted(records, key=_releases.sort_key)
        older = [n for n in names if _releases.sort_key(n) < _releases.sort_key(live)]
        candidates = [n for n in older if n not in marks]
        previous, previous_source = (candidates[-1] if candidates else None), "discovered"
        if records[live].get("previous") in candidates:
            previous, previous_source = records[live]["previous"], "deploy record"
        missing = {}
        for v in names:
            gone = [
                "%s (%s)" % (svc, img)
                for svc, img in sorted(records[v]["images"].items())
                if self._image(params, run, img) is None
            ]
            if gone:
                missing[v] = (
                    "release %s's images are not on this host (pruned?): %s; pull or load them (%s load -i FILE), "
                    "then plan again" % (v, ", ".join(gone), params["container_runtime"])
                )
        lock = _releases.read_lock(root)
        return {
            "app_root": root,
            "mechanism": self.name,
            "layout": "compose",
            "container": params["compose_project"],
            "image": params["compose_file"],
            "live": live,
            "live_digest": sha,
            "live_running": True,
            "releases": names,
            "digests": {v: r["compose_sha"] for v, r in records.items()},
            "missing": missing,
            "marks": marks,
            "skipped": [n for n in older if n in marks],
            "passed_over": {},
            "previous": previous,
            "previous_source": previous_source,
            "record": records[live],
            "lock": lock,
            "lock_problem": _releases.lock_problem(lock, params.get("run_id")),
        }

    def cas_problem(self, params, info):
        if params.get("expect_digest") and info["live_digest"] not in (
            params["expect_digest"],
            params.get("target_digest"),
        ):
            return "the compose file %s is now %s (release %s), the plan expected %s: make a new plan" % (
                params["compose_file"],
                info["live_digest"],
                info["live"],
                params["expect_digest"],
            )
        return super(Containers, self).cas_problem(params, info)

    # -- switch ------------------------------------------------------------------------------

    def _changed_services(self, live_rec, target_rec, live_doc, target_doc):
        services = set(live_rec["images"]) | set(target_rec["images"])
        ls, ts = (live_doc.get("services") or {}), (target_doc.get("services") or {})
        return sorted(
            s for s in services if live_rec["images"].get(s) != target_rec["images"].get(s) or ls.get(s) != ts.get(s)
        )

    def switch(self, params, info, check_mode, run):
        info = info or self.discover(params, run)
        yaml = _yaml()
        target, root = params["target"], info["app_root"]
        records = self._records(root)
        if target not in records:
            raise MechanismError("release %s has no record on this host (it has: %s)" % (target, ", ".join(records)))
        if target in info["missing"]:
            raise MechanismError(info["missing"][target])
        if info["lock_problem"] and not (params.get("break_stale_lock") and info["lock"].get("stale")):
            raise MechanismError(info["lock_problem"])
        live_rec, target_rec = records[info["live"]], records[target]
        with open(os.path.join(root, "snapshots", target, COMPOSE_COPY), "rb") as fh:
            wanted = fh.read()
        current = self._file(params)
        live_doc, target_doc = yaml.safe_load(current) or {}, yaml.safe_load(wanted) or {}
        changed = self._changed_services(live_rec, target_rec, live_doc, target_doc) if current != wanted else []
        result = {
            "changed": current != wanted,
            "from": info["live"],
            "to": target,
            "from_digest": info["live_digest"],
            "to_digest": target_rec["compose_sha"],
            "layout": "compose",
            "services": changed,
            "config_restored": [params["compose_file"]] if current != wanted else [],
            "kept_container": None,
            "locked": False,
            "diff": [
                {
                    "before_header": "%s (%s)" % (params["compose_file"], info["live"]),
                    "after_header": "%s (%s)" % (params["compose_file"], target),
                    "before": current.decode("utf-8", "replace"),
                    "after": wanted.decode("utf-8", "replace"),
                }
            ]
            if current != wanted
            else [],
        }
        if check_mode or not result["changed"]:
            return result
        if params.get("lock"):
            result["locked"] = _releases.acquire_lock(
                root, params["run_id"], operator=params.get("user"), break_stale=params.get("break_stale_lock")
            )
        path = params["compose_file"]
        safefs.write_file("%s.rolled-back-%s" % (path, info["live"]), current, like=os.stat(path))
        safefs.write_file(path, wanted, like=os.stat(path), final_may_be_link=True)
        pinned = dict(target_doc, services=dict(target_doc.get("services") or {}))
        for svc, img in target_rec["images"].items():
            if svc in pinned["services"]:
                pinned["services"][svc] = dict(pinned["services"][svc], image=img)
        pinned_path = "%s.rollback-pinned.yml" % path
        safefs.write_file(pinned_path, yaml.safe_dump(pinned, sort_keys=False), like=os.stat(path))
        running = self._services(params, run)
        kept = []
        for svc in changed:
            c = running.get(svc)
            if c is None:
                continue
            old = c["Name"].lstrip("/")
            new = self._free_name(params, run, "%s.rolled-back-%s" % (old, info["live"]))
            self._cli(params, run, "stop", "--time", str(params.get("stop_timeout") or 10), old)
            rc, out, err = self._cli(params, run, "rename", old, new)
            if rc != 0:
                raise MechanismError(
                    "%s rename %s failed: %s" % (params["container_runtime"], old, (err or out).strip())
                )
            kept.append(new)
        result["kept_container"] = ", ".join(kept) or None
        if changed:
            rc, out, err = self._compose(params, run, "-f", pinned_path, "up", "-d", "--no-deps", *changed)
            if rc != 0:
                raise MechanismError("compose up of %s failed: %s" % (", ".join(changed), (err or out).strip()[-500:]))
        marks = self._marks(root)
        entry = marks.setdefault(info["live_digest"], [])
        if _releases.ROLLED_BACK_MARK not in entry:
            entry.append(_releases.ROLLED_BACK_MARK)
        safefs.write_file(os.path.join(root, "marks.json"), json.dumps(marks, indent=2, sort_keys=True))
        return result

    def restart_and_verify(self, params, switched, run, check_mode):
        p = dict(params, expect_version=params["target"] if params.get("version_url") else None)
        result = dict(changed=False, restarted=bool(switched.get("services")), health=None, version=None, attempts=0)
        if check_mode:
            _ok, result["health"], result["version"], result["attempts"] = _service.verify(dict(p, retries=1, delay=0))
            return dict(result, restarted=False, judged=False), None
        if params.get("health_url") or params.get("version_url"):
            ok, result["health"], result["version"], result["attempts"] = _service.verify(p)
            if not ok:
                return result, "the application is not healthy or reports another version (health %s, version %s)" % (
                    result["health"],
                    result["version"],
                )
        records = self._records(self._state_dir(params))
        want = (records.get(params["target"]) or {}).get("images") or {}
        running = self._services(params, run)
        wrong = [
            "%s runs %s" % (svc, _digest((running.get(svc) or {}).get("Image")))
            for svc, img in sorted(want.items())
            if _digest((running.get(svc) or {}).get("Image")) != img
            or not ((running.get(svc) or {}).get("State") or {}).get("Running")
        ]
        result["digest"] = switched.get("to_digest")
        if wrong:
            return result, "the project reads back %s, not release %s's images" % ("; ".join(wrong), params["target"])
        return result, None

    def read_back(self, params, run):
        return _sha(self._file(params))

    def snapshot(self, params, run, check_mode):
        for key in ("compose_file", "compose_project"):
            if not params.get(key):
                raise MechanismError("set rollback_%s for a compose project" % key)
        release = params.get("release")
        if not release:
            raise MechanismError("a compose project's snapshot needs the release's name: set rollback_snapshot_release")
        root = self._state_dir(params)
        data = self._file(params)
        images = {svc: _digest(c["Image"]) for svc, c in self._services(params, run).items()}
        records = self._records(root)
        older = sorted(
            (v for v in records if _releases.sort_key(v) < _releases.sort_key(release)), key=_releases.sort_key
        )
        record = {
            "mechanism": self.name,
            "release": release,
            "compose_file": params["compose_file"],
            "compose_sha": _sha(data),
            "images": images,
            "previous": params.get("previous") or (older[-1] if older else None),
            "config_files": [],
            "db_revision_before": params.get("db_revision"),
            "flags": list(params.get("flags") or []),
            "infra_ref": params.get("infra_ref"),
        }
        old = _releases.read_record(root, release) or {}
        changed = {k: old.get(k) for k in record} != record
        result = {"changed": changed, "release": release, "record": record, "files": [params["compose_file"]]}
        if check_mode or not changed:
            return result
        record["recorded_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        snap = os.path.join(root, "snapshots", release)
        os.makedirs(snap, exist_ok=True)
        safefs.write_file(os.path.join(snap, COMPOSE_COPY), data)
        safefs.write_file(os.path.join(snap, _releases.RECORD_FILE), json.dumps(record, indent=2, sort_keys=True))
        return result


MECHANISM = Compose
