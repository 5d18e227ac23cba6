"""The package root holds the library core only: tools live in ``idselect.tools``, test
fixtures in ``idselect.testing``, neither is imported by ``import idselect``; the old module
names still import, with a DeprecationWarning pointing at the importer."""
import os
import re
import subprocess
import sys

import pytest

import idselect

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOVED = {"tiny": "idselect.testing.tiny", "demo": "idselect.tools.demo", "evaluate": "idselect.tools.evaluate",
         "flops": "idselect.tools.flops", "benchmark": "idselect.tools.benchmark",
         "cli_args": "idselect.tools.cli_args"}


def test_import_idselect_leaves_tools_and_fixtures_out():
    # A fresh interpreter: this one has imported the tools already.
    code = "import sys, idselect; print(' '.join(sorted(m for m in sys.modules if m.startswith('idselect'))))"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            check=True).stdout.split()
    assert "idselect.hooks" in loaded  # the core did load
    assert not [m for m in loaded if m.startswith(("idselect.tools", "idselect.testing"))]
    assert not [m for m in loaded if m.split(".")[-1] in MOVED]


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_names_warn_and_are_the_new_modules(old, monkeypatch):
    import importlib

    new = importlib.import_module(MOVED[old])
    name = f"idselect.{old}"
    monkeypatch.delitem(sys.modules, name, raising=False)  # imported afresh, so it warns here
    monkeypatch.delattr(idselect, old, raising=False)
    with pytest.warns(DeprecationWarning, match=re.escape(f"{name} moved to {MOVED[old]}")) as record:
        module = __import__(name, fromlist=["_"])
    assert module is new and getattr(idselect, old) is new
    assert record[0].filename == __file__  # stacklevel: the importer's line, not the shim's


def test_nothing_imports_the_old_names():
    # Import statements only (at a line's start), not prose that names the old paths.
    pattern = re.compile(r"^\s*(from idselect import [^\n]*\b|import idselect\.|from idselect\."
                         r"|from \.\. import [^\n]*\b)"
                         rf"({'|'.join(MOVED)})\b", re.MULTILINE)
    offenders = []
    for top in ("idselect", "tests", "bench"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for file in files:
                if file.endswith(".py"):
                    path = os.path.join(folder, file)
                    with open(path) as f:
                        offenders += [f"{path}: {m.group(0)}" for m in pattern.finditer(f.read())]
    assert offenders == []



@pytest.mark.parametrize("module, name, home", [
    ("idselect.hooks.core", "PatchHandle", "idselect.hooks.handle"),
    ("idselect.hooks.core", "CacheState", "idselect.hooks.compaction"),
    ("idselect.hooks.llava", "encoder_layers", "idselect.hooks.family"),
    ("idselect.hooks.llava", "placeholder_mask", "idselect.hooks.integration"),
])
def test_names_moved_out_of_the_old_hooks_modules_warn_and_are_the_new_objects(module, name, home):
    import importlib

    old = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=re.escape(f"{module}.{name} is deprecated; use {home}.{name}")) as record:
        value = getattr(old, name)
    assert value is getattr(importlib.import_module(home), name)
    assert record[0].filename == __file__  # the warning points at the reader


def test_old_hooks_names_without_a_replacement_say_what_replaced_them():
    import idselect.hooks.core as core

    with pytest.raises(AttributeError, match="FamilyAdapter was replaced by the declarative idselect.hooks.family.Family"):
        core.FamilyAdapter
    with pytest.raises(AttributeError, match="MEDIA_INPUTS was replaced by each family's Family.media_inputs"):
        core.MEDIA_INPUTS
    with pytest.raises(AttributeError, match="has no attribute 'never_there'"):
        core.never_there
