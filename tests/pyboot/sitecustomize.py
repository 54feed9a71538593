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
disk: the code that runs is the code ``compile`` makes of the same bytes.

The controller's side of the same cost: to build each module's AnsiballZ zip, ansible-playbook
parses the module and every ``module_utils`` file it imports to find what else to pack
(``ansible.executor.module_common``: ``_compile_module_ast``, then ``ModuleDepFinder``). Its own cache
holds built zips for one ansible-playbook process only, and parses the files shared by many modules
(``basic`` and what it imports) once per module, so a suite of thousands of short jobs parses the
same sources again and again: a profile of ``tests/e2e/test_skeleton.py`` put 12 % of all its CPU
there. The finder's answer (the imports it found, and which are optional) depends only on the
file's name, whether it is a package's ``__init__``, its source and ansible's version; it is kept
under that key, and the source is parsed only where the key is new. If ansible's internals are not
the ones described here, nothing is changed.

Nothing outside the test suite uses either cache; the benchmarks in ``bench/`` measure without them.
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

    def _cached(path: str, make):
        """The value marshalled at ``path``; else ``make()``, written there for the next process."""
        try:
            with open(path, "rb") as fh:
                return marshal.load(fh)
        except (OSError, EOFError, ValueError, TypeError):
            pass
        value = make()
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            partial = f"{path}.{os.getpid()}"
            with open(partial, "wb") as fh:
                marshal.dump(value, fh)
            os.replace(partial, path)
        except OSError:
            pass
        return value

    def _named(code, filename: str):
        """The code object with every nested code object's file name set to ``filename``."""
        consts = tuple(_named(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts)
        return code.replace(co_filename=filename, co_consts=consts)

    def _compile_source(pathname: str, source: bytes):
        key = hashlib.sha256(_TAG + b"\0" + source).hexdigest()
        code = _seen.get(key)
        if code is None:
            code = _seen[key] = _cached(os.path.join(_CACHE, key), lambda: _compile(pathname, source))
        return code if code.co_filename == pathname else _named(code, pathname)

    zipimport._compile_source = _compile_source

    _DEPS = os.path.join(_CACHE, "module-deps")

    def _cache_deps(module_common) -> None:
        """Let ``module_common`` find a module's imports from the cache, parsing only on a miss."""
        compile_ast = getattr(module_common, "_compile_module_ast", None)
        finder_class = getattr(module_common, "ModuleDepFinder", None)
        module_metadata = getattr(module_common, "_get_module_metadata", None)
        if not (callable(compile_ast) and isinstance(finder_class, type) and callable(module_metadata)):
            return
        from ansible.release import __version__

        tag = _TAG + b"\0" + __version__.encode()

        class _Source:
            """A module's source, parsed only when the parse is needed."""

            __slots__ = ("_tree", "name", "source")

            def __init__(self, name, source):
                self.name, self.source, self._tree = name, source, None

            def tree(self):
                if self._tree is None:
                    self._tree = compile_ast(self.name, self.source)
                return self._tree

        finder_init = finder_class.__init__

        def find_deps(self, module_fqn, tree, is_pkg_init=False, *args, **kwargs):
            if not isinstance(tree, _Source):
                return finder_init(self, module_fqn, tree, is_pkg_init, *args, **kwargs)
            source = tree.source
            if not isinstance(source, bytes):
                source = str(source).encode("utf-8", "surrogatepass")
            key = hashlib.sha256(b"\0".join((tag, module_fqn.encode(), b"%d" % bool(is_pkg_init), source))).hexdigest()

            def parse():
                finder_init(self, module_fqn, tree.tree(), is_pkg_init, *args, **kwargs)
                return self.submodules, self.optional_imports

            self.submodules, self.optional_imports = _cached(os.path.join(_DEPS, key), parse)
            self.module_fqn, self.is_pkg_init = module_fqn, is_pkg_init

        module_common._compile_module_ast = _Source
        finder_class.__init__ = find_deps

        def metadata(tree):
            return module_metadata(tree.tree() if isinstance(tree, _Source) else tree)

        module_common._get_module_metadata = metadata

    class _OnImport:
        """A finder that lets ``ansible.executor.module_common`` load as usual, then calls ``_cache_deps``;
        it leaves ``sys.meta_path`` once it has found it, so later imports do not pass through it."""

        NAME = "ansible.executor.module_common"

        def find_spec(self, name, path, target=None):
            if name != self.NAME:
                return None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    run = spec.loader.exec_module

                    def exec_module(module, run=run):
                        run(module)
                        _cache_deps(module)

                    spec.loader.exec_module = exec_module
                    # The import system stops at the spec returned, so leaving the list here skips no finder.
                    sys.meta_path.remove(self)
                    return spec
            return None

    sys.meta_path.insert(0, _OnImport())
