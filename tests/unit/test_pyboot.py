"""The suite's bytecode cache for zip-imported code (tests/pyboot) runs what the source says."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

PYBOOT = Path(__file__).resolve().parent.parent / "pyboot"


def _run_from_zip(tmp_path: Path, name: str, source: str, cache: Path) -> subprocess.CompletedProcess:
    archive = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("payload_mod.py", source)
    env = dict(os.environ, PYTHONPATH=str(PYBOOT), RELEASE_ROLLBACK_TEST_ZIP_BYTECODE=str(cache))
    script = f"import sys; sys.path.insert(0, {str(archive)!r}); import payload_mod; payload_mod.main()"
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)


def test_a_changed_source_runs_its_new_code_and_tracebacks_name_the_archive_it_came_from(tmp_path):
    cache = tmp_path / "cache"
    first = _run_from_zip(tmp_path, "a", "def main():\n    print('one')\n", cache)
    assert first.stdout == "one\n", first.stderr
    assert len(list(cache.iterdir())) == 1

    # Same source from another archive: the cached code runs, under the new archive's name.
    source = "def main():\n    raise RuntimeError('from the zip')\n"
    _run_from_zip(tmp_path, "b", source, cache)
    again = _run_from_zip(tmp_path, "c", source, cache)
    assert "RuntimeError: from the zip" in again.stderr
    assert str(tmp_path / "c.zip") in again.stderr and str(tmp_path / "b.zip") not in again.stderr

    # An edited source is compiled anew, never served from the entry of the old one.
    edited = _run_from_zip(tmp_path, "d", "def main():\n    print('two')\n", cache)
    assert edited.stdout == "two\n", edited.stderr
    assert len(list(cache.iterdir())) == 3
