"""digitrec.viz.digits: a network's confidence is never rounded to certainty, on a bar or in a sentence."""

from __future__ import annotations

import torch

from digitrec.viz.digits import percent_sure, probabilities_figure


def test_confidence_is_whole_percents_but_never_rounds_up_to_certain():
    assert percent_sure(0.929) == "93%" and percent_sure(0.004) == "0%" and percent_sure(0.5) == "50%"
    assert percent_sure(0.994) == "99%"
    assert percent_sure(0.995) == "99.5%"  # whole percents would say 100 %: the card beside it says 99.5 %
    assert percent_sure(0.9996) == ">99.9%"
    assert percent_sure(0.99949) == "99.9%"
    assert percent_sure(1.0) == "100%" and percent_sure(torch.tensor(1.0)) == "100%"  # softmax can reach exactly 1


def test_with_a_decimal_the_card_never_says_certain_either():
    assert percent_sure(0.9287, 1) == "92.9%" and percent_sure(0.995, 1) == "99.5%"
    assert percent_sure(0.9996, 1) == "99.96%"  # "100.0%" beside a bar saying ">99.9%" was the contradiction
    assert percent_sure(0.99999, 1) == ">99.99%" and percent_sure(1.0, 1) == "100.0%"


def test_probability_bars_label_each_class_the_same_way():
    p = torch.tensor([0.995, 0.004, 0.001] + [0.0] * 7)
    (bars,) = probabilities_figure({"FCNet": p}).data
    assert list(bars.text[:3]) == ["99.5%", "", ""]  # below 1 %: no label
    assert bars.y[0] == float(p[0])


def test_two_networks_bars_keep_their_labels_upright_inside_each_bar():
    p, q = torch.tensor([0.987] + [0.0013] * 9), torch.tensor([0.99995] + [0.0] * 9)
    pair = probabilities_figure({"FCNet": p, "TinyVGG": q})
    # Side by side, each bar is narrower than "99%": across, plotly shrank the labels to specks.
    assert [b.text[0] for b in pair.data] == ["99%", ">99.9%"]
    assert all(b.textangle == -90 and b.textposition == "auto" and b.insidetextanchor == "end" for b in pair.data)
    assert pair.layout.uniformtext.minsize >= 9 and pair.layout.uniformtext.mode == "show"
    (alone,) = probabilities_figure({"FCNet": p}).data  # one bar per class is wide enough: across, above it
    assert alone.textposition == "outside" and alone.textangle is None
