#!/usr/bin/env bash
# transformers' own model and generation tests (tests/models/<family>/test_modeling_<family>.py,
# with the GenerationTesterMixin tests they pull in) for idselect's families, on patched models:
#
#   TRANSFORMERS_GIT=/path/to/transformers/.git bash .ci/transformers-suite.sh 5.24.0 off       # baseline
#   TRANSFORMERS_GIT=... bash .ci/transformers-suite.sh 5.24.0 identity                        # keep=1.0
#   TRANSFORMERS_GIT=... bash .ci/transformers-suite.sh 5.24.0 2 llava qwen3_vl                # keep=2
#   python .ci/transformers_suite_compare.py suite-results/5.24.0-off suite-results/5.24.0-2
#
# MODE: off (unpatched), identity (keep=1.0: the patch must change nothing) or a positive int
# (keep per image / video); the models are patched right after construction by
# .ci/transformers_suite_plugin.py. One JUnit XML per family goes to $SUITE_OUT/<version>-<mode>/
# (default suite-results/), plus the time each family took.
#
# Where the test code comes from (never copied into this repository):
# - the registry's source release (pip download --no-binary): tests/test_*.py at that release, and src/
#   (test_pipeline_mixin.py imports src/transformers by path)
#   (test_modeling_common.py, test_configuration_common.py, ...); CI can fetch it (pip only);
# - a transformers git snapshot ($TRANSFORMERS_GIT, a git directory) at $TRANSFORMERS_REF
#   (default v<version>): tests/models/, tests/generation/, tests/exporters/, tests/utils/, tests/pipelines/, the repository's utils/ (helpers the tests import) and the other
#   top-level helpers (tests/__init__.py, tests/*_tester.py), which the source release lacks.
#   CI has no copy of the repository, so this runs where a snapshot exists, not in .ci/run.
#   With a ref that is not the release's tag, the release's own top-level files still win.
#
# PYTHON: an interpreter with transformers==<version>, pytest and parameterized (default: a new
# venv as .ci/hooks-on-transformers.sh makes it). Runs after the README's install (idselect/_C*.so).
# Exit status 0 whatever the tests say: compare the runs (transformers_suite_compare.py).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export PIP_DISABLE_PIP_VERSION_CHECK=1
VERSION=${1:?usage: $0 TRANSFORMERS_VERSION off|identity|KEEP [FAMILY...]}
MODE=${2:?usage: $0 TRANSFORMERS_VERSION off|identity|KEEP [FAMILY...]}
shift 2
FAMILIES=${*:-llava llava_next llava_onevision video_llava qwen2_5_vl qwen3_vl qwen3_5 internvl}
: "${TRANSFORMERS_GIT:?set TRANSFORMERS_GIT to a transformers git directory (the tests/models tree is not in the source release)}"
REF=${TRANSFORMERS_REF:-v$VERSION}
case "$MODE" in
  off) keep="" ;;
  identity) keep=identity ;;
  *[!0-9]*|"") echo "MODE must be off, identity or a positive integer, got '$MODE'" >&2; exit 2 ;;
  *) keep=$MODE ;;
esac
git -C "$TRANSFORMERS_GIT" rev-parse --verify -q "$REF^{commit}" > /dev/null \
  || { echo "TRANSFORMERS_REF=$REF is not a commit of $TRANSFORMERS_GIT" >&2; exit 2; }
work=${SUITE_WORK:-$(mktemp -d)}  # give SUITE_WORK to reuse the tree (and venv) between runs
mkdir -p "$work"
out=${SUITE_OUT:-$repo/suite-results}/$VERSION-$MODE
mkdir -p "$out"

python_bin=${PYTHON:-}
if [ -z "$python_bin" ]; then
  python_bin="$work/venv-$VERSION/bin/python"
  if [ ! -x "$python_bin" ]; then
    python -m venv "$work/venv-$VERSION"
    minor=$(echo "$VERSION" | cut -d. -f2)
    if [ "$(echo "$VERSION" | cut -d. -f1)" = 5 ] && [ "$minor" -ge 17 ] && [ "$minor" -le 23 ]; then
      "$python_bin" -m pip install -q -r .ci/requirements-older-transformers.txt "transformers==$VERSION" parameterized requests datasets
    else
      "$python_bin" -m pip install -q "torch==$(python -c 'import torch; print(torch.__version__)')" \
        "transformers==$VERSION" numpy pytest parameterized httpx requests datasets
    fi
  fi
fi
"$python_bin" - "$VERSION" <<'PY'
import sys, transformers
assert transformers.__version__ == sys.argv[1], (transformers.__version__, sys.argv[1])
PY

# The test tree: the snapshot's helpers first, the release's own top-level test files over them.
tree="$work/tree-$VERSION-$(git -C "$TRANSFORMERS_GIT" rev-parse --short "$REF^{commit}")"
if [ ! -d "$tree/tests" ]; then
  mkdir -p "$tree"
  paths=$(git -C "$TRANSFORMERS_GIT" ls-tree --name-only "$REF" tests/ | grep '\.py$')
  for dir in tests/generation tests/exporters tests/utils tests/pipelines tests/models/__init__.py utils; do
    git -C "$TRANSFORMERS_GIT" cat-file -e "$REF:$dir" 2>/dev/null && paths="$paths $dir"
  done
  for family in llava llava_next llava_onevision video_llava qwen2_5_vl qwen3_vl qwen3_5 internvl; do
    git -C "$TRANSFORMERS_GIT" cat-file -e "$REF:tests/models/$family" 2>/dev/null && paths="$paths tests/models/$family"
  done
  # shellcheck disable=SC2086
  git -C "$TRANSFORMERS_GIT" archive "$REF" -- $paths | tar -x -C "$tree"
  "$python_bin" -m pip download -q --no-binary :all: --no-deps "transformers==$VERSION" -d "$work/sdist-$VERSION"
  tar -xzf "$work/sdist-$VERSION/transformers-$VERSION.tar.gz" -C "$tree" --strip-components=1 "transformers-$VERSION/tests" "transformers-$VERSION/src"
fi
# A helper module that a release's top-level test file imports and that neither the source
# release nor the snapshot has (5.25's test_fsdp_mixin.py and test_tensor_parallel_mixin.py
# import tests/distributed_testing_utils.py, used only inside multi-process tests) becomes a
# stub whose every function skips the test that calls it (unittest.SkipTest), the same in every
# mode; each stub is named in the README.
"$python_bin" - "$tree" >> "$tree/stubbed.txt" <<'PY'
import ast, pathlib, sys
tests = pathlib.Path(sys.argv[1]) / "tests"
STUB = (
    '"""Stub written by idselect\'s .ci/transformers-suite.sh: this helper is in neither the source\n'
    'release nor the git snapshot. Every function it is asked for skips the test that calls it."""\n'
    "import unittest\n\n\n"
    "def __getattr__(name):\n"
    "    def skip(*args, **kwargs):\n"
    "        raise unittest.SkipTest(f'tests/{__name__.split(\".\")[-1]}.py ({name}) is absent from this test tree')\n"
    "    return skip\n"
)
for path in sorted(tests.glob("test_*.py")):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            first = tests / node.module.split(".")[0]
            if not first.with_suffix(".py").exists() and not first.is_dir():
                first.with_suffix(".py").write_text(STUB, encoding="utf-8")
                print(f"tests/{first.name}.py (imported by tests/{path.name})")
PY
# The snapshot's own testing_utils: constants its testers import that a newer release moved
# (.ci/transformers_suite_plugin.py supplies those the installed release lacks).
[ -f "$tree/snapshot_testing_utils.py" ] || git -C "$TRANSFORMERS_GIT" show "$REF:src/transformers/testing_utils.py" > "$tree/snapshot_testing_utils.py"

echo "transformers $VERSION, tests from the release's source + $REF of $TRANSFORMERS_GIT, mode $MODE" | tee -a "$out/README"
[ ! -s "$tree/stubbed.txt" ] || { echo "stubs (absent helpers; their tests skip):"; cat "$tree/stubbed.txt"; } | tee -a "$out/README"
for family in $FAMILIES; do
  file="tests/models/$family/test_modeling_$family.py"
  [ -f "$tree/$file" ] || { echo "$family: no $file at $REF" | tee -a "$out/README"; continue; }
  start=$(date +%s)
  (cd "$tree" && IDSELECT_SUITE_KEEP="$keep" IDSELECT_SUITE_SNAPSHOT_TESTING_UTILS="$tree/snapshot_testing_utils.py" PYTHONPATH="$repo:$repo/.ci" \
    "$python_bin" -m pytest -q -p no:cacheprovider -p transformers_suite_plugin -o junit_family=xunit1 \
      --junitxml="$out/$family.xml" ${SUITE_PYTEST_ARGS:-} "$file" > "$out/$family.log" 2>&1) || true
  echo "$family: $(tail -n 1 "$out/$family.log") ($(($(date +%s) - start)) s)" | tee -a "$out/README"
done
