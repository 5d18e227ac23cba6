"""The package root holds the library core only: tools live in ``idselect.tools``, test
fixtures in ``idselect.testing``, neither is imported by ``import idselect``, and the old
module names (deprecation aliases until issue 30; the package was never published) are gone."""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where each module that once sat in the package root (or in the hooks' old single module) lives now.
REMOVED = {"idselect.tiny": "idselect.testing.tiny", "idselect.demo": "idselect.tools.demo",
           "idselect.evaluate": "idselect.tools.evaluate", "idselect.flops": "idselect.tools.flops",
           "idselect.benchmark": "idselect.tools.benchmark", "idselect.cli_args": "idselect.tools.cli_args",
           "idselect.hooks.core": "idselect.hooks.engine", "idselect._moved": None}
# The modules `import idselect` may load: the library core. Listed by hand (not derived from the
# package), so a new import of a tool or fixture from the core fails here.
CORE = {"idselect", "idselect._checks", "idselect._ops", "idselect.api", "idselect.device_path",
        "idselect.importance", "idselect.options", "idselect.reference", "idselect._C"}


def fresh_import(code):
    """Run ``code`` in a fresh interpreter that imports this checkout (this one has imported the
    tools already); returns its stdout."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True).stdout


def test_import_idselect_loads_the_core_only():
    loaded = fresh_import("import sys, idselect; print(idselect.__file__); "
                          "print(' '.join(sorted(m for m in sys.modules if m.startswith('idselect'))))").split("\n")
    assert os.path.dirname(loaded[0]) == os.path.join(ROOT, "idselect")  # this checkout, not an install elsewhere
    modules = set(loaded[1].split())
    assert "idselect.hooks" in modules and "idselect.hooks.selfcheck" in modules  # the core did load
    stray = sorted(m for m in modules if not (m in CORE or m.startswith("idselect.hooks")))
    assert stray == [], f"import idselect loaded modules that are not the library core: {stray}"
    assert not [m for m in modules if m.startswith(("idselect.tools", "idselect.testing"))]
    assert not modules & set(REMOVED)


@pytest.mark.parametrize("old", sorted(REMOVED))
def test_the_old_module_names_are_gone(old):
    path = os.path.join(ROOT, *old.split(".")) + ".py"
    assert not os.path.exists(path), path
    # Nothing in the package resolves the old name (a module, or an alias put into sys.modules).
    # (Only this checkout's files count: an editable install of another checkout may still answer.)
    spec = importlib.util.find_spec(old)
    assert spec is None or not os.path.abspath(spec.origin).startswith(ROOT + os.sep), spec.origin
    if REMOVED[old]:  # the new place imports
        __import__(REMOVED[old])


@pytest.mark.parametrize("module, name", [("idselect.hooks.llava", "encoder_layers"),
                                          ("idselect.hooks.llava", "placeholder_mask")])
def test_names_that_moved_out_of_a_hooks_module_no_longer_resolve_there(module, name):
    import importlib

    with pytest.raises(AttributeError):
        getattr(importlib.import_module(module), name)


def test_the_package_root_holds_no_alias_module():
    """Every module in the package root and in the hooks has code of its own: none is a bare
    re-export or resolves names elsewhere (the shapes the deprecation aliases and shims had)."""
    for root in (os.path.join(ROOT, "idselect"), os.path.join(ROOT, "idselect", "hooks")):
        for file in sorted(os.listdir(root)):
            if not file.endswith(".py") or file in ("__init__.py", "__main__.py"):
                continue
            with open(os.path.join(root, file)) as f:
                source = f.read()
            assert not re.search(r"sys\.modules\[[^]]*\]\s*=|import_module\(|^def __getattr__|^__getattr__ =",
                                 source, re.MULTILINE), file
            assert re.search(r"^(def|class) ", source, re.MULTILINE), f"{file} defines nothing"


def test_nothing_imports_the_old_names():
    # Import statements only (at a line's start), not prose that names the old paths.
    short = "|".join(sorted({old.split(".")[-1] for old in REMOVED if old.count(".") == 1}))
    pattern = re.compile(r"^\s*(from idselect import [^\n]*\b|import idselect\.|from idselect\."
                         rf"|from \.\. import [^\n]*\b)({short})\b|^\s*(from|import) idselect\.hooks\.core\b"
                         r"|^\s*from \.?\.?core import", re.MULTILINE)
    offenders = []
    for top in ("idselect", "tests", "bench", ".ci", "docs"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for file in files:
                if file.endswith((".py", ".sh", ".md")):
                    path = os.path.join(folder, file)
                    with open(path) as f:
                        offenders += [f"{path}: {m.group(0)}" for m in pattern.finditer(f.read())]
    assert offenders == []
