"""The hooks' engine on plain tensors (no model, no transformers): placing media, budgets,
selection groups, compaction, positions, continuation. Expected values are written out by
hand from the rules in docs/hooks.md."""
import numpy as np
import pytest
import torch

from idselect import reference
from idselect.hooks import engine
from idselect.hooks.compaction import CacheState, chunk_positions, compact
from idselect.hooks.engine import Media, Options, PlacedMedium
from idselect.hooks.llm_call import renumbers_text_row


def options(keep=2, selection="id", gamma=20.0):
    return Options(keep=keep, gamma=gamma, importance="relevance", alpha=0.5, relevance_layer=0,
                   relevance_rope=False, selection=selection)


# -- budgets -----------------------------------------------------------------------------------
@pytest.mark.parametrize("keep, tokens, budget", [(2, 5, 2), (8, 5, 5), (0.5, 5, 2), (0.01, 5, 1), (1.0, 5, 5)])
def test_budget(keep, tokens, budget):
    assert options(keep).budget(tokens) == budget


# -- placing -----------------------------------------------------------------------------------
def test_place_media_rows_and_columns_in_placeholder_order():
    mask = torch.tensor([[0, 1, 1, 0, 1, 1, 1], [1, 1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    media = {"image": [Media("image", 2), Media("image", 3), Media("image", 2)]}
    placed = engine.place_media({"image": mask}, media)
    assert [p.row for p in placed] == [0, 0, 1]
    assert [p.columns.tolist() for p in placed] == [[1, 2], [4, 5, 6], [0, 1]]


def test_place_media_refuses_a_medium_across_rows():
    mask = torch.tensor([[0, 0, 1], [1, 0, 0]], dtype=torch.bool)
    with pytest.raises(RuntimeError, match="must lie in one row"):
        engine.place_media({"image": mask}, {"image": [Media("image", 2)]})


def test_a_modality_without_media_is_text_here():
    """Video placeholder ids in a prompt that passes only images: the unpatched model reads
    them as text, and so does placing (no 'features describe 0' error)."""
    masks = {"image": torch.tensor([[0, 1, 1, 0]], dtype=torch.bool), "video": torch.tensor([[1, 0, 0, 1]], dtype=torch.bool)}
    placed = engine.place_media(masks, {"image": [Media("image", 2)]})
    assert [(p.media.modality, p.columns.tolist()) for p in placed] == [("image", [1, 2])]


def test_expand_for_rows_repeats_each_prompts_media_for_its_copies():
    a, b, c = Media("image", 2), Media("image", 3), Media("image", 4)
    # two prompts (a + b: 5 tokens, c: 4 tokens), each repeated twice (beams)
    assert engine.expand_for_rows([a, b, c], [5, 5, 4, 4], "image") == [a, b, a, b, c, c]
    assert engine.expand_for_rows([a, b], [2, 3], "image") == [a, b]  # nothing repeated
    with pytest.raises(RuntimeError, match="placeholder tokens but"):
        engine.expand_for_rows([a], [3], "image")
    with pytest.raises(RuntimeError, match="do not match"):
        engine.expand_for_rows([a, b], [5, 4, 5, 6], "image")


def test_join_adjacent_tiles_become_one_medium_with_one_budget():
    mask = torch.tensor([[1, 1, 1, 1, 0, 1, 1]], dtype=torch.bool)
    sal = [torch.tensor([0.1, 0.2]), torch.tensor([0.3, 0.4]), torch.tensor([0.5, 0.6])]
    media = {"image": [Media("image", 2, sal[0]), Media("image", 2, sal[1]), Media("image", 2, sal[2])]}
    placed = engine.place_media({"image": mask}, media, merge_adjacent=("image",))
    assert [(p.media.num_tokens, p.columns.tolist()) for p in placed] == [(4, [0, 1, 2, 3]), (2, [5, 6])]
    assert torch.cat(placed[0].media.saliencies()).tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert len(engine.place_media({"image": mask}, media)) == 3  # not merged unless asked


def test_plan_sets_budgets_and_what_is_pruned():
    placed = [PlacedMedium(Media("image", 4), 0, np.arange(4)), PlacedMedium(Media("image", 2), 0, np.arange(4, 6))]
    planned = engine.plan(placed, options(keep=2))
    assert [p.budget for p in planned] == [2, 2]
    assert [p.pruned for p in planned] == [True, False]


# -- selecting ---------------------------------------------------------------------------------
def _planned(sizes, budget, candidates=None, width=None):
    """Media of the given sizes side by side in row 0 of a sequence of ``width`` columns."""
    start, out = 1, []
    for i, n in enumerate(sizes):
        cand = None if candidates is None else candidates[i]
        out.append(PlacedMedium(Media("image", n, None, cand), 0, np.arange(start, start + n), budget))
        start += n
    return out, (width or start + 1)


def _select(planned, scores, embeds, opts, real=None):
    """engine.select over the candidate table of ``planned``, with per-medium ``scores`` (over
    each medium's candidates, in planned order) laid into the table as the hooks' importance
    step does."""
    B, L = embeds.shape[:2]
    real = np.ones((B, L), dtype=bool) if real is None else real
    for p in planned:
        usable = p.media.candidate_mask() & real[p.row, p.columns]
        p.candidates = np.flatnonzero(usable)
    table = engine.candidate_table(planned, real, embeds.device, with_saliency=False)
    table_scores = torch.zeros(table.rows.shape)
    for g, i in enumerate(table.order):
        table_scores[g, : scores[i].numel()] = scores[i][: table.rows.shape[1]]
    return engine.select(table, table_scores, embeds, opts)


def test_select_keeps_budget_per_medium_and_every_other_column():
    torch.manual_seed(0)
    planned, L = _planned([5, 4], budget=2)
    embeds = torch.randn(1, L, 8)
    scores = [torch.rand(5), torch.rand(4)]
    sel = _select(planned, scores, embeds, options(keep=2))
    for p, s, kept in zip(planned, scores, sel.kept_indices()):
        want = reference.select(embeds[0, p.columns][None], s[None], 2, 20.0)[0].sort().values
        assert kept.tolist() == want.tolist()
    keep = sel.keep_columns[0]
    assert keep[0] and keep[L - 1]  # text columns stay
    assert int(keep[1:6].sum()) == 2 and int(keep[6:10].sum()) == 2
    assert sel.table.row_lengths.tolist() == [L - 5]  # known on the host, before any read


def test_select_topk_and_a_callable():
    planned, L = _planned([4], budget=2)
    embeds = torch.randn(1, L, 4)
    scores = [torch.tensor([0.1, 0.9, 0.5, 0.9])]
    assert _select(planned, scores, embeds, options(selection="topk")).kept_indices()[0].tolist() == [1, 3]
    calls = []

    def last_two(features, s, k, gamma, lengths):
        calls.append((tuple(features.shape), k, gamma, lengths.tolist()))
        return torch.stack([lengths - 1 - i for i in range(k)], dim=1)

    assert _select(planned, scores, embeds, options(selection=last_two)).kept_indices()[0].tolist() == [2, 3]
    assert calls == [((1, 4, 4), 2, 20.0, [4])]


def test_select_groups_media_by_effective_budget():
    # 3 candidates of 5 (two are never kept, e.g. newlines): it keeps all 3 without lowering the other's budget
    cand = np.array([True, False, True, False, True])
    planned, L = _planned([5, 6], budget=4, candidates=[cand, None])
    seen = []

    def first_k(features, s, k, gamma, lengths):
        seen.append((k, lengths.tolist()))
        return torch.arange(k).expand(features.shape[0], k).contiguous()

    sel = _select(planned, [torch.rand(3), torch.rand(6)], torch.randn(1, L, 4), options(keep=4, selection=first_k))
    assert sorted(seen) == [(3, [3]), (4, [6])]
    assert sel.kept_indices()[0].tolist() == [0, 2, 4]  # indices within the medium, candidates only
    assert not bool(sel.keep_columns[0, 2]) and not bool(sel.keep_columns[0, 4])


def test_one_selection_call_for_many_media_of_one_budget():
    """Media of different sizes and rows with one budget: one call over the padded table."""
    torch.manual_seed(1)
    B, L = 3, 20
    planned = [PlacedMedium(Media("image", n), row, np.arange(start, start + n), 3)
               for row, start, n in [(0, 1, 6), (1, 2, 9), (2, 0, 4), (0, 10, 5)]]
    embeds = torch.randn(B, L, 8)
    scores = [torch.rand(p.media.num_tokens) for p in planned]
    calls = []

    def spy(features, s, k, gamma, lengths):
        calls.append(lengths.tolist())
        return reference.select(features, s, k, gamma, lengths)

    sel = _select(planned, scores, embeds, options(keep=3, selection=spy))
    assert len(calls) == 1 and sorted(calls[0]) == [4, 5, 6, 9]
    for p, s, kept in zip(planned, scores, sel.kept_indices()):  # each as if selected alone
        want = reference.select(embeds[p.row, p.columns][None], s[None], 3, 20.0)[0].sort().values
        assert kept.tolist() == want.tolist()
    assert sel.table.row_lengths.tolist() == [L - 11 + 6, L - 9 + 3, L - 4 + 3]


def test_masked_tokens_are_never_candidates():
    """A row whose visible tokens are image tokens, the rest masked (transformers' LLaVA-NeXT
    tests build such masks): only visible tokens can be kept, and the row keeps what it shows."""
    planned, L = _planned([6], budget=2)
    real = np.zeros((1, L), dtype=bool)
    real[0, 3:6] = True  # columns 3..5: the medium's tokens 2..4
    embeds = torch.randn(1, L, 4)
    sel = _select(planned, [torch.tensor([0.9, 0.8, 0.1, 0.2, 0.3])[:3]], embeds, options(keep=2), real=real)
    kept = sel.kept_indices()[0].tolist()
    assert len(kept) == 2 and set(kept) <= {2, 3, 4}
    assert sel.table.row_lengths.tolist() == [2]
    one, _ = _planned([6], budget=4)
    sel = _select(one, [torch.rand(3)], embeds, options(keep=4), real=real)
    assert sel.kept_indices()[0].tolist() == [2, 3, 4]  # fewer visible candidates than the budget: all of them


def test_a_callables_result_is_checked():
    planned, L = _planned([4], budget=2)
    args = ([torch.rand(4)], torch.randn(1, L, 4))
    with pytest.raises(TypeError, match="int64 tensor of shape"):
        _select(planned, *args, options(selection=lambda f, s, k, g, n: torch.zeros(1, k)))
    with pytest.raises(ValueError, match="outside"):
        _select(planned, *args, options(selection=lambda f, s, k, g, n: torch.full((1, k), 4)))


def test_zero_score_picks_counts_picks_after_every_score_is_suppressed():
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # identical tokens: the first pick zeroes the rest
    scores = torch.tensor([1.0, 0.5, 0.2])
    picks = reference.select(feats[None], scores[None], 3, 20.0)[0]
    assert engine.zero_score_picks([(feats[None], scores[None], picks[None])], 20.0) == [2]


def test_zero_score_replay_on_the_picks_equals_the_full_replay():
    """The batched replay (k x k weights of the picks) counts as the reference's own steps do."""
    torch.manual_seed(3)
    feats = torch.randn(4, 30, 6)
    feats[:, 10:] = feats[:, :1] + 0.01 * torch.randn(4, 20, 6)  # near-duplicates: many zero scores
    scores = torch.rand(4, 30)
    k = 12
    picks = reference.select(feats, scores, k, 20.0)
    want = []
    for b in range(4):
        s = scores[b]
        zero = 0
        for t, (i, before) in enumerate(reference.greedy_steps(feats[b], scores[b], k, 20.0)):
            zero += int(before[i] <= 0)
        want.append(zero)
    assert engine.zero_score_picks([(feats, scores, picks)], 20.0) == want
    assert max(want) > 0


# -- compaction and positions --------------------------------------------------------------------
def test_compact_drops_columns_left_pads_and_renumbers_1d_positions():
    chunk = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])  # row 0 left-padded
    keep = torch.tensor([[1, 1, 0, 1, 0, 1], [1, 0, 0, 1, 1, 1]], dtype=torch.bool)
    positions = torch.tensor([[0, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5]])
    c = compact(chunk, keep, positions, None, 0, None, mask_known=True, renumber_text_row=True)
    assert c.width == 4
    assert c.keep.tolist() == [[False, True, False, True, False, True], [True, False, False, True, True, True]]
    assert c.attention_mask.tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]]
    assert c.positions.tolist() == [[0, 0, 1, 2], [0, 1, 2, 3]]  # minus the real tokens removed before
    assert c.place(torch.arange(12).view(2, 6)).tolist() == [[0, 1, 3, 5], [6, 9, 10, 11]]
    assert c.state.length == 4 and c.state.original_length == 6 and c.state.position_rows == 0
    assert c.state.next_positions.tolist() == [[3, 4]]


def test_compact_keeps_original_mrope_rows_and_renumbers_the_text_row():
    chunk = torch.ones(1, 5, dtype=torch.long)
    keep = torch.tensor([[1, 0, 1, 0, 1]], dtype=torch.bool)
    rows = torch.tensor([[0, 1, 2, 3, 4], [0, 1, 1, 2, 5], [0, 1, 2, 1, 5], [0, 1, 2, 2, 5]])[:, None]  # [4, 1, 5]
    c = compact(chunk, keep, rows, None, 0, None, mask_known=False, renumber_text_row=True)
    assert c.positions[:, 0].tolist() == [[0, 1, 2], [0, 1, 5], [0, 2, 5], [0, 2, 5]]
    assert c.attention_mask is None  # no padding and none asked for
    assert c.state.position_rows == 4 and c.state.next_positions[:, 0].tolist() == [3, 6, 6, 6]
    three = compact(chunk, keep, rows[1:], None, 0, None, mask_known=False, renumber_text_row=False)
    assert three.positions[:, 0].tolist() == [[0, 1, 5], [0, 2, 5], [0, 2, 5]]  # every row original


def test_continuation_positions_follow_the_cache_not_the_caller():
    state = CacheState(length=4, original_length=6, mask=torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]),
                       next_positions=torch.tensor([[3, 4]]), position_rows=0)
    caller = torch.tensor([[6, 7], [6, 7]])  # what the caller computed for the unpruned sequence
    chunk = torch.ones(2, 2, dtype=torch.long)
    c = compact(chunk, None, caller, state, 0, None, mask_known=False, renumber_text_row=True)
    assert c.positions.tolist() == [[3, 4], [4, 5]]
    assert c.attention_mask.tolist() == [[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]
    assert c.past == 4 and c.state.length == 6 and c.state.original_length == 8
    assert c.state.next_positions.tolist() == [[5, 6]]


def test_padding_in_a_decode_step_advances_no_position():
    state = CacheState(length=2, original_length=2, mask=None, next_positions=torch.tensor([[2]]), position_rows=0)
    assert chunk_positions(None, state, torch.tensor([[False, True, True]]), 0).tolist() == [[1, 2, 3]]
    assert chunk_positions(None, None, torch.ones(1, 3, dtype=torch.bool), 5).tolist() == [[5, 6, 7]]


def test_compact_on_a_cache_without_state_uses_the_callers_head_mask():
    # a static cache or a cache filled by the unpatched model: 3 columns already there
    head = torch.tensor([[0, 1, 1]])
    chunk = torch.ones(1, 3, dtype=torch.long)
    keep = torch.tensor([[1, 0, 1]], dtype=torch.bool)
    c = compact(chunk, keep, torch.tensor([[2, 3, 4]]), None, 3, head, mask_known=True, renumber_text_row=True)
    assert c.past == 3 and c.width == 2
    assert c.attention_mask.tolist() == [[0, 1, 1, 1, 1]]
    assert c.positions.tolist() == [[2, 3]]
    assert c.state.length == 5 and c.state.original_length == 6


def test_padding_left_by_compaction_gets_a_mask_though_none_was_given():
    chunk = torch.ones(2, 4, dtype=torch.long)
    keep = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 1]], dtype=torch.bool)  # 3 and 2 columns stay
    c = compact(chunk, keep, None, None, 0, None, mask_known=False, renumber_text_row=True)
    assert c.attention_mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    assert c.positions.tolist() == [[0, 1, 2], [0, 0, 1]]
    same = compact(chunk, torch.ones(2, 4, dtype=torch.bool), None, None, 0, None, mask_known=False,
                   renumber_text_row=True)
    assert same.attention_mask is None  # nothing ragged: no mask needed


def test_which_position_rows_are_renumbered():
    assert renumbers_text_row(None) and renumbers_text_row(torch.zeros(2, 5, dtype=torch.long))
    assert renumbers_text_row(torch.zeros(4, 2, 5, dtype=torch.long))  # text row + t, h, w
    assert not renumbers_text_row(torch.zeros(3, 2, 5, dtype=torch.long))  # t, h, w only


def test_two_modalities_are_placed_in_the_order_of_their_masks():
    masks = {"image": torch.tensor([[0, 0, 0, 1, 1]], dtype=torch.bool),
             "video": torch.tensor([[1, 1, 0, 0, 0]], dtype=torch.bool)}
    placed = engine.place_media(masks, {"video": [Media("video", 2)], "image": [Media("image", 2)]})
    assert [(p.media.modality, p.columns.tolist()) for p in placed] == [("image", [3, 4]), ("video", [0, 1])]


def test_kept_indices_follow_the_pruned_media_in_placeholder_order():
    """Media sorted into the table by budget and size come back in placeholder order; a medium
    kept whole is not listed, one with no unmasked candidate is listed empty."""
    planned = [PlacedMedium(Media("image", 6), 0, np.arange(1, 7), 4),
               PlacedMedium(Media("image", 3), 0, np.arange(8, 11), 4),  # kept whole: not pruned
               PlacedMedium(Media("image", 5), 0, np.arange(12, 17), 2),
               PlacedMedium(Media("image", 4), 0, np.arange(18, 22), 2)]
    real = np.ones((1, 23), dtype=bool)
    real[0, 18:22] = False  # the last image is masked whole
    embeds = torch.randn(1, 23, 4)
    sel = _select(planned, [torch.rand(6), None, torch.rand(5), torch.rand(0)], embeds,
                  options(keep=4, selection=lambda f, s, k, g, n: torch.arange(k).expand(f.shape[0], k).contiguous()),
                  real=real)
    assert [k.tolist() for k in sel.kept_indices()] == [[0, 1, 2, 3], [0, 1], []]
    assert sel.table.row_lengths.tolist() == [23 - 6 + 4 - 5 + 2 - 4]
