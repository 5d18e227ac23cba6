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


def pytest_configure(config):
    keep = suite_keep()
    config._idselect_suite_keep = keep
    if keep is not None:
        patch_after_construction(keep)


def pytest_report_header(config):
    keep = config._idselect_suite_keep
    return f"idselect suite: {'unpatched' if keep is None else f'every supported model patched, keep={keep!r}'}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    keep = config._idselect_suite_keep
    if keep is None:
        terminalreporter.write_line("idselect suite: unpatched run")
        return
    terminalreporter.write_line(f"idselect suite: keep={keep!r}; models patched: {dict(PATCHED)}")
    for reason, count in REFUSED.items():
        terminalreporter.write_line(f"idselect suite: patch refused {count}x: {reason}")
