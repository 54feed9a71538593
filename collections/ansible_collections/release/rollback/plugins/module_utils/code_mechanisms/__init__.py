# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The code stage's mechanisms: how a host's code is deployed, one file per kind behind ``base.CodeMechanism``.

``registry.MECHANISMS`` names them; ``code_rollback``, ``release_facts``, ``release_claim`` and
``release_snapshot`` take the one the inventory's ``rollback_code_mechanism`` selects from there.
"""
