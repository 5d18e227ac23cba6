"""The demo's picture says what it shows: picks made after every remaining score was suppressed
to zero (the tie rule then picks by index) are found, counted and drawn apart."""
import pytest
import torch

import idselect
from idselect.testing.cases import case
from idselect.tools import demo


def test_zero_score_picks_by_hand():
    # Identical features: every weight is 1, so the first pick (the best score) suppresses every
    # other score to 0 and the rest are picked at zero score, smallest index first.
    feats = torch.ones(5, 3)
    scores = torch.tensor([0.5, 1.0, 0.2, 0.7, 0.0])
    picks = idselect.select(feats, scores, 4)
    assert picks.tolist() == [1, 0, 2, 3]
    assert demo.zero_score_picks(feats, scores, picks, 20.0).tolist() == [0, 2, 3]
    # Orthogonal features: nothing suppresses anything (w = exp(-gamma) ~ 0 at gamma 20); only a
    # token whose own score is 0 is picked at zero score.
    feats = torch.eye(5)
    picks = idselect.select(feats, scores, 5)
    assert picks.tolist() == [1, 3, 0, 2, 4]
    assert demo.zero_score_picks(feats, scores, picks, 20.0).tolist() == [4]


@pytest.mark.parametrize("gamma", [0.0, 2.0, 20.0, 80.0])
def test_the_recorded_selection_is_the_hooks_and_the_zero_picks_agree_with_their_count(gamma):
    model, kwargs, _ = case("llava", [(3, 1, 4)])
    recorder = demo.PickRecorder()
    with torch.no_grad(), idselect.patch(model, keep=12, gamma=gamma, selection=recorder) as handle:
        model(**kwargs)
    features, scores, lengths, picks = recorder.last
    kept = handle.last_stats["kept_indices"][0]
    assert torch.equal(picks[0].sort().values, kept)  # the picks are the kept tokens (CLIP: all candidates)
    zero = demo.zero_score_picks(features[0, :int(lengths[0])], scores[0, :int(lengths[0])], picks[0], gamma)
    assert zero.numel() == handle.last_stats["zero_score_picks"][0]  # the hooks' own count, computed apart
    # Scores never rise: the zero-score picks are the last ones, each the smallest remaining index.
    if zero.numel():
        assert picks[0, -zero.numel():].tolist() == zero.tolist()
        remaining = sorted(set(range(int(lengths[0]))) - set(picks[0, :-zero.numel()].tolist()))
        assert zero.tolist() == remaining[:zero.numel()]
    if gamma == 0.0:  # every weight 1: only the first pick is made by score
        assert zero.numel() == 11


def test_the_picture_draws_zero_score_picks_apart_with_a_legend(tmp_path, monkeypatch):
    import matplotlib.axes

    legends = []
    real_legend = matplotlib.axes.Axes.legend
    monkeypatch.setattr(matplotlib.axes.Axes, "legend",
                        lambda self, *a, **kw: legends.append([h.get_label() for h in kw["handles"]])
                        or real_legend(self, *a, **kw))
    image = demo.synthetic_image(56)
    kept = torch.tensor([0, 1, 2, 9, 10])
    demo.save_overlay(image, kept, 4, str(tmp_path / "a.png"), "t", zero=torch.tensor([1, 2]))
    assert legends == [["picked by score (3)", "picked at zero score (rule: smallest index) (2)"]]
    demo.save_overlay(image, kept, 4, str(tmp_path / "b.png"), "t", zero=torch.tensor([], dtype=torch.long))
    assert len(legends) == 1  # nothing to tell apart: no legend
    assert (tmp_path / "a.png").stat().st_size > 5_000


@pytest.mark.slow
def test_the_demo_prints_how_many_picks_were_made_at_zero_score(tmp_path, capsys, monkeypatch):
    drawn = {}
    real = demo.save_overlay
    monkeypatch.setattr(demo, "save_overlay", lambda *a, **kw: drawn.update(kw) or real(*a, **kw))
    assert demo.main(["--repeats", "1", "--max-new-tokens", "1", "--keep", "64", "--out", str(tmp_path / "d.png")]) == 0
    printed = capsys.readouterr().out
    line = next(l for l in printed.splitlines() if l.startswith("picks made after every remaining score"))
    count = int(line.split(": ")[1].split(" of ")[0])
    assert line.split(" of ")[1].startswith("64") and count == drawn["zero"].numel()
    assert (count > 0) == ("drawn apart in the picture" in line)
