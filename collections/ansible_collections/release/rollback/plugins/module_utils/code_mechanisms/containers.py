# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Containers run with podman: a release is an image, named by its digest.

- Live release: the running container's image digest and its version label
  (``org.opencontainers.image.version`` unless ``version_label`` says otherwise).
- Candidates: the local images of the same repository, ordered by version label (never by creation
  time). An image labelled ``bad_label=true``, or rolled back by an earlier run, is passed over.
- The deploy-time record (``<app_root>/snapshots/<version>/record.json``, written by ``snapshot``)
  names the release a deploy replaced by digest, and the container's run configuration: a tag that
  moves later (``:latest``, ``:stable``) never changes what "previous" means.
- Switch: the container is recreated from the previous image by digest with the recorded run
  configuration; the old container is stopped and renamed ``<name>.rolled-back-<version>``, never
  removed. Environment values are passed by reference: the recorded env file, and the values of the
  recorded variable names taken from the container being replaced (they never reach the record).
- ``<app_root>`` is the host's state directory for the container: its lock and its records.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime, timezone

from ansible_collections.release.rollback.plugins.module_utils import releases as _releases
from ansible_collections.release.rollback.plugins.module_utils import safefs
from ansible_collections.release.rollback.plugins.module_utils import service as _service
from ansible_collections.release.rollback.plugins.module_utils.code_mechanisms.base import (
    CodeMechanism,
    MechanismError,
)

VERSION_LABEL = "org.opencontainers.image.version"
BAD_LABEL = "release.rollback.known-bad"
REPO_LABEL = "release.rollback.repository"  # on a recreated container: the repository of its image
MARKS_FILE = "marks.json"  # <app_root>/marks.json: image digest -> marks written by rollbacks
# Variables every container gets from the runtime itself: never part of a run configuration.
_RUNTIME_ENV = {"PATH", "TERM", "container", "HOSTNAME", "HOME"}
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def _env_names(env):
    return [e.split("=", 1)[0] for e in env or []]


def _digest(image_id):
    """An image's content digest (the digest of its configuration, what the runtime calls its ID)."""
    image_id = image_id or ""
    return image_id if image_id.startswith("sha256:") else "sha256:" + image_id


def _repository(ref):
    """``localhost/app`` from ``localhost/app:1.2``, ``localhost/app@sha256:...`` or ``localhost:5000/app:1``."""
    ref = ref.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref = ref[: len(ref) - len(last)] + last.split(":", 1)[0]
    return ref


class Containers(CodeMechanism):
    name = "containers"
    args = dict(
        container=dict(type="str"),
        container_runtime=dict(type="str", default="podman"),
        containers_conf=dict(type="path"),
        version_label=dict(type="str", default=VERSION_LABEL),
        bad_label=dict(type="str", default=BAD_LABEL),
        stop_timeout=dict(type="int", default=10),
        env_file=dict(type="path"),
        run_args=dict(type="list", elements="str", default=[]),
        expect_digest=dict(type="str"),
        target_digest=dict(type="str"),
    )

    # -- the runtime -------------------------------------------------------------------------

    @staticmethod
    def runner(module):
        """``run(argv, env=None)`` for this host: the module's run_command, with the runtime's configuration
        file and ``env`` in the command's environment (never on its command line)."""
        conf = {"CONTAINERS_CONF": module.params["containers_conf"]} if module.params.get("containers_conf") else {}

        def run(argv, env=None):
            return module.run_command(argv, environ_update=dict(conf, **(env or {})))

        return run

    def _cli(self, params, run, *argv, env=None):
        rt = params.get("container_runtime") or "podman"
        try:
            rc, out, err = run([rt] + list(argv), env=env) if env else run([rt] + list(argv))
        except OSError as exc:
            raise MechanismError("the container runtime %s does not answer: %s" % (rt, exc)) from None
        return rc, out, err

    def _json(self, params, run, *argv):
        rc, out, err = self._cli(params, run, *argv)
        if rc != 0:
            return None, (err or out).strip()[-300:]
        try:
            return json.loads(out or "null"), None
        except ValueError:
            return None, "unreadable output of %s %s" % (params.get("container_runtime"), " ".join(argv))

    def _runtime_answers(self, params, run):
        rt = params.get("container_runtime") or "podman"
        if shutil.which(rt) is None:
            raise MechanismError(
                "the container runtime %s is not installed on this host: install it, or set rollback_container_runtime "
                "to its path" % rt
            )
        rc, out, err = self._cli(params, run, "version", "--format", "json")
        if rc != 0:
            raise MechanismError(
                "the container runtime %s does not answer (exit code %d: %s): start it, or set "
                "rollback_container_runtime" % (params.get("container_runtime"), rc, (err or out).strip()[-200:])
            )

    def _container(self, params, run, name=None):
        name = name or params.get("container")
        data, err = self._json(params, run, "container", "inspect", name)
        if not data:
            return None, err
        return data[0], None

    def _image(self, params, run, ref):
        data, _err = self._json(params, run, "image", "inspect", ref)
        return data[0] if data else None

    # -- discover ----------------------------------------------------------------------------

    @staticmethod
    def _repository_of(c, img):
        """The repository of the container's image: the name it was run by, else the image's own names,
        else the label a rollback put on the container it recreated (it runs the image by digest)."""
        name = c.get("ImageName") or ""
        if name and not name.startswith("sha256:") and not re.match(r"^[0-9a-f]{64}$", name):
            return _repository(name)
        for ref in list(img.get("RepoTags") or []) + list(img.get("NamesHistory") or []):
            return _repository(ref)
        return ((c.get("Config") or {}).get("Labels") or {}).get(REPO_LABEL) or name

    def _state_dir(self, params):
        root = os.path.abspath(params["app_root"])
        return root

    def _marks(self, root):
        try:
            data = json.loads(safefs.read_text(os.path.join(root, MARKS_FILE), 1 << 20) or "{}")
        except (OSError, ValueError, safefs.UnsafePath):
            data = {}
        return data if isinstance(data, dict) else {}

    def _images(self, params, run, repo):
        """version -> {digest, id, bad} for the local images of ``repo`` that carry a version label."""
        data, err = self._json(params, run, "images", "--format", "json", "--no-trunc")
        if data is None:
            raise MechanismError("cannot list the images on this host: %s" % err)
        found = {}
        for img in data:
            names = list(img.get("Names") or []) + list(img.get("RepoDigests") or [])
            if repo not in {_repository(n) for n in names}:
                continue
            labels = img.get("Labels") or {}
            version = labels.get(params.get("version_label") or VERSION_LABEL)
            if not version:
                continue
            digest = _digest(img.get("Id"))
            try:
                _releases.check_version(version, "release")
            except _releases.NameRuleError:
                continue
            found.setdefault(version, {"digest": digest, "id": img.get("Id"), "bad": False, "digests": []})
            found[version]["digests"].append(digest)
            if str(labels.get(params.get("bad_label") or BAD_LABEL, "")).lower() in ("1", "true", "yes"):
                found[version]["bad"] = True
        return found

    def discover(self, params, run):
        if not params.get("container"):
            raise MechanismError("no container is named for this host: set rollback_container to the container's name")
        self._runtime_answers(params, run)
        c, err = self._container(params, run)
        if c is None:
            raise MechanismError(
                "no container %s on this host (%s): set rollback_container to the running container's name"
                % (params["container"], err)
            )
        img = self._image(params, run, c["Image"]) or {}
        labels = (img.get("Config") or {}).get("Labels") or img.get("Labels") or {}
        version = labels.get(params.get("version_label") or VERSION_LABEL)
        digest = _digest(c["Image"])
        if not version:
            raise MechanismError(
                "the image of container %s (%s) has no %s label: label the images with their version, or set "
                "rollback_container_version_label" % (params["container"], c.get("ImageName"), params["version_label"])
            )
        repo = self._repository_of(c, img)
        images = self._images(params, run, repo)
        images.setdefault(version, {"digest": digest, "id": c["Image"], "bad": False, "digests": [digest]})
        root = self._state_dir(params)
        if not os.path.isdir(root):
            raise MechanismError(
                "the state directory %s does not exist: create it (the snapshot role records there at deploy time), "
                "or set rollback_app_root to it" % root
            )
        by_digest = self._marks(root)
        marks = {}
        for v, i in images.items():
            m = list(by_digest.get(i["digest"]) or [])
            if i["bad"] and _releases.BAD_MARK not in m:
                m.append(_releases.BAD_MARK)
            if m:
                marks[v] = m
        names = sorted(images, key=_releases.sort_key)
        older = [n for n in names if _releases.sort_key(n) < _releases.sort_key(version)]
        candidates = [n for n in older if n not in marks]
        previous = candidates[-1] if candidates else None
        previous_source = "discovered"
        digests = {v: i["digest"] for v, i in images.items()}
        missing = {}
        record = _releases.read_record(root, version)
        if record and record.get("previous") and record.get("previous_digest"):
            prev, prev_digest = record["previous"], record["previous_digest"]
            if prev_digest not in (images.get(prev) or {}).get("digests", []):
                if self._image(params, run, prev_digest) is None:
                    missing[prev] = (
                        "the previous image %s:%s (%s) is not on this host (pruned?): pull it (%s pull %s:%s, "
                        "then check that its ID is %s) or load it (%s load -i FILE), then plan again"
                        % (repo, prev, prev_digest, params["container_runtime"], repo, prev, prev_digest,
                           params["container_runtime"])
                    )  # fmt: skip
                images.setdefault(prev, {"digest": prev_digest, "id": prev_digest, "bad": False, "digests": []})
            if prev not in marks:
                previous, previous_source = prev, "deploy record"
                digests[prev] = prev_digest
                if prev not in names:
                    names = sorted(names + [prev], key=_releases.sort_key)
        lock = _releases.read_lock(root)
        return {
            "app_root": root,
            "mechanism": self.name,
            "layout": "container",
            "container": params["container"],
            "image": repo,
            "live": version,
            "live_digest": digest,
            "live_running": bool((c.get("State") or {}).get("Running")),
            "releases": names,
            "digests": digests,
            "missing": missing,
            "marks": marks,
            "skipped": [n for n in older if n in marks],
            "passed_over": {},
            "previous": previous,
            "previous_source": previous_source,
            "record": record,
            "lock": lock,
            "lock_problem": _releases.lock_problem(lock, params.get("run_id")),
        }

    def cas_from(self, info):
        return info.get("live_digest")

    def cas_problem(self, params, info):
        live = info.get("live_digest")
        allowed = (params.get("expect_digest"), params.get("target_digest"))
        if params.get("expect_digest") and live not in allowed:
            return "the container %s now runs %s (%s), the plan expected %s: make a new plan" % (
                params["container"],
                info.get("live"),
                live,
                params["expect_digest"],
            )
        return super().cas_problem(params, info)

    # -- switch ------------------------------------------------------------------------------

    def _run_config(self, params, run, info, c):
        """The recorded run configuration of the target release (or of the live one), else the live container's."""
        for version in (params["target"], info["live"]):
            rec = _releases.read_record(info["app_root"], version) or {}
            if rec.get("run"):
                return rec["run"]
        img = self._image(params, run, c["Image"]) or {}
        return run_config(c, img, params)

    def switch(self, params, info, check_mode, run):
        info = info or self.discover(params, run)
        name, repo = params["container"], info["image"]
        target = params["target"]
        digest = params.get("target_digest") or info["digests"].get(target)
        if not digest:
            raise MechanismError(
                "release %s has no image on this host (it has: %s)" % (target, ", ".join(info["releases"]))
            )
        if target in info.get("missing", {}):
            raise MechanismError(info["missing"][target])
        ref = digest  # by digest: no tag moved since the plan can change what runs
        if self._image(params, run, ref) is None:
            raise MechanismError(
                "the image %s:%s (%s) is not on this host (pruned?): pull it (%s pull %s:%s) or load it "
                "(%s load -i FILE)"
                % (repo, target, ref, params["container_runtime"], repo, target, params["container_runtime"])
            )
        if info["lock_problem"] and not (params.get("break_stale_lock") and info["lock"].get("stale")):
            raise MechanismError(info["lock_problem"])
        switched = info["live_digest"] != digest
        kept = "%s.rolled-back-%s" % (name, re.sub(r"[^a-zA-Z0-9_.-]", "_", info["live"]))
        result = {
            "changed": switched or not info.get("live_running"),
            "from": info["live"],
            "to": target,
            "from_digest": info["live_digest"],
            "to_digest": digest,
            "layout": "container",
            "config_restored": [],
            "kept_container": kept if switched else None,
            "locked": False,
            "diff": [
                {
                    "before_header": "container %s" % name,
                    "after_header": "container %s" % name,
                    "before": "%s %s (%s)\n" % (repo, info["live_digest"], info["live"]),
                    "after": "%s %s (%s)\n" % (repo, digest, target),
                }
            ]
            if switched
            else [],
        }
        if check_mode or not result["changed"]:
            return result
        if params.get("lock"):
            result["locked"] = _releases.acquire_lock(
                info["app_root"],
                params["run_id"],
                operator=params.get("user"),
                break_stale=params.get("break_stale_lock"),
            )
        if not switched:  # on the target, but stopped: start it
            rc, out, err = self._cli(params, run, "start", name)
            if rc != 0:
                raise MechanismError(
                    "%s start %s failed: %s" % (params["container_runtime"], name, (err or out).strip())
                )
            return result
        c, err = self._container(params, run)
        if c is None:
            raise MechanismError("container %s is gone: %s" % (name, err))
        config = self._run_config(params, run, info, c)
        env_values = {k: v for k, _sep, v in (e.partition("=") for e in (c.get("Config") or {}).get("Env") or [])}
        kept = self._free_name(params, run, kept)
        result["kept_container"] = kept
        rc, out, err = self._cli(params, run, "stop", "--time", str(params.get("stop_timeout") or 10), name)
        if rc != 0:
            raise MechanismError("%s stop %s failed: %s" % (params["container_runtime"], name, (err or out).strip()))
        rc, out, err = self._cli(params, run, "rename", name, kept)
        if rc != 0:
            self._cli(params, run, "start", name)
            raise MechanismError("%s rename %s failed: %s" % (params["container_runtime"], name, (err or out).strip()))
        labels = dict(config.get("labels") or {}, **{REPO_LABEL: repo})
        # The recorded variables' values, from the container being replaced, go through the runtime's
        # environment (``--env NAME``), never through its command line.
        names = [n for n in config.get("env_names") or [] if n in env_values]
        argv = run_argv(name, ref, dict(config, labels=labels, env_names=names), params)
        rc, out, err = self._cli(params, run, *argv, env={n: env_values[n] for n in names})
        if rc != 0:
            # The old container comes back as it was: the host is left on the release it ran.
            self._cli(params, run, "rm", "-f", name)
            self._cli(params, run, "rename", kept, name)
            self._cli(params, run, "start", name)
            raise MechanismError(
                "%s run of %s failed (the old container was started again): %s"
                % (params["container_runtime"], ref, (err or out).strip()[-500:])
            )
        self._mark(info, params)
        return result

    def _free_name(self, params, run, kept):
        name, n = kept, 1
        while self._container(params, run, name)[0] is not None:
            n += 1
            name = "%s-%d" % (kept, n)
        return name

    def _mark(self, info, params):
        root = info["app_root"]
        os.makedirs(root, exist_ok=True)
        marks = self._marks(root)
        entry = marks.setdefault(info["live_digest"], [])
        if _releases.ROLLED_BACK_MARK not in entry:
            entry.append(_releases.ROLLED_BACK_MARK)
        marks.setdefault("_log", []).append(
            {
                "rolled_back_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "run_id": params.get("run_id"),
                "from": info["live"],
                "from_digest": info["live_digest"],
                "to": params["target"],
                "reason": params.get("reason"),
                "by": params.get("user"),
            }
        )
        safefs.write_file(os.path.join(root, MARKS_FILE), json.dumps(marks, indent=2, sort_keys=True))

    # -- verify ------------------------------------------------------------------------------

    def _healthcheck(self, params, run):
        """Poll the image's HEALTHCHECK (``<runtime> healthcheck run``): (ok, last answer)."""
        import time

        answer = None
        for _attempt in range(max(1, params["retries"])):
            rc, out, err = self._cli(params, run, "healthcheck", "run", params["container"])
            answer = "healthy" if rc == 0 else (err or out).strip()[-200:] or "unhealthy"
            if rc == 0:
                return True, answer
            time.sleep(params["delay"])
        return False, answer

    def restart_and_verify(self, params, switched, run, check_mode):
        # The recreated container is the restart; the verification is what the stage adds here.
        version_url = params.get("version_url")
        p = dict(params, expect_version=params["target"] if version_url else None)
        result = dict(changed=False, restarted=bool(switched.get("changed")), health=None, version=None, attempts=0)
        if check_mode:
            ok, result["health"], result["version"], result["attempts"] = _service.verify(dict(p, retries=1, delay=0))
            result.update(restarted=False, judged=False)
            return result, None
        if params.get("health_url") or version_url:
            ok, result["health"], result["version"], result["attempts"] = _service.verify(p)
            if not ok:
                if p["expect_version"] and result["version"] not in (None, p["expect_version"]):
                    return result, "the application reports version %s, expected %s after %d attempt(s)" % (
                        result["version"],
                        p["expect_version"],
                        result["attempts"],
                    )
                return result, "the application is not healthy (last answer: %s) after %d attempt(s)" % (
                    result["health"],
                    result["attempts"],
                )
        else:
            c, _err = self._container(params, run)
            if c and ((c.get("Config") or {}).get("Healthcheck") or c.get("Healthcheck")):
                ok, result["health"] = self._healthcheck(params, run)
                if not ok:
                    return result, "the container's HEALTHCHECK fails (last answer: %s)" % result["health"]
        # Read back: the container runs the target image, by digest.
        c, err = self._container(params, run)
        if c is None:
            return result, "container %s cannot be read back: %s" % (params["container"], err)
        running = bool((c.get("State") or {}).get("Running"))
        digest = _digest(c.get("Image"))
        result["digest"] = digest
        want = switched.get("to_digest")
        if not running or (want and digest != want):
            return result, "container %s reads back %s (image %s), expected a running %s" % (
                params["container"],
                "running" if running else (c.get("State") or {}).get("Status"),
                digest,
                want,
            )
        return result, None

    def read_back(self, params, run):
        c, err = self._container(params, run)
        if c is None:
            raise MechanismError("container %s cannot be read: %s" % (params["container"], err))
        return _digest(c.get("Image"))

    # -- deploy-time record ------------------------------------------------------------------

    def snapshot(self, params, run, check_mode):
        info = self.discover(params, run)
        c, err = self._container(params, run)
        if c is None:
            raise MechanismError("no container %s: %s" % (params["container"], err))
        img = self._image(params, run, c["Image"]) or {}
        previous = params.get("previous") or info["previous"]
        if previous and previous not in info["digests"]:
            raise MechanismError(
                "release %s has no image on this host (it has: %s)" % (previous, ", ".join(info["releases"]))
            )
        root = info["app_root"]
        record = {
            "release": info["live"],
            "digest": info["live_digest"],
            "image": info["image"],
            "container": params["container"],
            "previous": previous,
            "previous_digest": info["digests"].get(previous) if previous else None,
            "run": run_config(c, img, params),
            "config_files": [],
            "db_revision_before": params.get("db_revision"),
            "flags": list(params.get("flags") or []),
            "infra_ref": params.get("infra_ref"),
        }
        old = _releases.read_record(root, info["live"]) or {}
        changed = {k: old.get(k) for k in record} != record
        result = {"changed": changed, "release": info["live"], "record": record, "files": []}
        if check_mode or not changed:
            return result
        record["recorded_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        path = os.path.join(root, "snapshots", info["live"], _releases.RECORD_FILE)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        safefs.write_file(path, json.dumps(record, indent=2, sort_keys=True))
        return result


def run_config(c, img, params):
    """A container's run configuration as a rollback recreates it: no environment values, only names."""
    cfg, host = c.get("Config") or {}, c.get("HostConfig") or {}
    image_cfg = img.get("Config") or {}
    image_labels = image_cfg.get("Labels") or img.get("Labels") or {}
    image_env = set(_env_names(image_cfg.get("Env")))
    ports = []
    for port, binds in sorted((host.get("PortBindings") or {}).items()):
        for b in binds or []:
            ip = b.get("HostIp") or ""
            ports.append("%s%s:%s" % (ip + ":" if ip else "", b.get("HostPort") or "", port))
    volumes = []
    for m in c.get("Mounts") or []:
        src = m.get("Name") if m.get("Type") == "volume" else m.get("Source")
        volumes.append("%s:%s%s" % (src, m.get("Destination"), "" if m.get("RW", True) else ":ro"))
    entrypoint = cfg.get("Entrypoint")
    if isinstance(entrypoint, str):
        entrypoint = [entrypoint] if entrypoint else []
    return {
        "network": host.get("NetworkMode") or None,
        "ports": ports,
        "volumes": volumes,
        "labels": {k: v for k, v in sorted((cfg.get("Labels") or {}).items()) if image_labels.get(k) != v},
        "env_names": sorted(n for n in _env_names(cfg.get("Env")) if n not in image_env and n not in _RUNTIME_ENV),
        "env_file": params.get("env_file"),
        "command": cfg.get("Cmd") or [],
        "entrypoint": entrypoint or [],
        "restart": (host.get("RestartPolicy") or {}).get("Name") or None,
        "run_args": list(params.get("run_args") or []),
    }


def run_argv(name, ref, config, params):
    """``run -d --name NAME ... IMAGE@DIGEST CMD``: the recorded run configuration, env by reference."""
    argv = ["run", "-d", "--name", name]
    if config.get("network"):
        argv += ["--network", config["network"]]
    for p in config.get("ports") or []:
        argv += ["--publish", p]
    for v in config.get("volumes") or []:
        argv += ["--volume", v]
    for k, v in sorted((config.get("labels") or {}).items()):
        argv += ["--label", "%s=%s" % (k, v)]
    env_file = params.get("env_file") or config.get("env_file")
    if env_file:
        argv += ["--env-file", env_file]
    for n in config.get("env_names") or []:
        argv += ["--env", n]
    if config.get("restart") and config["restart"] != "no":
        argv += ["--restart", config["restart"]]
    if config.get("entrypoint"):
        argv += ["--entrypoint", json.dumps(config["entrypoint"])]
    argv += list(config.get("run_args") or [])
    argv.append(ref)
    argv += list(config.get("command") or [])
    return argv


MECHANISM = Containers
