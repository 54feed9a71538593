"""The test suite's bytecode cache for code Python imports from zip archives.

Every module ansible runs arrives as an AnsiballZ zip, and Python's ``zipimport`` keeps no bytecode:
each module execution compiles ``ansible.module_utils.basic`` and everything it imports from source,
twice on Python 3.11 (``find_spec`` compiles to learn the file name, ``exec_module`` again). A
profile of the demo put half of the module processes' CPU there, and the suite runs thousands of
module executions on the same few sources.

``tests/conftest.py`` puts this directory on ``PYTHONPATH`` and names a cache directory in
``RELEASE_ROLLBACK_TEST_ZIP_BYTECODE``; Python imports this file at start-up in every process the
tests start. It caches the code object of each zip-imported source by the source's hash, the
interpreter's cache tag and its optimisation level, which is what ``__pycache__`` does for files on
disk: the code that runs is the code ``compile`` makes of the same bytes. Nothing outside the test
suite uses it; the benchmarks in ``bench/`` measure module executions without it.
"""

from __future__ import annotations

import os

_CACHE = os.environ.get("RELEASE_ROLLBACK_TEST_ZIP_BYTECODE")

if _CACHE:
    import hashlib
    import marshal
    import sys
    import types
    import zipimport

    _compile = zipimport._compile_source
    _TAG = f"{sys.implementation.cache_tag}-{sys.flags.optimize}".encode()
    _seen: dict[str, object] = {}

    def _named(code, filename: str):
        """The code object with every nested code object's file name set to ``filename``."""
        consts = tuple(_named(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts)
        return code.replace(co_filename=filename, co_consts=consts)

    def _compile_source(pathname: str, source: bytes):
        key = hashlib.sha256(_TAG + b"\0" + source).hexdigest()
        code = _seen.get(key)
        if code is None:
            path = os.path.join(_CACHE, key)
            try:
                with open(path, "rb") as fh:
                    code = marshal.load(fh)
            except (OSError, EOFError, ValueError, TypeError):
                code = _compile(pathname, source)
                try:
                    os.makedirs(_CACHE, exist_ok=True)
                    partial = f"{path}.{os.getpid()}"
                    with open(partial, "wb") as fh:
                        marshal.dump(code, fh)
                    os.replace(partial, path)
                except OSError:
                    pass
            _seen[key] = code
        return code if code.co_filename == pathname else _named(code, pathname)

    zipimport._compile_source = _compile_source
