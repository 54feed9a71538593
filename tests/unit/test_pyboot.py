"""The suite's caches in tests/pyboot (bytecode of zip-imported code, the imports ansible-playbook finds in each
file it packs) run and pack what the sources say."""

from __future__ import annotations

import json
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


PACK = PYBOOT.parent / "pack_modules.py"
COLLECTIONS = PYBOOT.parent.parent / "collections"
MODULES = sorted((COLLECTIONS / "ansible_collections/release/rollback/plugins/modules").glob("*.py"))


def _pack(paths, cache: Path | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RELEASE_ROLLBACK_TEST_ZIP_BYTECODE")}
    if cache is not None:
        env.update(PYTHONPATH=str(PYBOOT), RELEASE_ROLLBACK_TEST_ZIP_BYTECODE=str(cache))
    proc = subprocess.run(
        [sys.executable, str(PACK), str(COLLECTIONS), *map(str, paths)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_every_module_packs_to_the_same_zip_with_the_import_cache_cold_and_warm(tmp_path):
    assert len(MODULES) > 10
    cache = tmp_path / "cache"
    plain = _pack(MODULES, None)
    cold = _pack(MODULES, cache)
    entries = set((cache / "module-deps").iterdir())
    warm = _pack(MODULES, cache)
    assert cold == plain and warm == plain
    # The cache was used: the cold run stored each parsed file's imports, the warm run found them all.
    assert len(entries) > len(MODULES)
    assert set((cache / "module-deps").iterdir()) == entries
    assert any("ansible/module_utils/basic.py" in files for _, files in plain.values())


def test_an_edited_module_is_parsed_again_and_packs_what_it_now_imports(tmp_path):
    cache = tmp_path / "cache"
    module = tmp_path / "probe.py"
    module.write_text("from ansible.module_utils.basic import AnsibleModule\n")
    first = _pack([module], cache)["probe"][1]
    module.write_text(module.read_text() + "from ansible.module_utils.urls import open_url\n")
    edited = _pack([module], cache)["probe"][1]
    assert "ansible/module_utils/urls.py" not in first
    assert "ansible/module_utils/urls.py" in edited
    assert edited == _pack([module], None)["probe"][1]
