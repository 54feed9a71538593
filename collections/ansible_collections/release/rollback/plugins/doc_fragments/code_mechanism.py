# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Options of the modules that read, switch or record a host's code, by its mechanism."""

    DOCUMENTATION = r"""
options:
  mechanism:
    description:
      - How the host's code is deployed.
      - C(release_dirs), release directories behind a C(current) link (ansistrano, Capistrano, plain versions).
      - C(containers), a container run with podman; a release is an image, named by its
        digest and its version label. O(app_root) is then the host's state directory for the container
        (its lock, its deploy-time records and its rollback marks).
      - C(compose), a compose project (C(podman-compose)); a release is the compose file
        plus its images pinned by digest. O(app_root) is the project's state directory.
    type: str
    choices: [release_dirs, containers, compose]
    default: release_dirs
  container:
    description: The container's name (O(mechanism=containers)).
    type: str
  container_runtime:
    description: The podman executable, a name or a path (O(mechanism=containers)); docker's CLI is not supported yet.
    type: str
    default: podman
  containers_conf:
    description: A containers.conf the runtime reads (set as C(CONTAINERS_CONF) for its commands).
    type: path
  version_label:
    description: The image label that holds the release's version.
    type: str
    default: org.opencontainers.image.version
  bad_label:
    description: An image label that marks a release known-bad when it is C(true); such an image is never a target.
    type: str
    default: release.rollback.known-bad
  stop_timeout:
    description: Seconds the old container is given to stop before it is killed.
    type: int
    default: 10
  env_file:
    description:
      - An environment file passed to the recreated container (C(--env-file)), by reference; its values never
        enter a record.
    type: path
  run_args:
    description: Further C(run) options recorded with the run configuration (for example C([--ulimit, host])).
    type: list
    elements: str
    default: []
  expect_digest:
    description:
      - Compare-and-swap, the image digest the plan found running; a container that runs another image
        (and not the target's) is left exactly as it is and its status is C(stale).
    type: str
  compose_file:
    description: The compose project's file on the host (O(mechanism=compose)).
    type: path
  compose_project:
    description: The compose project's name (O(mechanism=compose)).
    type: str
  compose_command:
    description: The compose command, a list or a string (C(podman-compose) when unset).
    type: raw
  target_digest:
    description: The image digest to recreate the container from (the plan's, so that a moved tag never changes it).
    type: str
"""
