"""pytest plugin for .ci/newest-transformers.sh (``-p refusals_as_skips``, with .ci on the path).

On a transformers release that idselect.patch refuses clearly, the tests that need a patch fail
with that refusal, and the battery's own test fails for the refused family: that is the contract
working, not a wrong result. Such a test is reported as skipped, with "REFUSED" and the reason:

- its exception is, or was raised from or during, an ``UnverifiedTransformersError`` (the
  self-check refused), or
- it is parametrized by ``family`` and the probe saw idselect.patch refuse that family
  (``IDSELECT_REFUSED_FAMILIES``, comma-separated).

Every other failure stays a failure: a family the self-check let through must pass every test.
"""
import os

import pytest

REFUSED = {f for f in os.environ.get("IDSELECT_REFUSED_FAMILIES", "").split(",") if f}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.outcome != "failed" or call.excinfo is None:
        return
    from idselect.hooks.selfcheck import UnverifiedTransformersError

    callspec = getattr(item, "callspec", None)
    family = callspec.params.get("family") if callspec is not None else None
    refusal = _refusal_in_chain(call.excinfo.value, UnverifiedTransformersError)
    if refusal is not None:
        why = str(refusal).splitlines()[0]  # "idselect.patch: transformers X is outside ..."
    elif family in REFUSED:
        why = f"idselect.patch refuses this release for {family}"
    else:
        return
    report.outcome = "skipped"
    report.longrepr = (str(item.path), item.location[1] or 0, f"REFUSED ({why})")


def _refusal_in_chain(error, kind):
    """``error`` or an exception it was raised from or during (``pytest.warns`` reports an error
    raised in its block as "DID NOT WARN", chained to it) that is a ``kind``; None if none is."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None

