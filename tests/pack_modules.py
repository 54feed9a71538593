"""Pack modules into AnsiballZ zips as ansible-playbook does, and print each zip's SHA-256 and files.

    python tests/pack_modules.py COLLECTIONS_DIR MODULE.py [MODULE.py ...]

``tests/unit/test_pyboot.py`` runs it with and without the suite's import cache (tests/pyboot) to
show the zips are the same; timed with ``/usr/bin/time``, it measures what the cache saves
(bench/README.md, "The test suite's time").
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

from ansible._internal._ansiballz import _builder
from ansible.executor import module_common
from ansible.plugins.loader import init_plugin_loader


def main(collections: str, paths: list[str]) -> dict:
    init_plugin_loader([str(Path(collections).resolve())])  # ansible finds collections on absolute paths only
    manager = _builder.ExtensionManager.create(task_vars={})
    when = datetime.datetime(1980, 1, 1, tzinfo=datetime.UTC)
    out = {}
    for path in paths:
        name = Path(path).stem
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            fqn = f"ansible_collections.release.rollback.plugins.modules.{name}"
            module_common.recursive_finder(name, fqn, Path(path).read_bytes(), zf, when, manager)
        out[name] = [hashlib.sha256(buf.getvalue()).hexdigest(), sorted(zipfile.ZipFile(buf).namelist())]
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2:])))
