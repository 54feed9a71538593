# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Release directories behind a ``current`` link (ansistrano, Capistrano, plain versions).

The default mechanism. Everything it does is ``releases.py`` (discovery, the atomic switch, the
configuration snapshots) and ``service.py`` (restart with the host's service manager, verify).
"""

from __future__ import annotations

import os

from ansible_collections.release.rollback.plugins.module_utils import releases as _releases
from ansible_collections.release.rollback.plugins.module_utils import service as _service
from ansible_collections.release.rollback.plugins.module_utils.code_mechanisms.base import CodeMechanism


class ReleaseDirectories(CodeMechanism):
    name = "release_dirs"

    def discover(self, params, run=None):
        return _releases.discover(
            params["app_root"],
            layout=params.get("layout") or "auto",
            releases_dir=params.get("releases_dir") or "releases",
            current=params.get("current_dir") or "current",
            run_id=params.get("run_id"),
        )

    def argument_problem(self, params):
        return _service.argument_problem(params)

    def switch(self, params, info, check_mode, run=None):
        return _releases.switch_with(params, check_mode=check_mode, info=info)

    def restart_and_verify(self, params, switched, run, check_mode):
        service = dict(
            params,
            only_if_unhealthy=not switched["changed"],
            expect_version=params["target"] if params["version_url"] else None,
            release=params["target"],
        )
        return _service.restart_and_verify(service, run, check_mode=check_mode)

    def read_back(self, params, run=None):
        link = os.readlink(os.path.join(params["app_root"], params.get("current_dir") or "current"))
        return os.path.basename(os.path.normpath(link))

    def snapshot(self, params, run, check_mode):
        return _releases.take_snapshot(
            params["app_root"],
            release=params["release"],
            config_files=params["config_files"],
            db_revision=params["db_revision"],
            flags=params["flags"],
            infra_ref=params["infra_ref"],
            previous=params["previous"],
            releases_dir=params["releases_dir"],
            current=params["current_dir"],
            check_mode=check_mode,
        )


MECHANISM = ReleaseDirectories
