"""Fingerprints of vLLM's source files, to check at engine start that the installed vLLM is,
file by file, the code the integration was verified on (idselect/vllm/releases.py names the
files and keeps the notes; release_fingerprints.py holds the fingerprints, written by
``python -m idselect.tools.vllm_fingerprint``).

A file's fingerprint is the sha256 of its parsed code, so that comments, blank lines, line
breaks, indentation style and docstrings (any statement that is a string alone) do not count
and any change to the code does. The
parse tree is written out by ``canonical`` below rather than by ``ast.dump``: fields that are
empty or None are left out, so the fingerprint of the same source is the same on the Python
releases vLLM runs on (3.12 added ``type_params=[]`` to every function and class, which
``ast.dump`` shows). The sha256 of the raw bytes is recorded beside it: a file whose bytes
match is not parsed at all (the usual case, and fast).

Nothing here imports vLLM or torch: the files are read from a vLLM package directory or from
a wheel (a zip) as they are.
"""
from __future__ import annotations

import ast
import hashlib
import os
import re
import zipfile
from typing import Dict, Iterable, List, Optional, Tuple

#: The version of the fingerprint itself: bumped whenever ``canonical`` changes what it writes
#: (the record then has to be regenerated).
FORMAT = 2

#: A file's entry in the record: (code fingerprint, bytes fingerprint), or None where the release
#: has no such file.
Entry = Optional[Tuple[str, str]]

def _is_string_statement(node: object) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def canonical(node: object) -> str:
    """The parse tree as text: node type and its non-empty fields, recursively. Statements that
    are a string alone (docstrings, and the attribute docstrings vLLM's config classes use for
    their --help) are dropped: they do nothing. Positions (line, column) are not fields, so they
    never count."""
    out: List[str] = []
    _write(node, out)
    return "".join(out)


def _write(node: object, out: List[str]) -> None:
    if isinstance(node, ast.AST):
        out.append(type(node).__name__)
        out.append("(")
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, list):  # statement lists: docstrings and attribute docstrings out
                value = [item for item in value if not _is_string_statement(item)]
            if value is None or (isinstance(value, list) and not value):
                continue
            out.append(name)
            out.append("=")
            _write(value, out)
            out.append(",")
        out.append(")")
    elif isinstance(node, list):
        out.append("[")
        for item in node:
            _write(item, out)
            out.append(",")
        out.append("]")
    else:  # str, bytes, int, float, complex, bool, Ellipsis: their repr is stable
        out.append(repr(node))


def code_fingerprint(source: bytes) -> str:
    """sha256 of the code of a Python source (comments, layout and docstrings do not count)."""
    return hashlib.sha256(canonical(ast.parse(source)).encode("utf-8")).hexdigest()


def bytes_fingerprint(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()


def fingerprint(source: bytes) -> Tuple[str, str]:
    return code_fingerprint(source), bytes_fingerprint(source)


class VllmSource:
    """The files of one vLLM build: an installed package directory (``.../site-packages/vllm``)
    or a wheel. Paths are relative to the ``vllm`` package, with ``/``."""

    def __init__(self, location: str) -> None:
        self.location = location
        if zipfile.is_zipfile(location):
            self._zip: Optional[zipfile.ZipFile] = zipfile.ZipFile(location)
            self._names = set(self._zip.namelist())
        elif os.path.isfile(os.path.join(location, "__init__.py")):
            self._zip = None
        else:
            raise ValueError(f"{location}: neither a vLLM wheel nor a vLLM package directory (one with __init__.py)")

    def read(self, path: str) -> Optional[bytes]:
        """The file's bytes, or None where this build has no such file."""
        if self._zip is not None:
            name = "vllm/" + path
            return self._zip.read(name) if name in self._names else None
        full = os.path.join(self.location, *path.split("/"))
        if not os.path.isfile(full):
            return None
        with open(full, "rb") as handle:
            return handle.read()

    def version(self) -> str:
        """``__version__`` from vllm/_version.py (what ``vllm.__version__`` says, without
        importing it)."""
        text = self.read("_version.py")
        if text is None:
            raise ValueError(f"{self.location}: no vllm/_version.py")
        match = re.search(rb"""^__version__\s*=\s*(?:version\s*=\s*)?['"]([^'"]+)['"]""", text, re.M)
        if match is None:
            raise ValueError(f"{self.location}: vllm/_version.py gives no __version__")
        return match.group(1).decode()


def fingerprints(source: VllmSource, paths: Iterable[str]) -> Dict[str, Entry]:
    """Each file's entry, as the record keeps it."""
    out: Dict[str, Entry] = {}
    for path in paths:
        data = source.read(path)
        out[path] = None if data is None else fingerprint(data)
    return out


def differing_files(source: VllmSource, recorded: Dict[str, Entry]) -> List[Tuple[str, str]]:
    """(path, how) for each recorded file whose code in ``source`` is not the recorded code:
    changed, missing, or present where the release has none. A file whose bytes match is not
    parsed."""
    out = []
    for path, entry in sorted(recorded.items()):
        data = source.read(path)
        if entry is None:
            if data is not None:
                out.append((path, "present, but the release has no such file"))
        elif data is None:
            out.append((path, "missing"))
        elif bytes_fingerprint(data) != entry[1]:
            try:
                changed = code_fingerprint(data) != entry[0]
            except SyntaxError:
                changed = True
            if changed:
                out.append((path, "code differs"))
    return out
