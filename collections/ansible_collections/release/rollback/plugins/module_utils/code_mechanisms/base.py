# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every code mechanism does for one host.

A mechanism is how a host's code is deployed (release directories behind a ``current`` link, a
container recreated from an image, ...). The code stage's shared parts (plan, report, locks,
batches, compare-and-swap) talk to a host's code only through this interface:

- ``discover(params, run)``: the live release, the candidates oldest first, the known-bad marks,
  the previous known-good release, and the host's lock (``<app_root>/.rollback.lock`` for every
  mechanism). The result is the host's assess fact.
- ``cas_from(info)``: the state the plan records as the compare-and-swap "from" beside the release
  name (a container's image digest), or None when the release name says it all.
- ``switch(params, info, check_mode, run)``: move the host to ``params["target"]``; returns
  ``from``, ``to``, ``changed`` and a ``diff``.
- ``restart_and_verify(params, switched, run, check_mode)``: ``(result, failure or None)``.
- ``read_back(params, run)``: the release the host runs now, read from the host.
- ``snapshot(params, run, check_mode)``: record at deploy time what a later rollback needs.

``run(argv)`` runs a command on the host: ``(rc, stdout, stderr)``.
"""

from __future__ import annotations


class MechanismError(Exception):
    """A host whose code cannot be read or changed this way; the message says why and what to do."""


class CodeMechanism:
    name = None
    # Extra module options this mechanism reads (documented by the release.rollback.code_mechanism fragment).
    args = {}

    @staticmethod
    def runner(module):
        """``run(argv)`` on this host for ``module``: ``(rc, stdout, stderr)``."""
        return module.run_command

    def discover(self, params, run):
        raise NotImplementedError

    def cas_from(self, info):
        return None

    def cas_problem(self, params, info):
        """One sentence when the host no longer runs what the plan found (compare-and-swap), else None."""
        live = info.get("live")
        if params.get("expect_live") and live is not None and live not in (params["expect_live"], params["target"]):
            return "the host now runs %s, the plan expected %s: make a new plan" % (live, params["expect_live"])
        return None

    def argument_problem(self, params):
        """One sentence when the host's options cannot work together, else None."""
        return None

    def switch(self, params, info, check_mode, run):
        raise NotImplementedError

    def restart_and_verify(self, params, switched, run, check_mode):
        raise NotImplementedError

    def read_back(self, params, run):
        raise NotImplementedError

    def snapshot(self, params, run, check_mode):
        raise NotImplementedError
