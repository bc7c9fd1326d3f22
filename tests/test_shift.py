import torch

from digitrec import models
from digitrec.shift import shift_curve, shift_digit


def test_shift_moves_pixels_and_drops_what_leaves_the_frame():
    pixels = torch.zeros(28, 28)
    pixels[10, 27] = 1.0  # right edge
    pixels[5, 5] = 0.5
    right = shift_digit(pixels, 2, 0)
    assert right[5, 7] == 0.5 and right[5, 5] == 0
    assert right.sum() == 0.5  # the edge pixel slid out of the frame
    down_left = shift_digit(pixels, -3, 4)
    assert down_left[9, 2] == 0.5 and down_left[14, 24] == 1.0
    assert torch.equal(shift_digit(pixels, 0, 0), pixels)


def test_shift_curve_gives_each_network_the_target_probability_per_shift():
    torch.manual_seed(0)
    nets = {"fc": models.build(models.FCConfig(), seed=0), "cnn": models.build(models.TinyVGGConfig(), seed=0)}
    pixels = torch.rand(28, 28)
    curve = shift_curve(nets, pixels, target=3, max_shift=2)
    assert curve.shifts == [-2, -1, 0, 1, 2]
    for key, model in nets.items():
        x = shift_digit(pixels, 1, 0).reshape(1, 1, 28, 28)
        expected = torch.softmax(model.eval()(x), dim=1)[0, 3].item()
        assert abs(curve.probability[key][3] - expected) < 1e-6
        assert len(curve.prediction[key]) == 5


def test_robust_range_counts_contiguous_shifts_both_ways():
    from digitrec.shift import ShiftCurve

    curve = ShiftCurve([-3, -2, -1, 0, 1, 2, 3], {}, {"a": [1, 7, 7, 7, 7, 7, 2], "b": [7, 7, 7, 2, 7, 7, 7]}, 7)
    assert curve.robust_range("a") == 2
    assert curve.robust_range("b") == -1  # wrong when unshifted


def test_pretrained_cnn_copes_with_shifts_better_than_fc(mnist):
    """The lesson-10 claim, on real digits: averaged over 200 test digits shifted 4 px,
    TinyVGG keeps more of its confidence in the true class than FCNet."""
    from digitrec import checkpoints
    from digitrec.inspection import predict_proba

    fc, cnn = checkpoints.load_pretrained("fc").model, checkpoints.load_pretrained("cnn").model
    images = mnist.test.images[:200].float() / 255
    labels = mnist.test.labels[:200]
    shifted = torch.stack([shift_digit(im, 4, 0) for im in images]).unsqueeze(1)
    acc = {k: float((predict_proba(m, shifted).argmax(1) == labels).float().mean()) for k, m in [("fc", fc), ("cnn", cnn)]}
    assert acc["cnn"] > acc["fc"] + 0.1, acc
