"""digitrec.viz.fooling: the edit figure shows the change on a scale of ± the budget, its colour bar clear of the edit."""

from __future__ import annotations

import pytest
import torch

from digitrec.viz.fooling import edit_figure


def test_the_change_is_drawn_on_plus_minus_the_budget_and_its_colour_bar_stays_out_of_the_edit():
    original = torch.zeros(28, 28)
    edited = original.clone()
    edited[10, 10], edited[11, 11] = 0.05, -0.05
    fig = edit_figure(original, edited, 0.094, ("before", "the change", "after"))
    before, change, after = fig.data
    assert (change.zmin, change.zmax) == (-0.094, 0.094) and change.showscale and not before.showscale
    assert float(change.z[10][10]) == pytest.approx(0.05) and float(after.z[11][11]) == pytest.approx(-0.05)
    bar, layout = change.colorbar, fig.layout
    # Right of the change, with room for its tick labels ("-0.05", about 0.05 of the width) before the edit.
    assert bar.xanchor == "left" and layout.xaxis2.domain[1] <= bar.x <= layout.xaxis3.domain[0] - 0.06
