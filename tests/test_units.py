"""digitrec.units checked against brute force: one digit at a time through ``capture_activations``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from digitrec import checkpoints, intervention, models, units
from digitrec.data import DigitSet
from digitrec.inspection import capture_activations

N = 150  # real test digits: enough for top-9 to mean something, few enough to brute-force one by one


@pytest.fixture(scope="module")
def subset(mnist) -> DigitSet:
    return mnist.test.subset(N)


def brute_force_peaks(model: nn.Module, digits: DigitSet) -> dict[str, torch.Tensor]:
    """layer -> (N, U) each digit's largest value of each unit, one digit per forward pass."""
    rows: dict[str, list] = {}
    for image in digits.images:
        acts = capture_activations(model, image.float().reshape(1, 1, 28, 28) / 255.0)
        for layer in units.unit_layers(model):
            out = acts[layer][0]  # (U,) or (U, H, W)
            rows.setdefault(layer, []).append(out.flatten(1).max(dim=1).values if out.dim() == 3 else out)
    return {layer: torch.stack(r) for layer, r in rows.items()}


@pytest.mark.parametrize("key", ["fc", "cnn"])
def test_top_digits_are_the_brute_force_top_activations(key, subset):
    model = checkpoints.load_pretrained(key).model
    stats = units.statistics(model, subset, batch=128)  # several batches, a short last one
    all_brute = brute_force_peaks(model, subset)
    for layer in units.unit_layers(model):
        brute = all_brute[layer]
        torch.testing.assert_close(stats[layer].peak, brute, rtol=1e-5, atol=1e-5)
        for u in range(brute.shape[1]):
            indices, values = units.top_digits(stats, units.Unit(layer, u))
            expected = brute[:, u].topk(units.TOP_K)
            torch.testing.assert_close(values, expected.values, rtol=1e-5, atol=1e-5)
            # Same digits (ties aside): each listed digit's brute-force value is its listed value.
            torch.testing.assert_close(brute[indices, u], values, rtol=1e-5, atol=1e-5)


def test_dead_units_are_exactly_those_never_positive(subset):
    model = copy.deepcopy(checkpoints.load_pretrained("cnn").model)
    with torch.no_grad():  # make map 4 of conv_1_1 dead for sure: nothing can lift it above 0
        model.conv_1_1.bias[4] = -1000.0
    stats = units.statistics(model, subset)
    dead = units.dead_units(stats)
    assert 4 in dead["conv_1_1"]
    brute = brute_force_peaks(model, subset.subset(50))
    for layer in units.unit_layers(model):
        # Never positive on the first 50 digits by brute force: a superset of the dead ones over all N.
        assert set(dead[layer]) <= {u for u in range(brute[layer].shape[1]) if not bool((brute[layer][:, u] > 0).any())}
        for u in range(units.unit_count(model, layer)):
            assert (u in dead[layer]) == bool((stats[layer].peak[:, u] <= 0).all())
            bio = units.biography(model, stats, subset, units.Unit(layer, u))
            assert bio.dead == (u in dead[layer])
            assert (bio.fires == 0.0) == bio.dead


def test_pretrained_tinyvgg_has_the_dead_maps_the_issue_describes(mnist):
    """Several of the pretrained TinyVGG's maps are dead on all 10,000 test digits (checked by a second, plain pass)."""
    model = checkpoints.load_pretrained("cnn").model
    dead = units.dead_units(units.statistics(model, mnist.test))
    assert sum(len(v) for v in dead.values()) >= 2
    acts_max = {}
    for start in range(0, len(mnist.test), 2500):
        x = mnist.test.images[start : start + 2500].unsqueeze(1).float() / 255.0
        for layer, out in capture_activations(model, x).items():
            if layer in dead:
                m = out.amax(dim=(0, 2, 3))
                acts_max[layer] = torch.maximum(acts_max[layer], m) if layer in acts_max else m
    for layer, ids in dead.items():
        assert ids == [int(u) for u in torch.nonzero(acts_max[layer] <= 0).flatten()]


def test_receptive_field_sizes_follow_the_formula():
    model = models.build(models.TinyVGGConfig(), seed=0)
    # r_out = r_in + (k - 1) * jump; jump *= stride: 3x3 convs add 2*jump, a 2x2 pool adds 1*jump and doubles it.
    expected = {"conv_1_1": 3, "relu_1_1": 3, "conv_1_2": 5, "max_pool_1": 6, "conv_2_1": 10, "conv_2_2": 14,
                "max_pool_2": 16}
    for layer, size in expected.items():
        assert units.receptive_field_size(model, layer) == size
        top, left, bottom, right = units.receptive_field(model, layer, 3, 3)
        assert bottom - top + 1 == size and right - left + 1 == size


def test_receptive_field_is_where_the_gradient_reaches():
    """The box equals the input pixels a cell's value depends on (average pooling, so every window pixel counts)."""
    model = models.build(models.TinyVGGConfig(channels=2), seed=0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.uniform_(0.1, 1.0)  # all positive: every ReLU passes, no path is cut
                m.bias.fill_(0.1)
    model.max_pool_1, model.max_pool_2 = nn.AvgPool2d(2), nn.AvgPool2d(2)  # same window geometry as max pooling
    for layer, (row, col) in {"conv_1_2": (10, 12), "conv_2_1": (6, 7), "conv_2_2": (7, 7)}.items():
        x = torch.rand(1, 1, 28, 28, requires_grad=True)
        h = x
        for name, m in model.named_children():
            h = m(h)
            if name == layer:
                break
        (grad,) = torch.autograd.grad(h[0, 0, row, col], x)
        rows, cols = torch.nonzero(grad[0, 0]).unbind(1)
        box = (int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max()))
        assert box == units.receptive_field(model, layer, row, col)


def test_cut_patch_pads_outside_the_image():
    image = torch.arange(28 * 28, dtype=torch.float32).reshape(28, 28)
    patch = units.cut_patch(image, (-1, -2, 2, 1))
    assert patch.shape == (4, 4)
    assert patch[0].eq(0).all() and patch[:, :2].eq(0).all()
    torch.testing.assert_close(patch[1:, 2:], image[:3, :2])


def test_biography_patches_are_the_digits_under_the_strongest_cells(subset):
    model = checkpoints.load_pretrained("cnn").model
    stats = units.statistics(model, subset)
    bio = units.biography(model, stats, subset, units.Unit("conv_2_2", 0))
    assert bio.patches.shape == (units.TOP_K, 14, 14)
    for i, (r, c), box, patch in zip(bio.top_indices.tolist(), bio.top_cells, bio.boxes, bio.patches):
        out = capture_activations(model, subset.images[i].float().reshape(1, 1, 28, 28) / 255.0)["conv_2_2"][0, 0]
        assert float(out[r, c]) == pytest.approx(float(out.max()), abs=1e-5)  # the strongest cell
        torch.testing.assert_close(patch, units.cut_patch(subset.images[i].float() / 255.0, box))


def test_maximising_input_beats_every_top_digit_and_leaves_the_model_alone(subset):
    model = checkpoints.load_pretrained("fc").model
    before = intervention.fingerprint(model)
    stats = units.statistics(model, subset)
    for unit in (units.Unit("fc_1", 3), units.Unit("fc_2", 5)):
        picture = units.maximising_input(model, unit)
        assert picture.shape == (28, 28) and float(picture.min()) >= 0 and float(picture.max()) <= 1
        best = float(units.unit_value(model, unit, picture.reshape(1, 1, 28, 28))[0])
        indices, values = units.top_digits(stats, unit)
        assert best > float(values.max())
    assert intervention.fingerprint(model) == before
    assert all(p.grad is None for p in model.parameters())


def test_pull_of_a_last_hidden_neuron_is_its_output_weight_times_its_mean_output(subset):
    model = checkpoints.load_pretrained("fc").model
    j = 2
    pull = units.pull(model, subset, units.Unit("fc_2", j), n=N)
    hidden = capture_activations(model, subset.images.unsqueeze(1).float() / 255.0)["relu_2"][:, j]  # (N,)
    torch.testing.assert_close(pull, model.output.weight.detach()[:, j] * hidden.mean(), rtol=1e-4, atol=1e-5)


def test_clamp_unit_keeps_urls_inside_the_network():
    model = models.build(models.TinyVGGConfig(), seed=0)
    assert units.clamp_unit(model, "conv_2_1", 3) == (units.Unit("conv_2_1", 3), False)
    assert units.clamp_unit(model, "relu_2_1", 3) == (units.Unit("conv_2_1", 3), False)  # ReLU of a map: the same map
    assert units.clamp_unit(model, "conv_2_1", 99) == (units.Unit("conv_2_1", 9), True)
    assert units.clamp_unit(model, "nonsense", -4) == (units.Unit("conv_1_1", 0), True)
    assert units.clamp_unit(model, "output", 0)[1] is True  # the scores are not hidden units


@pytest.fixture(scope="module")
def short_run(mnist):
    """A real FCNet run on MNIST: 60 steps of 64 digits, a snapshot every 20 (steps 0, 20, 40, 60)."""
    from digitrec.runs import TrainingRun
    from digitrec.spec import RunSpec
    from digitrec.train import TrainConfig

    spec = RunSpec(models.FCConfig(), TrainConfig(epochs=1, batch_size=64, max_steps=60), snapshot_every=20,
                   eval_every=30, train_size=3840)
    run = TrainingRun(spec, mnist)
    run.start()
    assert run.join(timeout=120)
    return run


def test_a_units_biography_forms_across_training(short_run, subset):
    """Rebuilt from its snapshots, the run's network at step 0 and at the end give a first-layer neuron different
    weights and different top digits: the biography at each snapshot is that network's, computed apart."""
    from digitrec.runs import model_at

    trained = short_run.trained_model()
    snaps = short_run.progress().snapshots
    assert [s.step for s in snaps] == [0, 20, 40, 60]
    first, last = model_at(trained, snaps[0]), model_at(trained, snaps[-1])
    torch.testing.assert_close(units.incoming_weights(first, units.Unit("fc_1", 0)),
                               snaps[0].first_layer[0].flatten())  # what the Train page's replay shows, too
    stats_first, stats_last = units.statistics(first, subset), units.statistics(last, subset)
    assert units.statistics(trained, subset)["fc_1"].peak.equal(stats_last["fc_1"].peak)
    changed = [u for u in range(16) if not torch.equal(units.top_digits(stats_first, units.Unit("fc_1", u))[0],
                                                       units.top_digits(stats_last, units.Unit("fc_1", u))[0])]
    assert len(changed) >= 8, changed  # training moved most neurons' favourite digits
    assert not torch.equal(units.incoming_weights(first, units.Unit("fc_2", 3)),
                           units.incoming_weights(last, units.Unit("fc_2", 3)))


def test_a_receptive_field_over_the_edge_is_drawn_up_to_the_edge_not_over_the_title():
    from digitrec.viz.units import image_grid

    images = torch.zeros(2, 28, 28)
    fig = image_grid(images, ["#1: 0.5", "#2: 0.4"], cols=2, boxes=[(-2, -2, 3, 3), (20, 24, 29, 31)])
    first, second = fig.layout.shapes
    left_of_second = 28 + max(1, 28 // 8)
    top = max(3, 28 // 3)  # the first row's images start below their titles
    assert (first.x0, first.y0) == (-0.5, top - 0.5)  # clipped at the image's top left corner
    assert (first.x1, first.y1) == (3.5, top + 3.5)  # the part inside the image as it was
    assert (second.x1, second.y1) == (left_of_second + 27.5, top + 27.5)  # clipped at the bottom right
    assert second.x0 == left_of_second + 23.5
