"""pytest plugin: transformers' own model and generation tests on patched models.

Loaded by ``.ci/transformers-suite.sh`` (``-p transformers_suite_plugin``). With
``IDSELECT_SUITE_KEEP`` set, every ``...ForConditionalGeneration`` model of a family that
idselect supports is patched right after it is built (the end of ``PreTrainedModel.post_init``,
which every transformers model calls at the end of its ``__init__``), so every test of the
suite runs on a patched model:

- ``IDSELECT_SUITE_KEEP=identity``: ``keep=1.0``, every medium kept whole (the patch must be an
  identity: every test that passes unpatched passes);
- ``IDSELECT_SUITE_KEEP=<int>``: that many tokens per image or video (1 or 2: heavy pruning).

Unset: nothing is patched (the baseline run). The terminal summary says how many models were
patched and how many refused (``patch()`` raising: an unsupported tower, ...), so a run that
patched nothing cannot pass for a patched run.
"""
from __future__ import annotations

import ast
import os
from collections import Counter

import idselect

PATCHED: Counter = Counter()
REFUSED: Counter = Counter()


def suite_keep():
    """The keep of this run, from IDSELECT_SUITE_KEEP (None: unpatched)."""
    value = os.environ.get("IDSELECT_SUITE_KEEP", "").strip()
    if not value:
        return None
    if value == "identity":
        return 1.0
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"IDSELECT_SUITE_KEEP must be 'identity' or a positive integer, got {value!r}")
    return int(value)


def patch_after_construction(keep) -> None:
    """Wrap PreTrainedModel.post_init so that every top model of a supported family is patched."""
    from transformers import PreTrainedModel

    original = PreTrainedModel.post_init
    supported = set(idselect.supported_model_types())

    def post_init(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        model_type = getattr(self.config, "model_type", None)
        # Only the model whose generate() the hooks need: sub-models call post_init too.
        if model_type in supported and type(self).__name__.endswith("ForConditionalGeneration"):
            try:
                idselect.patch(self, keep=keep)
            except (TypeError, ValueError, RuntimeError) as error:
                REFUSED[f"{type(self).__name__}: {type(error).__name__}: {str(error)[:120]}"] += 1
            else:
                PATCHED[type(self).__name__] += 1
        return result

    PreTrainedModel.post_init = post_init


def supply_snapshot_test_constants() -> list:
    """Give transformers.testing_utils the literal constants the snapshot's test helpers import.

    The family tests and their testers (tests/causal_lm_tester.py, tests/vlm_tester.py) come from a
    git snapshot that may be older than the installed release; a release that moved a constant
    out of ``transformers.testing_utils`` (5.24+ no longer has ``_TEXT_MODEL_TESTER_DEFAULTS``)
    would make those files fail to import. ``IDSELECT_SUITE_SNAPSHOT_TESTING_UTILS`` names the
    snapshot's own ``src/transformers/testing_utils.py``; every top-level constant there with a
    literal value that the installed module lacks is set to the snapshot's value (the value the
    snapshot's testers were written against). Test data only: no model code is touched.
    """
    path = os.environ.get("IDSELECT_SUITE_SNAPSHOT_TESTING_UTILS", "")
    if not path or not os.path.exists(path):
        return []
    import transformers.testing_utils as installed

    supplied = []
    with open(path, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if hasattr(installed, name):
                continue
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            setattr(installed, name, value)
            supplied.append(name)
    return supplied


def pytest_configure(config):
    config._idselect_supplied = supply_snapshot_test_constants()
    keep = suite_keep()
    config._idselect_suite_keep = keep
    if keep is not None:
        patch_after_construction(keep)


# Test classes of a family's text-only LLM (Qwen3.5's Qwen3_5TextModelTest: Qwen3_5TextModel,
# Qwen3_5ForCausalLM, ...) build no ...ForConditionalGeneration model, so no patched model: they
# are left out of every mode (IDSELECT_SUITE_TEXT_TESTS=1 keeps them), which halves Qwen3.5's run.
TEXT_ONLY_CLASS_SUFFIX = "TextModelTest"


def pytest_collection_modifyitems(session, config, items):
    if os.environ.get("IDSELECT_SUITE_TEXT_TESTS", "") == "1":
        return
    kept, dropped = [], []
    for item in items:
        cls = getattr(item, "cls", None)
        (dropped if cls is not None and cls.__name__.endswith(TEXT_ONLY_CLASS_SUFFIX) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_report_header(config):
    keep = config._idselect_suite_keep
    lines = [f"idselect suite: {'unpatched' if keep is None else f'every supported model patched, keep={keep!r}'}"]
    if config._idselect_supplied:
        lines.append(f"idselect suite: testing_utils constants taken from the snapshot: {config._idselect_supplied}")
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    keep = config._idselect_suite_keep
    if keep is None:
        terminalreporter.write_line("idselect suite: unpatched run")
        return
    terminalreporter.write_line(f"idselect suite: keep={keep!r}; models patched: {dict(PATCHED)}")
    for reason, count in REFUSED.items():
        terminalreporter.write_line(f"idselect suite: patch refused {count}x: {reason}")
