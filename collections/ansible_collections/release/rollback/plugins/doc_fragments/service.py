# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """How an application is restarted and verified (app_service, code_rollback)."""

    DOCUMENTATION = r"""
options:
  manager:
    description:
      - How the application is restarted.
      - C(systemd) runs C(systemctl restart <service>); C(supervisor) runs
        C(supervisorctl [-c <supervisor_config>] restart <service>) and fails unless the program ends RUNNING;
        C(command) runs O(restart_command), or O(stop_command) then O(start_command); C(none) does not restart.
      - C(auto) is C(command) when O(restart_command) (or O(stop_command) and O(start_command)) is set,
        C(systemd) when O(service) is, and C(none) otherwise (the application is not restarted, as
        ansistrano's own rollback does; the plan states it as a risk).
    type: str
    choices: [auto, command, systemd, supervisor, none]
    default: auto
  service:
    description: The unit (systemd) or program (supervisor) name.
    type: str
  supervisor_config:
    description: The supervisord configuration file C(supervisorctl) reads (its default search path otherwise).
    type: path
  supervisorctl:
    description: The C(supervisorctl) executable.
    type: path
    default: supervisorctl
  restart_command:
    description: The restart command, a list or a string split like a shell would (no shell runs it).
    type: raw
  stop_command:
    description: With O(manager=command) and no O(restart_command), the command that stops the application.
    type: raw
  start_command:
    description: With O(manager=command) and no O(restart_command), the command that starts it again.
    type: raw
  health_url:
    description: URL that answers 2xx when the application is healthy.
    type: str
  version_url:
    description: URL whose body is the running version, plain or JSON with a C(version) key.
    type: str
  retries:
    description: How many times to poll health and version before failing.
    type: int
    default: 20
  delay:
    description: Seconds between polls.
    type: float
    default: 0.5
  timeout:
    description: Seconds each HTTP request may take.
    type: float
    default: 5
"""
