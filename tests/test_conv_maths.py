"""digitrec.conv_maths: output sizes against PyTorch's own convolution, and the sliding sum worked on paper."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from digitrec import conv_maths
from digitrec.errors import InvalidConfig


def test_output_size_matches_conv2d_shapes():
    checked = 0
    for n, k, p, s in itertools.product((5, 7, 28), (1, 2, 3, 5), (0, 1, 2), (1, 2, 3)):
        if k > n + 2 * p:
            continue
        out = F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), padding=p, stride=s)
        assert conv_maths.output_size(n, k, p, s) == out.shape[-1], (n, k, p, s)
        checked += 1
    assert checked > 90


def test_geometry_worked_examples():
    # TinyVGG's convolution: 28 + 2 - 3 = 27, / 1 + 1 = 28: same size.
    g = conv_maths.geometry(28, 3, 1, 1)
    assert (g.padded, g.span, g.out, g.fits, g.leftover) == (30, 27, 28, True, 0)
    # Stride 2 without padding: (28 - 3) / 2 = 12.5 does not fit; PyTorch keeps 13 and drops 1 row/column.
    g = conv_maths.geometry(28, 3, 0, 2)
    assert (g.span, g.out, g.fits, g.leftover, g.exact) == (25, 13, False, 1, 13.5)
    # (28 + 2 - 4) / 2 = 13 exactly: 14 outputs.
    g = conv_maths.geometry(28, 4, 1, 2)
    assert (g.out, g.fits, g.leftover, g.exact) == (14, True, 0, 14.0)


def test_kernel_larger_than_padded_input_is_refused():
    with pytest.raises(InvalidConfig, match="does not fit"):
        conv_maths.geometry(3, 7, 1, 1)
    with pytest.raises(InvalidConfig):
        conv_maths.geometry(28, 3, 0, 0)  # stride 0


def test_convolve_by_hand():
    image = torch.arange(1.0, 10.0).reshape(3, 3)  # 1 2 3 / 4 5 6 / 7 8 9
    ones = torch.ones(3, 3)
    assert conv_maths.convolve(image, ones).tolist() == [[45.0]]
    # Padding 1, stride 2: windows centred on the four corners.
    # top-left: 1+2+4+5 = 12; top-right: 2+3+5+6 = 16; bottom-left: 4+5+7+8 = 24; bottom-right: 5+6+8+9 = 28.
    assert conv_maths.convolve(image, ones, padding=1, stride=2).tolist() == [[12.0, 16.0], [24.0, 28.0]]
    # Not flipped (cross-correlation, like conv2d): a kernel with 1 at top-left reads the window's top-left.
    corner = torch.zeros(2, 2)
    corner[0, 0] = 1.0
    assert conv_maths.convolve(image, corner).tolist() == [[1.0, 2.0], [4.0, 5.0]]


@pytest.mark.parametrize("name", conv_maths.KERNEL_NAMES)
@pytest.mark.parametrize("k,p,s", [(3, 0, 1), (3, 1, 2), (5, 2, 3), (2, 0, 2), (7, 3, 4)])
def test_convolve_equals_conv2d_on_a_digit(name, k, p, s):
    torch.manual_seed(0)
    image = torch.rand(28, 28)
    kernel = conv_maths.make_kernel(name, k)
    ours = conv_maths.convolve(image, kernel, p, s, bias=0.25)
    torch_out = F.conv2d(image[None, None], kernel[None, None], bias=torch.tensor([0.25]), padding=p, stride=s)[0, 0]
    assert ours.shape == torch_out.shape == (conv_maths.output_size(28, k, p, s),) * 2
    torch.testing.assert_close(ours, torch_out, atol=1e-5, rtol=1e-5)


def test_hand_made_kernels():
    edge, blur, sharpen = (conv_maths.make_kernel(n, 3) for n in ("edge", "blur", "sharpen"))
    assert edge.tolist() == [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]]
    assert float(edge.sum()) == 0  # flat regions give 0
    assert float(blur.sum()) == pytest.approx(1.0)  # keeps brightness
    assert float(sharpen.sum()) == pytest.approx(1.0)
    assert float(sharpen[1, 1]) == pytest.approx(2 - 1 / 9)
    assert conv_maths.make_kernel("vertical edge", 3).tolist() == [[-1, 0, 1]] * 3
    assert conv_maths.make_kernel("horizontal edge", 3).tolist() == [[-1, -1, -1], [0, 0, 0], [1, 1, 1]]
    # identity with "same" padding copies the image
    image = torch.rand(9, 9)
    for k in (1, 3, 5):
        torch.testing.assert_close(conv_maths.convolve(image, conv_maths.make_kernel("identity", k), k // 2), image)


def test_vertical_edge_kernel_finds_a_vertical_edge():
    image = torch.zeros(8, 8)
    image[:, 4:] = 1.0  # dark left half, bright right half
    out = conv_maths.convolve(image, conv_maths.make_kernel("vertical edge", 3))  # (6, 6)
    # windows over columns 2-4 and 3-5 straddle the edge; the others see a flat area
    assert out[:, 2].tolist() == [3.0] * 6 and out[:, 3].tolist() == [3.0] * 6
    assert out[:, [0, 1, 4, 5]].abs().sum() == 0


def test_bad_kernels_are_refused():
    with pytest.raises(InvalidConfig, match="Unknown kernel"):
        conv_maths.make_kernel("emboss", 3)
    with pytest.raises(InvalidConfig):
        conv_maths.make_kernel("edge", conv_maths.MAX_KERNEL + 1)
    with pytest.raises(InvalidConfig):
        conv_maths.convolve(torch.zeros(4, 5), torch.ones(3, 3))
