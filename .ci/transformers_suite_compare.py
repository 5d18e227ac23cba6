"""Compare two runs of .ci/transformers-suite.sh test by test.

    python .ci/transformers_suite_compare.py suite-results/5.24.0-off suite-results/5.24.0-identity

For each family (one JUnit XML per family in each directory): the counts of passed / failed /
skipped tests in both runs, then every test whose outcome differs, with the first line of the
other run's error. Exit status 1 if a test that passed in the first run does not pass in the
second (a regression), else 0.
"""
from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, Tuple


def outcomes(path: Path) -> Dict[str, Tuple[str, str]]:
    """test id -> (outcome, first line of its message) from one JUnit XML file."""
    result = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                text = node.get("message") or node.text or ""
                message = text.strip().splitlines()[0][:200] if text.strip() else ""
                break
        result[test] = (outcome, message)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="results directory of the reference run (e.g. <version>-off)")
    parser.add_argument("other", type=Path, help="results directory of the run to compare")
    args = parser.parse_args(argv)
    for path in (args.base, args.other):
        if not path.is_dir():
            parser.error(f"not a results directory: {path}")
    regressions = 0
    for base_file in sorted(args.base.glob("*.xml")):
        other_file = args.other / base_file.name
        family = base_file.stem
        if not other_file.exists():
            print(f"{family}: no {other_file}")
            continue
        base, other = outcomes(base_file), outcomes(other_file)

        def counts(runs):
            values = [o for o, _ in runs.values()]
            return ", ".join(f"{values.count(k)} {k}" for k in ("passed", "failed", "error", "skipped"))

        print(f"{family}: {args.base.name}: {counts(base)} | {args.other.name}: {counts(other)}")
        for test in sorted(set(base) | set(other)):
            b, o = base.get(test, ("absent", "")), other.get(test, ("absent", ""))
            if b[0] == o[0]:
                continue
            if b[0] == "passed" and o[0] != "passed":
                regressions += 1
            print(f"  {b[0]} -> {o[0]}: {test}\n      {o[1] or b[1]}")
    print(f"{regressions} test(s) pass in {args.base.name} and not in {args.other.name}")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
