#!/usr/bin/env bash
# CI: the hooks tests on the NEWEST transformers release the registry offers today, in a virtual
# environment of its own (as .ci/hooks-on-transformers.sh; the extension built by the README's
# install is used in place). Releases come every week or two: this is how CI notices the one that
# breaks the hooks without anyone remembering to look (docs/hooks.md, "Supported transformers
# versions").
#
#   bash .ci/newest-transformers.sh            # the newest final release (pre-releases are not)
#   bash .ci/newest-transformers.sh 5.26.0     # or a given one, judged the same way
#
# Passes when every hooks test passes, or where idselect.patch refuses the release clearly (its
# self-check outside the verified range raises UnverifiedTransformersError). Fails where the
# self-check lets a family through and a test then finds a wrong result (silently wrong), and
# where a release inside the verified range fails any test. How the two are told apart:
#   1. a probe patches a tiny model of every family in a fresh process (the self-check runs for
#      real) and prints, per family, "passed" or the refusal with its reasons;
#   2. the hooks tests run; a test that failed because idselect.patch refused
#      (UnverifiedTransformersError), or that belongs to a family the probe saw refused, is
#      reported as skipped with the reason (.ci/refusals_as_skips.py); any other failure fails.
# Outside the range, test_the_installed_release_is_one_of_the_verified_range fails by design (the
# range is widened by hand once a release is verified), so it is deselected, with a line saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PIP_DISABLE_PIP_VERSION_CHECK=1
unset IDSELECT_SKIP_SELF_CHECK
PYTHON=${PYTHON:-python}
# (HOOKS_TESTS=... narrows the run while working on this script.)
HOOKS_TESTS=${HOOKS_TESTS:-"tests/test_hooks.py tests/test_hooks_llava_onevision.py tests/test_hooks_qwen3_vl.py
  tests/test_hooks_qwen_internvl.py tests/test_hooks_robustness.py tests/test_generation_patterns.py
  tests/test_transformers_versions.py tests/test_tiny_models.py tests/test_importance.py
  tests/test_engine.py tests/test_family_contract.py tests/test_hooks_feature_outputs.py
  tests/test_hooks_assisted.py tests/test_hot_path.py"}

ls idselect/_C*.so > /dev/null 2>&1 || { echo "idselect/_C*.so not built: run the README's install first" >&2; exit 1; }
start=$(date +%s)
if [ $# -ge 1 ]; then
  VERSION=$1
else
  # pip lists final releases only, newest first: "transformers (5.25.0)".
  VERSION=$("$PYTHON" -m pip index versions transformers 2>/dev/null | sed -n 's/^transformers (\(.*\))$/\1/p')
  [ -n "$VERSION" ] || { echo "newest transformers: the registry did not answer 'pip index versions transformers'" >&2; exit 1; }
fi
pinned=$(sed -n 's/^transformers==//p' requirements.txt)
export PYTHONPATH="$ROOT"  # this checkout's idselect (its range), in every python below
range=$("$PYTHON" -c 'from idselect.hooks import compat; print(" to ".join(compat.SUPPORTED_TRANSFORMERS))' 2>/dev/null)
inside=$("$PYTHON" -c "from idselect.hooks import compat; print(int(compat.in_supported_range('$VERSION')))")
if [ "$VERSION" = "$pinned" ] && [ -z "${NEWEST_RUN_PINNED:-}" ]; then
  # The README's test command (the first line of .ci/run) ran every test on exactly this release.
  echo "=== newest transformers: $VERSION, the release requirements.txt pins: the main run tested it (NEWEST_RUN_PINNED=1 runs it again here)"
  exit 0
fi
if [ "$VERSION" = "$pinned" ]; then
  relation="the release requirements.txt pins (run again on the newest dependencies)"
elif [ "$inside" = 1 ]; then
  relation="inside the verified range ($range)"
else
  relation="OUTSIDE the verified range ($range): the self-check judges it"
fi
echo "=== newest transformers: $VERSION, $relation"

torch_version=$("$PYTHON" -c 'import torch; print(torch.__version__)')
work=$(mktemp -d "${TMPDIR:-/tmp}/idselect-newest-transformers.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
venv_python="$work/venv/bin/python"
"$venv_python" -m pip install -q "torch==$torch_version" "transformers==$VERSION" numpy pytest hypothesis matplotlib tqdm
installed=$(date +%s)

# 1. The probe: idselect.patch on a tiny model of every family, in this fresh process.
"$venv_python" - "$VERSION" > "$work/probe.txt" <<'PY' || { cat "$work/probe.txt"; echo "the probe itself failed" >&2; exit 1; }
import os, sys, warnings

import transformers

import idselect
from idselect.hooks import compat, selfcheck
from idselect.testing.cases import MODELS, case

version = transformers.__version__
assert version == sys.argv[1], (version, sys.argv[1])
assert os.path.dirname(os.path.abspath(idselect.__file__)) == os.path.abspath("idselect"), idselect.__file__
assert "cpu" in idselect.native_backends(), "the compiled CPU kernel did not load in this venv"
refused = []
for family in MODELS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the self-check's "passed" warning: said below
        try:
            try:
                model, _, _ = case(family, [(3, 1, 4)])
            except Exception:  # the release cannot build the tiny model: the self-check says so
                selfcheck.ensure_verified(family)
                raise
            idselect.patch(model, keep=5).remove()
        except Exception as error:  # any error from patch() is loud: a refusal, not a wrong token
            refused.append(family)
            reason = f"{type(error).__name__}: {error}".replace("\n", "\n      ")
            print(f"  {family}: REFUSED by idselect.patch\n      {reason}")
            continue
    verdict = "inside the verified range, no self-check" if compat.in_supported_range(version) else "the self-check passed"
    print(f"  {family}: patched ({verdict})")
print("REFUSED=" + ",".join(refused))
PY
probed=$(date +%s)
grep -v '^REFUSED=' "$work/probe.txt"
refused=$(sed -n 's/^REFUSED=//p' "$work/probe.txt")
if [ "$inside" = 1 ] && [ -n "$refused" ]; then
  echo "transformers $VERSION is inside the verified range, yet idselect.patch refused: $refused" >&2
  exit 1
fi

# 2. The hooks tests; refusals become skips with their reason, everything else counts.
deselect=()
if [ "$inside" != 1 ]; then
  deselect=(--deselect tests/test_transformers_versions.py::test_the_installed_release_is_one_of_the_verified_range)
  echo "(deselected: test_the_installed_release_is_one_of_the_verified_range, which fails by design outside the range)"
fi
set +e
# shellcheck disable=SC2086
IDSELECT_REFUSED_FAMILIES="$refused" PYTHONPATH="$ROOT:$ROOT/.ci" "$venv_python" -m pytest -q -p no:cacheprovider \
  -p refusals_as_skips -r fs "${deselect[@]}" $HOOKS_TESTS > "$work/pytest.txt" 2>&1
status=$?
set -e
if grep -q "short test summary info" "$work/pytest.txt"; then  # failures, refusals, skips; then the counts
  sed -n '/short test summary info/,$p' "$work/pytest.txt" | grep -v "short test summary info"
else
  tail -1 "$work/pytest.txt"
fi
end=$(date +%s)
echo "transformers $VERSION: install $((installed - start)) s, probe $((probed - installed)) s, tests $((end - probed)) s"
if [ $status -ne 0 ]; then
  sed -n '/= FAILURES =/,/short test summary info/p' "$work/pytest.txt" | head -300
  echo "=== newest transformers $VERSION: FAIL (a test failed${refused:+ beyond the refused families: $refused})" >&2
  exit 1
fi
echo "=== newest transformers $VERSION: PASS${refused:+ (idselect.patch refuses it for: $refused)}"
