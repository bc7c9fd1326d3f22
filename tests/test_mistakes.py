"""digitrec.mistakes on hand-made probabilities, and the confusion figures on them."""

from __future__ import annotations

import pytest
import torch

from digitrec import mistakes
from digitrec.viz.confusion import confusion_figure, digit_grid_figure


def one_hot_probs(guesses: list[int], confidences: list[float]) -> torch.Tensor:
    """(N, 10): each row puts ``confidence`` on its guess and spreads the rest evenly."""
    rows = []
    for g, c in zip(guesses, confidences):
        row = torch.full((10,), (1 - c) / 9, dtype=torch.float64)
        row[g] = c
        rows.append(row)
    return torch.stack(rows).float()


# Six digits: labels and what a network said, with how sure it was.
LABELS = torch.tensor([3, 3, 3, 5, 5, 7])
GUESSES = [3, 5, 5, 5, 3, 7]
CONFIDENCES = [0.9, 0.6, 0.8, 0.7, 0.95, 0.5]
PROBS = one_hot_probs(GUESSES, CONFIDENCES)


def test_confusion_matrix_counts_each_digit_in_its_cell():
    cm = mistakes.confusion_matrix(PROBS, LABELS)
    assert cm.shape == (10, 10)
    assert int(cm.sum()) == 6
    assert cm[3, 3] == 1 and cm[3, 5] == 2 and cm[5, 5] == 1 and cm[5, 3] == 1 and cm[7, 7] == 1
    assert mistakes.accuracy(cm) == pytest.approx(3 / 6)
    assert mistakes.most_confused(cm) == (3, 5)


def test_softmax_over_the_batch_dimension_is_refused():
    logits = torch.randn(5, 10)
    with pytest.raises(ValueError, match="batch dimension"):
        mistakes.confusion_matrix(torch.softmax(logits, dim=0), torch.zeros(5, dtype=torch.long))
    # The right softmax (over classes) passes.
    mistakes.check_probabilities(torch.softmax(logits, dim=1))


def test_wrong_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        mistakes.check_probabilities(torch.ones(4, 9) / 9)
    with pytest.raises(ValueError, match="labels"):
        mistakes.confusion_matrix(PROBS, LABELS[:3])


def test_cell_digits_are_the_cell_most_confident_first():
    cell = mistakes.cell_digits(PROBS, LABELS, true=3, predicted=5)
    assert [m.index for m in cell] == [2, 1]  # 0.8 before 0.6
    assert [m.confidence for m in cell] == pytest.approx([0.8, 0.6])
    assert all(m.label == 3 and m.predicted == 5 for m in cell)
    # The true class got the evenly spread rest: (1 - 0.8) / 9.
    assert cell[0].true_probability == pytest.approx(0.2 / 9)


def test_any_class_means_mistakes_only_and_the_diagonal_means_right_answers():
    every = mistakes.cell_digits(PROBS, LABELS)
    assert [m.index for m in every] == [4, 2, 1]  # 0.95, 0.8, 0.6: the three mistakes
    assert [m.index for m in mistakes.cell_digits(PROBS, LABELS, true=3)] == [2, 1]
    assert [m.index for m in mistakes.cell_digits(PROBS, LABELS, predicted=3)] == [4]
    right = mistakes.cell_digits(PROBS, LABELS, true=3, predicted=3)
    assert [(m.index, m.predicted) for m in right] == [(0, 3)]
    assert mistakes.cell_digits(PROBS, LABELS, true=0, predicted=1) == []


def test_ties_keep_test_set_order():
    probs = one_hot_probs([1, 1, 1], [0.7, 0.7, 0.7])
    cell = mistakes.cell_digits(probs, torch.tensor([2, 2, 2]), 2, 1)
    assert [m.index for m in cell] == [0, 1, 2]


def test_step_wraps_around():
    assert mistakes.step(0, 3) == 1
    assert mistakes.step(2, 3) == 0  # after the last, the first
    assert mistakes.step(0, 3, -1) == 2
    assert mistakes.step(5, 0) == 0  # an empty cell has nowhere to go


def test_top_guess():
    assert mistakes.top_guess(PROBS[4]) == (3, pytest.approx(0.95))


def test_compare_sorts_every_digit_into_one_group():
    labels = torch.tensor([0, 1, 2, 3, 4])
    a = one_hot_probs([0, 1, 9, 9, 8], [0.9] * 5)  # right on 0, 1
    b = one_hot_probs([0, 7, 2, 9, 4], [0.9] * 5)  # right on 0, 2, 4
    agree = mistakes.compare(a, b, labels)
    assert agree.both_right.tolist() == [0]
    assert agree.only_a_right.tolist() == [1]
    assert agree.only_b_right.tolist() == [2, 4]
    assert agree.both_wrong.tolist() == [3]
    assert agree.same_wrong.tolist() == [3]  # both said 9
    counts = agree.counts()
    assert sum(counts[k] for k in ("both_right", "only_a_right", "only_b_right", "both_wrong")) == 5


def test_confusion_figure_holds_the_counts_true_on_rows():
    cm = mistakes.confusion_matrix(PROBS, LABELS)
    fig = confusion_figure(cm, title="t", highlight=(3, 5))
    heat, cells = fig.data
    assert heat.type == "heatmap" and cells.type == "scatter"
    assert len(cells.x) == 100  # one clickable marker per cell
    assert [c for c, y, x in zip(cells.customdata, cells.y, cells.x) if (y, x) == ("3", "5")][0][0] == 2
    assert heat.z[3][5] == 2 and heat.z[5][3] == 1  # z[row = true][col = predicted]
    assert heat.zmax == 2  # the scale ends at the largest mistake count
    assert fig.layout.yaxis.autorange == "reversed"  # 0 at the top, like a table
    (frame,) = fig.layout.shapes
    assert (frame.x0, frame.y0) == (4.5, 2.5)  # around column 5, row 3


def test_digit_grid_places_each_digit_once():
    images = torch.zeros(5, 28, 28)
    for i in range(5):
        images[i, i, i] = 1.0  # a marker pixel per digit
    hovers = [f"test digit #{i}" for i in range(5)]
    fig = digit_grid_figure(images, [f"#{i}" for i in range(5)], hovers, columns=3)
    assert len(fig.data) == 5 and sum(int(torch.tensor(t.z).sum()) for t in fig.data) == 5  # each marker once
    for i, tile in enumerate(fig.data):  # each digit's own pixels, hover and place: 3 a row, a caption above each
        assert torch.equal(torch.tensor(tile.z), images[i]) and tile.meta == (hovers[i],)
        assert tile.hovertemplate == "%{meta[0]}<extra></extra>"  # a name like "net%{x}" stays text
        caption = fig.layout.annotations[i]
        assert caption.text == f"#{i}" and caption.y == tile.y0 - 1 and caption.x == tile.x0 + 13.5
    assert [(t.x0, t.y0) for t in fig.data] == [(0, 9), (30, 9), (60, 9), (0, 46), (30, 46)]
    assert list(fig.layout.xaxis.range) == [-0.5, 87.5] and list(fig.layout.yaxis.range) == [73.5, -0.5]  # all in view
