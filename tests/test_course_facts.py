"""Every claim the course computes about the models, measured again here in a different way from
digitrec.lessons (plain torch on the real MNIST test set), so a wrong measurement cannot vouch for itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from digitrec import attribution, checkpoints, data, inspection, lessons, models, race, samples, units
from digitrec.viz.cnn import cnn_forward, overview_figure


@pytest.fixture(scope="module")
def nets() -> dict:
    return {k: checkpoints.load_pretrained(k).model for k in ("fc", "cnn")}


@pytest.fixture(scope="module")
def x_test(mnist) -> torch.Tensor:
    return mnist.test.images.float().div(255).unsqueeze(1)  # (10000, 1, 28, 28)


def _percent(share: float) -> str:
    return f"{share:.1%}"


# ---------------------------------------------------------------- zero fractions and dead maps (items 2, 13)


def test_relu_1_1_zero_fraction_and_the_blank_paper_it_keeps(nets, x_test, mnist):
    cnn = nets["cnn"]
    with torch.no_grad():
        relu = torch.relu(F.conv2d(x_test, cnn.conv_1_1.weight, cnn.conv_1_1.bias, padding=1))  # (N, 10, 28, 28)
    zero = float((relu == 0).float().mean())
    facts = lessons.relu_facts(nets, mnist)
    assert facts["cnn.relu_1_1.zero_percent"] == _percent(zero)
    assert zero < 0.5  # "only about 30 % zeros": far from "everything else is 0"
    # Most conv_1_1 biases are positive, and a blank window gives exactly the bias.
    positive = int((cnn.conv_1_1.bias > 0).sum())
    assert lessons.model_facts(nets)["cnn.conv_1_1.positive_biases"] == str(positive) and positive > 5
    blank = (x_test[:2000] == 0).expand(-1, 10, -1, -1)
    on = relu[:2000] > 0
    share = float((on & blank).sum()) / float(on.sum())
    assert facts["cnn.relu_1_1.blank_share"] == _percent(share)
    assert share > 0.5  # most positive cells sit on blank paper


def test_dead_maps_are_zero_on_every_test_digit(nets, x_test):
    cnn = nets["cnn"]
    stats = units.relu_statistics(units.statistics(cnn, data.load_mnist(download=False).test))
    with torch.no_grad():
        acts = inspection.capture_activations(cnn, x_test)
    dead_here = {}
    for name in ("relu_1_1", "relu_1_2", "relu_2_1", "relu_2_2"):
        peak = acts[name].amax(dim=(0, 2, 3))  # (10,) the largest value of each map over every digit
        dead_here[name] = tuple(int(c) for c in torch.nonzero(peak == 0).flatten())
        assert stats[name].dead == dead_here[name]
        assert stats[name].zero_fraction == pytest.approx(float((acts[name] == 0).float().mean()), abs=1e-6)
    # Lesson 10: every later ReLU layer is sparser than the first (not sparser layer by layer: relu_2_1 is not).
    assert all(stats[name].zero_fraction > stats["relu_1_1"].zero_fraction for name in ("relu_1_2", "relu_2_1", "relu_2_2"))
    assert sum(len(d) for d in dead_here.values()) >= 1  # the pretrained TinyVGG has dead maps to mark
    # The overview marks each dead ReLU map, and its pooled copy when pooling follows.
    fig = overview_figure(cnn_forward(cnn, x_test[:1]), "layer", dead={k: v for k, v in dead_here.items()})
    marks = [a for a in fig.layout.annotations if a.name == "dead"]
    expected = sum(len(v) for v in dead_here.values()) + len(dead_here["relu_1_2"]) + len(dead_here["relu_2_2"])
    assert len(marks) == expected


def test_relu_statistics_on_a_hand_made_model():
    """Two channels: one always positive, one never: zero fraction 1/2, the second one dead. A batch norm between
    the convolution and its ReLU is looked through: the ReLU's zeros are counted on what it reads."""

    class Two(torch.nn.Module):
        def __init__(self, norm: bool):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 1)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.bias.copy_(torch.tensor([1.0, -1.0]) if not norm else torch.tensor([-1.0, 1.0]))
            self.norm = torch.nn.BatchNorm2d(2) if norm else torch.nn.Identity()
            if norm:  # scale -1: the batch norm turns the signs round again
                with torch.no_grad():
                    self.norm.weight.fill_(-1.0)
            self.relu = torch.nn.ReLU()
            self.flatten = torch.nn.Flatten()
            self.output = torch.nn.Linear(2 * 28 * 28, 10)

        def forward(self, x):
            return self.output(self.flatten(self.relu(self.norm(self.conv(x)))))

    blank = data.DigitSet(torch.zeros(5, 28, 28, dtype=torch.uint8), torch.zeros(5, dtype=torch.long))
    for norm in (False, True):
        stats = units.relu_statistics(units.statistics(Two(norm), blank))["relu"]
        assert stats.units == 2 and stats.dead == (1,) and stats.zero_fraction == 0.5
        assert stats.unit_zero_fraction == (0.0, 1.0)


# ---------------------------------------------------------------- occlusion is zero off the ink (item 3)


def test_occlusion_scores_blank_paper_away_from_the_ink_exactly_zero(nets, mnist):
    window = attribution._OPTIONS["occlusion"]["window"]  # 4 pixels
    for index in (0, 1, 2):
        x = mnist.test.images[index].float().div(255).reshape(1, 1, 28, 28)
        target = int(mnist.test.labels[index])
        attr = attribution.attribute(nets["cnn"], x, target, "occlusion")
        ink = (x[0, 0] > 0).float()
        # Pixels whose every occluding window (window x window, any stride offset) misses the ink.
        near = F.max_pool2d(ink[None, None], 2 * window - 1, stride=1, padding=window - 1)[0, 0] > 0
        values = attr.values.reshape(28, 28)
        assert float(values[~near].abs().max()) <= 1e-5  # zero up to float32 rounding of the logit (~2e-6)
        assert float(values[near].abs().max()) > 1e-3  # it does score the ink
        # Lesson 14: blank paper next to a stroke is not zero (a square over it also covers ink).
        assert float(values[near & (ink == 0)].abs().max()) > 1e-3


# ---------------------------------------------------------------- the accuracy ladder (item 5)


def test_the_linear_baseline_is_softmax_regression_and_the_ladder_climbs(mnist, x_test):
    ck = checkpoints.load_pretrained("linear")
    assert ck.config == models.FCConfig(hidden=())
    assert [n for n, _ in ck.model.named_children()] == ["flatten", "output"]
    assert models.count_params(ck.model) == 784 * 10 + 10
    with torch.no_grad():
        acc = float((ck.model(x_test).argmax(1) == mnist.test.labels).float().mean())
    assert acc == pytest.approx(ck.info.test_accuracy, abs=1e-4)
    fc, cnn = (checkpoints.load_pretrained(k).info.test_accuracy for k in ("fc", "cnn"))
    assert 0.90 < acc < fc < cnn


# ---------------------------------------------------------------- train against test accuracy (item 6)


def test_train_accuracy_is_measured_on_the_training_digits(nets, mnist):
    facts = lessons.dataset_facts(nets, mnist, ["train_accuracy"])
    x = mnist.train.images[: lessons.TRAIN_SAMPLE].float().div(255).unsqueeze(1)
    y = mnist.train.labels[: lessons.TRAIN_SAMPLE]
    for key, model in nets.items():
        with torch.no_grad():
            acc = float((model(x).argmax(1) == y).float().mean())
        assert facts[f"{key}.train_accuracy"] == f"{acc:.2%}"
    # FCNet cannot fit its own training digits much better than new ones; TinyVGG fits both better.
    fc_train = float(facts["fc.train_accuracy"].rstrip("%"))
    assert fc_train < 98.0 < float(facts["cnn.train_accuracy"].rstrip("%"))


# ---------------------------------------------------------------- the on/off pattern alone (item 10)


def test_onoff_lookup_accuracy_recomputed(nets, mnist):
    fc = nets["fc"]

    def patterns(images):
        with torch.no_grad():
            on = fc.fc_1(images.float().div(255).reshape(len(images), -1)) > 0
        return [tuple(row) for row in on.tolist()]

    votes: dict = {}
    for p, label in zip(patterns(mnist.train.images), mnist.train.labels.tolist()):
        votes.setdefault(p, torch.zeros(10, dtype=torch.long))[label] += 1
    right = 0
    for p, label in zip(patterns(mnist.test.images), mnist.test.labels.tolist()):
        if p in votes and int(votes[p].argmax()) == label:  # ties: argmax picks the lowest class, as most_common does
            right += 1
    share = right / len(mnist.test)
    assert lessons.onoff_lookup_accuracy(fc, mnist.train, mnist.test) == pytest.approx(share, abs=0.002)
    assert 0.5 < share < checkpoints.load_pretrained("fc").info.test_accuracy - 0.1  # a lot, far from all


# ---------------------------------------------------------------- cropping under a vertical shift (item 11)


def test_crop_shares_from_row_and_column_sums(mnist):
    x = mnist.test.images.float()
    ink = x.sum(dim=(1, 2))
    s = lessons.CROP_SHIFT
    lost = {  # moved down s pixels, the bottom s rows leave the frame; and so on
        "down": x[:, -s:, :].sum(dim=(1, 2)), "up": x[:, :s, :].sum(dim=(1, 2)),
        "right": x[:, :, -s:].sum(dim=(1, 2)), "left": x[:, :, :s].sum(dim=(1, 2)),
    }
    shares = lessons.crop_shares(mnist.test.images)
    for direction, gone in lost.items():
        assert shares[direction] == pytest.approx(float((gone > lessons.CROP_SHARE * ink).float().mean()), abs=1e-3)
    assert shares["down"] > 0.3 and shares["down"] > 3 * shares["right"]  # taller than wide


# ---------------------------------------------------------------- shift survival (item 12)


def test_shift_survival_recomputed_and_tinyvgg_breaks_after_a_few_pixels(nets, mnist):
    survival = lessons.shift_survival(nets, mnist.test, shifts=(3,), n=300)
    x = mnist.test.images[:300].float().div(255).unsqueeze(1)
    moved = torch.zeros_like(x)
    moved[..., 3:] = x[..., :-3]
    for key, model in nets.items():
        with torch.no_grad():
            acc = float((model(moved).argmax(1) == mnist.test.labels[:300]).float().mean())
        assert survival[key][3] == pytest.approx(acc)
    assert survival["cnn"][3] > survival["fc"][3]
    assert survival["cnn"][3] < survival["cnn"][0]


def test_digit_shift_reach_is_the_shift_tests_own(nets):
    from digitrec.shift import REACH_LIMIT, shift_curve

    x = samples.sample_digit(7).reshape(1, 1, 28, 28)
    facts = lessons.digit_facts(nets, x, 7)

    def reads_seven(model, dx: int) -> bool:  # moved dx pixels sideways here, with plain slicing
        moved = torch.zeros_like(x)
        if dx >= 0:
            moved[..., dx:] = x[..., : 28 - dx]
        else:
            moved[..., :dx] = x[..., -dx:]
        with torch.no_grad():
            return int(model(moved).argmax()) == 7

    for key, model in nets.items():
        reach = 0
        while reach < REACH_LIMIT and reads_seven(model, reach + 1) and reads_seven(model, -(reach + 1)):
            reach += 1
        assert facts[f"digit.{key}.shift_reach"] == str(reach), key
        assert reach == max(shift_curve({key: model}, x[0, 0], 7, max_shift=REACH_LIMIT).robust_range(key), 0)
        # Lesson 11 asks why TinyVGG does not keep its answer for any shift: for this digit it fails within the limit.
        assert reach < REACH_LIMIT, key


# ---------------------------------------------------------------- edges, biases, cost of a step (items 1, 8)


def test_map_0_lights_the_edge_the_lesson_names(nets):
    facts = lessons.model_facts(nets)
    image = torch.zeros(1, 1, 28, 28)
    image[..., 12:16, 4:24] = 1.0  # a horizontal bar, rows 12-15: its top edge is row 11/12, its bottom row 15/16
    with torch.no_grad():
        map0 = nets["cnn"].conv_1_1(image)[0, 0]  # (28, 28)
    top = float(map0[11:13, 8:20].mean())
    bottom = float(map0[15:17, 8:20].mean())
    assert facts["cnn.conv_1_1.map0_edge"] == ("top" if top > bottom else "bottom")
    # Blank paper shows the bias: the blank corner of any digit.
    digit = lessons.digit_facts(nets, samples.sample_digit(3).reshape(1, 1, 28, 28), 3)
    assert digit["digit.cnn.corner"] == facts["cnn.conv_1_1.bias_0"]


def test_a_training_step_costs_what_the_race_counts(nets):
    facts = lessons.model_facts(nets)
    assert facts["train.step_factor"] == str(race.TRAINING_STEP_FACTOR) == "3"
    assert facts["train.backward_factor"] == "2"
    text = (lessons.LESSONS_DIR / "06-learning.md").read_text()
    assert "{{ train.backward_factor }} forward passes" in text and "{{ train.step_factor }} forward" in " ".join(text.split())
    assert "about the cost of the forward pass" not in text


# ---------------------------------------------------------------- the units lessons 3, 4, 10 and 11 pick (issue 13)


def _mean_correlation(patches: np.ndarray) -> float:
    """Mean off-diagonal correlation of (k, h, w) patches; a blank patch correlates 0 with everything."""
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(np.corrcoef(patches.reshape(len(patches), -1)))
    k = len(patches)
    return float((corr.sum() - np.trace(corr)) / (k * (k - 1)))


def test_the_units_the_lessons_pick(nets, x_test, mnist):
    """The quietest unit (fewest digits positive, then lowest peak) and the clearest one (top inputs that agree
    most), found by plain torch and numpy over the 10,000 test digits, are the ones the lessons name."""
    facts = lessons.unit_facts(nets, mnist)
    cnn, fc = nets["cnn"], nets["fc"]
    acts = inspection.capture_activations(cnn, x_test)
    quiet = min(((float((acts[name].amax(dim=(2, 3)) > 0).float().mean(0)[u]), float(acts[name][:, u].max()), name, u)
                 for name in ("conv_1_1", "conv_1_2", "conv_2_1", "conv_2_2") for u in range(10)))
    assert facts["cnn.units.quietest"] == f"{quiet[2]} map {quiet[3]}"
    assert (facts["cnn.units.quietest_fires"], facts["cnn.units.quietest_peak"]) == (_percent(quiet[0]), f"{quiet[1]:.3f}")

    # conv_2_2 (14 x 14, padding 1): cell (r, c) sees input rows 2r - 6 .. 2r + 7, worked back through
    # conv, conv, 2 x 2 pooling, conv, conv: a 14 x 14 window.
    images = np.pad(x_test[:, 0].numpy(), ((0, 0), (7, 7), (7, 7)))  # zeros around: a window may reach past the border
    maps = acts["conv_2_2"]  # (N, 10, 14, 14)
    scores = {}
    for u in range(10):
        peaks = maps[:, u].flatten(1).max(dim=1)
        top = peaks.values.topk(9).indices
        cells = [divmod(int(peaks.indices[i]), 14) for i in top]
        patches = np.stack([images[int(i), 2 * r - 6 + 7: 2 * r + 8 + 7, 2 * c - 6 + 7: 2 * c + 8 + 7]
                            for i, (r, c) in zip(top, cells)])
        assert patches.shape == (9, 14, 14)
        if float(peaks.values.max()) > 0:
            scores[u] = _mean_correlation(patches)
    best = max(scores, key=scores.get)
    assert facts["cnn.units.conv_2_2.clearest"] == f"map {best}"
    assert facts["cnn.units.conv_2_2.clearest_agreement"] == f"{scores[best]:.3f}"
    assert facts["cnn.units.conv_2_2.field"] == "14"

    x = x_test.flatten(1)  # (N, 784)
    values = x @ fc.fc_1.weight.detach().T + fc.fc_1.bias.detach()  # (N, 16) before ReLU
    neuron_scores = {u: _mean_correlation(x[values[:, u].topk(9).indices].numpy()) for u in range(16)}
    best = max(neuron_scores, key=neuron_scores.get)
    top_classes = mnist.test.labels[values[:, best].topk(9).indices].tolist()
    assert facts["fc.units.fc_1.clearest"] == f"neuron {best}"
    assert facts["fc.units.fc_1.clearest_classes"] == ", ".join(map(str, top_classes))
    assert facts["fc.units.fc_1.clearest_class_count"] == str(max(top_classes.count(c) for c in set(top_classes)))


# ---------------------------------------------------------------- the digit map's separation (lesson 15)


def test_map_separation_recomputed_with_numpy_pca_and_neighbours(nets, x_test, mnist):
    """Lesson 15's numbers: the PCA map of the scores (and of the pixels), projected and scored here in
    numpy (eigenvectors of the covariance, a plain distance matrix), not through digitrec.embedding."""
    facts = lessons.map_facts(nets, mnist)
    labels = mnist.test.labels.numpy()[:2000]

    def separation(features: np.ndarray) -> float:
        centred = features - features.mean(axis=0)
        _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues: the last two span the plane
        pts = (centred @ vectors[:, -2:])[:2000]
        d = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        nearest = np.argsort(d, axis=1)[:, :10]
        return float(((labels[nearest] == labels[:, None]).mean(axis=1) > 0.5).mean())

    with torch.no_grad():
        scores = {k: m(x_test).double().numpy() for k, m in nets.items()}
    pixels = x_test.flatten(1).double().numpy()
    for key in nets:
        for layer, features in (("input", pixels), ("output", scores[key])):
            share = separation(features)
            # Rounded to whole percent as the caption does; a tie in distance may order one neighbour apart.
            assert abs(int(facts[f"{key}.map.{layer}.separation"].rstrip("%")) - 100 * share) <= 1, (key, layer)
            assert facts[f"{key}.map.{layer}.words"] == ("mixed" if share < 0.5 else "clear islands" if share > 0.85
                                                         else "partly separated")
    # What lesson 15 says of them: the flat PCA map of FCNet's scores is far from islands, yet its
    # scores read most digits right; TinyVGG's map separates more than FCNet's.
    fc_out = int(facts["fc.map.output.separation"].rstrip("%"))
    assert fc_out < 85 and checkpoints.load_pretrained("fc").info.test_accuracy > 0.9
    assert int(facts["cnn.map.output.separation"].rstrip("%")) > fc_out
    assert int(facts["fc.map.input.separation"].rstrip("%")) < fc_out


def test_lesson_8s_confession_matches_how_the_pretrained_networks_were_trained(mnist):
    """Lesson 8 says the shipped networks trained on all 60,000 training digits and watched the test set
    after every epoch: their own checkpoints' metadata says so."""
    import json

    from digitrec.data import validation_split

    text = " ".join(lessons.find_lesson(lessons.load_lessons(), "does-it-generalise").path.read_text().split())
    assert "they trained on all 60,000 training digits, the validation ones among them" in text
    kept, held_out = validation_split(mnist.train)
    assert len(kept) + len(held_out) == len(mnist.train) == 60_000 and len(held_out) > 0
    for key in ("fc", "cnn"):
        info = checkpoints.load_pretrained(key).info
        assert int(info.extra["train_digits"]) == 60_000, key
        recipe = json.loads(info.extra["train_config"])
        assert recipe["evaluate_each_epoch"] is True, key
        # Lesson 12: trained on digits only slightly moved and turned (lesson 13's augmentation), never flipped.
        assert 0 < recipe["augment_shift"] <= 2 and 0 < recipe["augment_rotation"] <= 15, key


def test_lesson_12s_fcnet_fits_its_training_digits_no_better_than_its_test_digits(nets, mnist):
    """Lesson 12: FCNet's training and test accuracy are about the same, and both below TinyVGG's."""
    facts = lessons.dataset_facts(nets, mnist, ["train_accuracy"])
    train_share = float(facts["fc.train_accuracy"].rstrip("%")) / 100
    with torch.no_grad():
        x = mnist.test.images.float().div(255).unsqueeze(1)
        test_share = float((nets["fc"](x).argmax(1) == mnist.test.labels).float().mean())
        cnn_share = float((nets["cnn"](x).argmax(1) == mnist.test.labels).float().mean())
    assert abs(train_share - test_share) < 0.01 and max(train_share, test_share) < cnn_share


# ---------------------------------------------------------------- wording checked by recomputing (stop 27's audit)


def test_lesson_1_a_small_drawing_arrives_thick_and_a_tiny_one_is_refused():
    """Lesson 1: a small 3 becomes a big centred 3 whose strokes are scaled up with it (a thick blob);
    one under a tenth of the canvas is refused."""
    from digitrec import drawn, preprocess
    from digitrec.errors import EmptyDrawing
    from digitrec.samples import CANVAS_SIZE, SAMPLE_STROKES, render_strokes

    def drawing(scale: float) -> np.ndarray:
        strokes = [drawn._transform(s, scale=(scale, scale)) for s in SAMPLE_STROKES[3]]
        return render_strokes(strokes, size=CANVAS_SIZE)

    full, small = preprocess.to_mnist(drawing(1.0)), preprocess.to_mnist(drawing(0.15))
    assert (small > 0.5).sum() > 1.5 * (full > 0.5).sum()  # the same 20-pixel box, far more of it ink
    with pytest.raises(EmptyDrawing, match="too small"):
        preprocess.to_mnist(drawing(0.01))  # about the pen's own width: under a tenth of the canvas


def test_lesson_2_almost_every_inked_pixel_has_ink_above_or_below(mnist):
    x = mnist.test.images > 0
    up = torch.zeros_like(x)
    up[:, 1:] = x[:, :-1]
    down = torch.zeros_like(x)
    down[:, :-1] = x[:, 1:]
    share = float((x & (up | down)).sum()) / float(x.sum())
    assert 0.98 < share < 1.0  # almost every, not every
    for d in range(10):  # and on each sample digit a page may start with
        s = samples.sample_digit(d).reshape(28, 28) > 0
        near = torch.zeros_like(s)
        near[1:] |= s[:-1]
        near[:-1] |= s[1:]
        assert float((s & near).sum()) / float(s.sum()) > 0.95, d


def test_lesson_6_the_live_loss_falls_faster_then_slower(mnist):
    """The live_training widget's run (FCNet 16-16, plain SGD at 0.1, batch 64, 300 steps, seed 0): the
    loss falls faster and faster for the first few dozen steps, then more and more slowly (20-step means)."""
    from digitrec import train

    class Losses:
        def __init__(self):
            self.values = []

        def on_step_end(self, state):
            self.values.append(state.loss)

    losses = Losses()
    model = models.build(models.PRESETS["fc"], seed=0)
    recipe = train.TrainConfig(epochs=1, batch_size=64, lr=0.1, optimizer="sgd", momentum=0.0, max_steps=300,
                               seed=0, evaluate_each_epoch=False)
    digits = data.validation_split(mnist.train)[0]
    train.fit(model, digits, recipe, callbacks=[losses])
    means = [sum(losses.values[i:i + 20]) / 20 for i in range(0, 300, 20)]
    drops = [a - b for a, b in zip(means, means[1:])]  # 0.23, 0.33, 0.43, 0.31, 0.14, 0.03, ... (2026-12-05)
    steepest = max(range(len(drops)), key=drops.__getitem__)
    assert 1 <= steepest <= 4 and all(a < b for a, b in zip(drops[:steepest], drops[1:steepest + 1]))  # faster
    assert all(d < drops[steepest] / 2 for d in drops[steepest + 2:])  # then slower: well under the steepest


def test_lesson_10_pooling_keeps_some_values_through_a_one_pixel_move(nets, mnist):
    """Lesson 10: a strong value may stay inside its 2 x 2 square when the digit moves one pixel, so some pooled
    values do not change: more of max_pool_1's than of relu_1_2's, and far from all."""
    cnn = nets["cnn"]
    x = mnist.test.images[:300].float().div(255).unsqueeze(1)
    moved = torch.zeros_like(x)
    moved[..., 1:] = x[..., :-1]
    with torch.no_grad():
        a, b = inspection.capture_activations(cnn, x), inspection.capture_activations(cnn, moved)
    kept = {}
    for name in ("relu_1_2", "max_pool_1"):
        on = a[name] > 0
        kept[name] = float((on & (a[name] == b[name])).sum()) / float(on.sum())
    assert kept["relu_1_2"] < kept["max_pool_1"] < 0.6
