"""The transformers releases the hooks support: the declared range, the self-check that runs
outside it, and refusals of releases the hooks cannot read (docs/hooks.md, "Supported
transformers versions")."""
import functools
import inspect
import warnings

import pytest
import torch
import transformers

import idselect
import idselect.hooks
from idselect.hooks import compat, selfcheck
from idselect.hooks.selfcheck import UnverifiedTransformersError
from idselect.testing import battery
from idselect.testing.cases import CACHE_KW, MODELS, case

FUTURE = "5.99.0"  # a release that did not exist when idselect was verified
LOW, HIGH = compat.SUPPORTED_TRANSFORMERS


@pytest.fixture
def fresh_self_check(monkeypatch):
    """A process that has run no self-check yet."""
    monkeypatch.setattr(selfcheck, "_results", {})
    monkeypatch.setattr(selfcheck, "_warned", set())
    monkeypatch.delenv(selfcheck.SKIP_ENV, raising=False)


def report_version(monkeypatch, version):
    monkeypatch.setattr(compat, "transformers_version", lambda: version)


def test_the_installed_release_is_one_of_the_verified_range():
    """CI runs the suite on the pinned release and the hooks tests on the lowest one."""
    assert compat.in_supported_range(transformers.__version__), (transformers.__version__, compat.SUPPORTED_TRANSFORMERS)


@pytest.mark.parametrize("family", list(MODELS))
def test_the_self_check_battery_passes_on_the_installed_release(family):
    failures = battery.run(family)
    if compat.broken_expansion(family, transformers.__version__, several_items=True):  # refused clearly, the rest exact
        assert len(failures) == 1 and failures[0].startswith("beam search: NotImplementedError"), failures
    else:
        assert failures == []


EXPANSION_PROMPTS = {"one image": [(3, 1, 4)], "two images": [(3, 2, 4)], "no image": [(3, 0, 4)],
                     "batch": [(3, 1, 4), (5, 2, 2)]}  # (every family but InternVL has a video in each row)


@pytest.mark.parametrize("prompts", list(EXPANSION_PROMPTS))
@pytest.mark.parametrize("family", list(MODELS))
def test_the_expansion_tables_match_the_installed_release(family, prompts):
    """compat's expansion tables hold for this release: with beams, the unpatched model gives a
    copy of a prompt other LLM inputs than the prompt alone exactly where the hooks refuse."""
    model, kwargs, _ = case(family, EXPANSION_PROMPTS[prompts])
    seen = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kw: seen.append(kw["inputs_embeds"]), with_kwargs=True)
    try:
        with torch.no_grad():
            model(**kwargs)
            refused = None
            with idselect.patch(model, keep=1.0):  # keep everything: only the refusal is under test
                try:
                    model.generate(**kwargs, max_new_tokens=1, num_beams=2, num_return_sequences=2)
                except NotImplementedError as error:
                    refused = error
            if refused is not None:
                model.generate(**kwargs, max_new_tokens=1, num_beams=2, num_return_sequences=2)  # unpatched
    finally:
        hook.remove()
    alone, copies = seen[0], seen[-1]
    rows = alone.shape[0]
    # Batch-size-dependent float rounding in the towers aside, each copy sees what its prompt sees.
    copies_match = all(torch.allclose(alone[r], copies[2 * r + j], atol=1e-4) for r in range(rows) for j in range(2))
    assert copies_match == (refused is None), (copies_match, refused)


def test_version_parsing_and_range():
    assert compat.version_tuple("5.24.0") == (5, 24, 0)
    assert compat.version_tuple("5.25.0.dev0") == (5, 25, 0)
    assert compat.version_tuple("5.17") == (5, 17, 0)
    assert compat.version_tuple("5.20.2+local") == (5, 20, 2)
    assert compat.in_supported_range(LOW) and compat.in_supported_range(HIGH)
    assert not compat.in_supported_range("5.16.1") and not compat.in_supported_range("5.25.0.dev0")
    # Pre-releases and development builds of a release in the range are not that release.
    assert not compat.in_supported_range("5.24.0.dev0") and not compat.in_supported_range("5.20.0rc1")
    assert compat.in_supported_range("5.24.0+cpu") and compat.in_supported_range("5.20.2.post1")
    assert not compat.in_supported_range("6.0.0") and not compat.in_supported_range("4.57.6")
    assert (LOW, HIGH) == ("5.17.0", "5.25.0")  # widened by hand once a release passes the hooks tests
    assert compat.in_supported_range("5.25.0") and not compat.in_supported_range("5.26.0")


def test_inside_the_range_no_self_check_runs(monkeypatch, fresh_self_check):
    report_version(monkeypatch, HIGH)  # whatever is installed (.ci/newest-transformers.sh runs this on newer ones)
    monkeypatch.setattr(battery, "run", lambda family: pytest.fail("the self-check ran inside the verified range"))
    model, _, _ = case("llava", [(3, 1, 4)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        idselect.patch(model, keep=5).remove()


@functools.lru_cache(maxsize=None)
def _first_family_the_release_serves():
    # Where the release itself mis-expands two-image beams for a family (5.17's LLaVA), or on a
    # release outside the range that serves a family badly (5.16's LLaVA), the battery rightly fails
    # for it. Inside the range compat's tables say which; outside they say nothing, so ask the battery.
    version = transformers.__version__
    likely = sorted(MODELS, key=lambda f: compat.broken_expansion(f, version, several_items=True) is not None)
    return next((f for f in likely if not battery.run(f)), None)


def compatible_family():
    """A family whose battery passes on the installed release (skips the test where none does)."""
    family = _first_family_the_release_serves()
    if family is None:
        pytest.skip(f"the self-check's battery fails on transformers {transformers.__version__} for every family")
    return family


@pytest.mark.parametrize("version", [FUTURE, "5.16.1"], ids=["newer", "older"])
def test_a_compatible_release_outside_the_range_passes_the_self_check_and_warns_once(monkeypatch, fresh_self_check, version):
    """The installed release reported as one outside the range: the self-check runs the battery
    for real on a family this release serves fully, passes, warns once, and leaves the caller's
    random numbers alone. (Where the release itself mis-expands two-image beams for a family,
    the battery rightly fails for it: 5.17's LLaVA does.)"""
    family = compatible_family()
    report_version(monkeypatch, version)
    model, kwargs, _ = case(family, [(3, 1, 4)])
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    with pytest.warns(UserWarning, match=rf"transformers {version} is outside the verified range \({LOW} to {HIGH}\); "
                                          rf"the self-check for {family} passed"):
        handle = idselect.patch(model, keep=5)
    handle.remove()
    assert torch.equal(torch.rand(4), expected)
    ran = []
    monkeypatch.setattr(battery, "run", lambda family: ran.append(family) or [])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process and family: no second check, no second warning
        with torch.no_grad(), idselect.patch(model, keep=5) as handle:
            model.generate(**kwargs, max_new_tokens=2)
    assert ran == [] and handle.last_stats["visual_tokens_after"] == 5 * len(handle.last_stats["kept_indices"])


def test_the_self_check_refuses_the_lowest_release_reported_as_unknown_where_it_mis_expands(monkeypatch, fresh_self_check):
    """On a release that gives beam copies the wrong images (5.17, 5.18), the battery's two-image
    beam search differs from its oracle: reported as an unknown release, it is refused."""
    family = next((f for f in ("llava", "qwen3_5") if compat.broken_expansion(f, transformers.__version__, True)), None)
    if family is None:
        pytest.skip(f"transformers {transformers.__version__} expands media for beams correctly")
    report_version(monkeypatch, FUTURE)
    model, _, _ = case(family, [(3, 1, 4)])
    with pytest.raises(UnverifiedTransformersError, match="beam search: "):
        idselect.patch(model, keep=5)


def other_cache_name(model, family):
    """The hooks as they were before 5.24: reading the cache under the name the release no
    longer uses (5.24 renamed past_key_values to cache), the silent break of that release."""
    return "past_key_values" if CACHE_KW == "cache" else "cache"


def test_the_self_check_refuses_a_release_the_hooks_misread(monkeypatch, fresh_self_check):
    report_version(monkeypatch, FUTURE)
    monkeypatch.setattr(idselect.hooks, "_cache_argument", other_cache_name)
    model, _, _ = case("qwen2_5_vl", [(3, 1, 4)])
    with pytest.raises(UnverifiedTransformersError) as refused:
        idselect.patch(model, keep=5)
    message = str(refused.value)
    assert f"transformers {FUTURE}" in message and f"({LOW} to {HIGH})" in message
    assert any(f"\n  {name}: " in message for name in battery.PATTERNS)  # each failing pattern, with what differed
    assert f"pip install 'transformers>={LOW},<={HIGH}'" in message and selfcheck.SKIP_ENV in message
    assert not any(name in vars(model.model) for name in ("forward", "_idselect_handle"))  # nothing was patched
    with pytest.raises(UnverifiedTransformersError):  # the result is kept: refused again, without a new check
        monkeypatch.setattr(battery, "run", lambda family: pytest.fail("checked twice"))
        idselect.patch(model, keep=5)


def test_a_wrong_result_is_kept_and_an_exception_alone_is_not(monkeypatch, fresh_self_check):
    """Only a verdict the release is responsible for is kept for the process: a pattern that
    raised (here: an error from outside transformers) is refused, says it is not kept, and the
    next patch() checks again and passes; a pattern that gave wrong tokens is kept."""
    family = compatible_family()
    report_version(monkeypatch, FUTURE)
    model, _, _ = case(family, [(3, 1, 4)])
    real = battery.PATTERNS["static cache"]

    def environment_error(family, model):
        raise OSError("simulated: the process ran out of file handles")

    monkeypatch.setitem(battery.PATTERNS, "static cache", environment_error)
    with pytest.raises(UnverifiedTransformersError) as refused:
        idselect.patch(model, keep=5)
    message = str(refused.value)
    assert "static cache: OSError: simulated" in message and "this result is not kept" in message
    assert "do not reproduce exactly" not in message
    assert (FUTURE, family) not in selfcheck._results
    monkeypatch.setitem(battery.PATTERNS, "static cache", real)  # the process recovered
    with pytest.warns(UserWarning, match=f"the self-check for {family} passed"):
        idselect.patch(model, keep=5).remove()
    assert selfcheck._results[(FUTURE, family)] == []

    monkeypatch.setattr(selfcheck, "_results", {})
    monkeypatch.setitem(battery.PATTERNS, "static cache", lambda family, model: (torch.tensor([1, 2]), torch.tensor([1, 3])))
    with pytest.raises(UnverifiedTransformersError, match=r"static cache: patched \[1, 2\] != oracle \[1, 3\]"):
        idselect.patch(model, keep=5)
    assert [f.mismatch for f in selfcheck._results[(FUTURE, family)]] == [True]  # kept


class _DefaultDevice:
    """``torch.set_default_device`` for the block, restored after."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        torch.set_default_device(self.device)

    def __exit__(self, *exc):
        torch.set_default_device(None)


class _DefaultDtype:
    def __init__(self, dtype):
        self.dtype = dtype

    def __enter__(self):
        self.saved = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.saved)


AMBIENT = {
    "with torch.device('meta')": lambda: torch.device("meta"),
    "set_default_device('meta')": lambda: _DefaultDevice("meta"),
    "set_default_dtype(float64)": lambda: _DefaultDtype(torch.float64),
    "autocast(cpu, bfloat16)": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
}


@pytest.mark.parametrize("ambient", list(AMBIENT))
def test_the_first_patch_under_a_device_or_dtype_context_is_not_refused(monkeypatch, fresh_self_check, ambient):
    """The first patch() of a family on a release outside the range, made under the caller's
    device / dtype context (transformers' own tests and some loaders build under
    ``torch.device("meta")``): the battery still builds its models on the CPU in float32, so the
    release passes, and nothing wrong is kept for later patches; the context is left as it was."""
    family = compatible_family()
    report_version(monkeypatch, FUTURE)
    model, kwargs, _ = case(family, [(3, 1, 4)])  # the caller's model: real, built before
    dtype = torch.get_default_dtype()
    with pytest.warns(UserWarning, match=f"the self-check for {family} passed"):
        with AMBIENT[ambient]():
            handle = idselect.patch(model, keep=5)
            inside = (torch.empty(1).device.type, torch.get_default_dtype())
    handle.remove()
    expected = {"with torch.device('meta')": ("meta", dtype), "set_default_device('meta')": ("meta", dtype),
                "set_default_dtype(float64)": ("cpu", torch.float64), "autocast(cpu, bfloat16)": ("cpu", dtype)}
    assert inside == expected[ambient]  # the caller's context, back after the check
    assert torch.get_default_dtype() == dtype and torch.empty(1).device.type == "cpu"
    assert selfcheck._results == {(FUTURE, family): []}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # kept as passed: no second check, no refusal
        with torch.no_grad(), idselect.patch(model, keep=5) as handle:
            model.generate(**kwargs, max_new_tokens=2)
    assert handle.last_stats["visual_tokens_after"] == 5 * len(handle.last_stats["kept_indices"])


def test_the_sampling_pattern_depends_on_the_seed():
    """The battery's sampling pattern compares seeded draws: on its tiny model another seed
    draws other tokens, so a patched call that sampled differently would be caught."""
    model, kwargs, _ = case("llava", battery.ONE_ROW)
    draws = []
    for seed in (battery.SAMPLING_SEED, battery.SAMPLING_SEED + 1):
        torch.manual_seed(seed)
        with torch.no_grad():
            draws.append(model.generate(**kwargs, max_new_tokens=battery.NEW, do_sample=True, top_k=0)[:, -battery.NEW:])
    assert not torch.equal(draws[0], draws[1]), draws


def test_the_skip_variable_skips_the_self_check_with_a_warning(monkeypatch, fresh_self_check):
    report_version(monkeypatch, FUTURE)
    monkeypatch.setenv(selfcheck.SKIP_ENV, "1")
    monkeypatch.setattr(battery, "run", lambda family: pytest.fail("the self-check ran although skipped"))
    model, _, _ = case("llava", [(3, 1, 4)])
    with pytest.warns(UserWarning, match=f"{selfcheck.SKIP_ENV}=1 skips the self-check: the hooks run unverified"):
        idselect.patch(model, keep=5).remove()


def renamed(fn, new_name):
    """``fn`` as the next upstream rename would leave it: its signature takes the cache as
    ``new_name`` only. (Calls inside the model still pass the current name, which a real
    release would have renamed too: they are let through.)"""
    sig = inspect.signature(fn)
    params = [p.replace(name=new_name) if p.name == CACHE_KW else p for p in sig.parameters.values()]

    def forward(*args, **kwargs):
        if new_name in kwargs:
            kwargs[CACHE_KW] = kwargs.pop(new_name)
        return fn(*args, **kwargs)

    forward.__signature__ = sig.replace(parameters=params)
    return forward


@pytest.mark.parametrize("family", ["llava", "qwen3_vl"])
def test_the_next_cache_rename_is_refused_at_patch(monkeypatch, fresh_self_check, family):
    report_version(monkeypatch, FUTURE)
    model, kwargs, _ = case(family, [(3, 1, 4)])
    for module in (model, model.model, model.model.language_model):
        module.forward = renamed(module.forward, "kv_cache")
    # The simulated release works for the unpatched model: a cache passed as kv_cache= is used.
    with torch.no_grad():
        first = model(**kwargs, use_cache=True)
        prompt_length = first[CACHE_KW].get_seq_length()
        step = model(input_ids=first.logits[:, -1:].argmax(-1), kv_cache=first[CACHE_KW], use_cache=True)
    assert step[CACHE_KW].get_seq_length() == prompt_length + 1
    with pytest.raises(TypeError) as refused:
        idselect.patch(model, keep=5)
    message = str(refused.value)
    assert "cannot tell how transformers" in message and FUTURE in message and f"{LOW} to {HIGH}" in message
    assert "_idselect_handle" not in vars(model.model)  # nothing was patched
