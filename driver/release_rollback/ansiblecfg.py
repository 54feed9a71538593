"""The ansible.cfg the operator's own ``ansible-playbook`` would read, applied to the driver's jobs, and
the number of forks.

ansible-runner starts ansible-playbook in the job's private directory, where ansible finds no
``./ansible.cfg``. Without this, a project's ansible.cfg (``remote_user``, ``private_key_file``,
``[ssh_connection] ssh_args`` for a bastion, ``become``, ``forks``) would apply to ``ansible-playbook``
run from the project but not to ``release-rollback`` run from the same place. ansible's order, which
this follows: ``$ANSIBLE_CONFIG`` (a file, or a directory holding ansible.cfg), ``./ansible.cfg`` unless
the directory is world-writable, ``~/.ansible.cfg``, ``/etc/ansible/ansible.cfg``.

Forks: ``$ANSIBLE_FORKS`` or the file's ``forks`` when the operator set one; otherwise 50, fewer on a
controller without the memory or file descriptors for 50 hosts at once (ansible itself never forks
more workers than the batch has hosts).
"""

from __future__ import annotations

import configparser
import os
import resource
import stat
from dataclasses import dataclass, field

DEFAULT_FORKS = 50
# What one host in flight costs the controller: an ansible worker and, on a local-connection host, the
# module's processes: 28-30 MB (PSS) at 20 and 50 forks (bench/forks_memory.py, bench/README.md). Half
# of the available memory is left to everything else on the controller.
MB_PER_FORK = 30
FDS_PER_FORK = 8
SYSTEM_FILE = "/etc/ansible/ansible.cfg"


@dataclass
class Config:
    """The file ansible-playbook will read (None: ansible's defaults) and what the driver needs from it."""

    path: str | None = None
    # Where it was found: $ANSIBLE_CONFIG, the working directory, the home directory or the system.
    source: str | None = None
    forks: str | None = None
    callbacks: list[str] = field(default_factory=list)
    collections: list[str] = field(default_factory=list)


def find(environ: os._Environ | dict = os.environ, cwd: str | None = None) -> Config:
    """The ansible.cfg ansible-playbook started by the operator in ``cwd`` would read."""
    here = cwd or os.getcwd()
    candidates: list[tuple[str, str]] = []
    if environ.get("ANSIBLE_CONFIG"):
        path = os.path.join(here, os.path.expanduser(environ["ANSIBLE_CONFIG"]))
        candidates.append((os.path.join(path, "ansible.cfg") if os.path.isdir(path) else path, "env"))
    try:
        if not os.stat(here).st_mode & stat.S_IWOTH:
            candidates.append((os.path.join(here, "ansible.cfg"), "cwd"))
    except OSError:
        pass
    home = environ.get("HOME") or os.path.expanduser("~")
    candidates += [(os.path.join(home, ".ansible.cfg"), "home"), (SYSTEM_FILE, "system")]
    for path, source in candidates:
        if os.path.isfile(path) and os.access(path, os.R_OK):
            return _read(os.path.abspath(path), source)
    return Config()


def _read(path: str, source: str) -> Config:
    found = Config(path=path, source=source)
    parser = configparser.ConfigParser(inline_comment_prefixes=(";",), interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError, OSError):
        # ansible-playbook reads the same file and says what is wrong with it.
        return found
    defaults = parser["defaults"] if parser.has_section("defaults") else {}
    found.forks = (defaults.get("forks") or "").strip() or None
    found.callbacks = [c.strip() for c in (defaults.get("callbacks_enabled") or "").split(",") if c.strip()]
    base = os.path.dirname(path)
    paths = defaults.get("collections_path") or defaults.get("collections_paths") or ""
    found.collections = [
        os.path.normpath(os.path.join(base, os.path.expanduser(p.strip())))
        for p in paths.replace(os.pathsep, ",").split(",")
        if p.strip()
    ]
    return found


def machine_forks(meminfo: str | None = None, nofile: int | None = None) -> int:
    """50 forks, fewer where half the available memory or the file descriptor limit cannot hold them."""
    if meminfo is None:
        try:
            with open("/proc/meminfo", encoding="ascii") as fh:
                meminfo = fh.read()
        except OSError:
            meminfo = ""
    if nofile is None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    forks = DEFAULT_FORKS
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            forks = min(forks, int(line.split()[1]) // 1024 // 2 // MB_PER_FORK)
    if nofile != resource.RLIM_INFINITY:
        forks = min(forks, nofile // FDS_PER_FORK)
    return max(1, forks)


def job_env(environ: os._Environ | dict = os.environ, cwd: str | None = None) -> tuple[Config, dict[str, str]]:
    """The config found, and what the job's environment needs for ansible-playbook to read the same
    file and keep its forks, callbacks and collections besides the driver's own settings."""
    cfg = find(environ, cwd)
    env: dict[str, str] = {}
    if cfg.path and cfg.source in ("env", "cwd"):
        # By its absolute path: the job runs in another directory, where a relative one would not resolve.
        env["ANSIBLE_CONFIG"] = cfg.path
    if not environ.get("ANSIBLE_FORKS") and not cfg.forks:
        env["ANSIBLE_FORKS"] = str(machine_forks())
    return cfg, env
