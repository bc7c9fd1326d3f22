"""models: shapes, forward passes, presets, configuration checks and the dict round trip.

(describe(), MACs and activation capture are tested in test_inspection / test_describe.)
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from digitrec import models
from digitrec.errors import DigitrecError, InvalidConfig


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- shapes and parameter counts, worked out by hand -------------------------------------


def test_fcnet_default_is_784_16_16_10_with_hand_counted_parameters(fcnet):
    assert isinstance(fcnet, models.FCNet)
    assert (fcnet.fc_1.in_features, fcnet.fc_1.out_features) == (784, 16)
    assert (fcnet.fc_2.in_features, fcnet.fc_2.out_features) == (16, 16)
    assert (fcnet.output.in_features, fcnet.output.out_features) == (16, 10)
    # 784*16 + 16  +  16*16 + 16  +  16*10 + 10
    assert _params(fcnet) == 12560 + 272 + 170 == 13002


def test_no_hidden_layer_is_softmax_regression():
    model = models.build(models.LINEAR, seed=0)
    assert models.LINEAR == models.FCConfig(hidden=())
    assert [n for n, _ in model.named_children()] == ["flatten", "output"]
    x = torch.rand(3, 1, 28, 28)
    expected = x.reshape(3, 784) @ model.output.weight.T + model.output.bias  # one weighted sum per class
    assert torch.allclose(model(x), expected, atol=1e-6)
    assert models.count_params(model) == 784 * 10 + 10


def test_fcnet_hidden_widths_are_configurable():
    model = models.build(models.FCConfig(hidden=(128, 64)))
    # 784*128 + 128  +  128*64 + 64  +  64*10 + 10
    assert _params(model) == 100480 + 8256 + 650
    one = models.build(models.FCConfig(hidden=(7,)))
    assert [n for n, _ in one.named_children()] == ["flatten", "fc_1", "relu_1", "output"]
    assert one.output.in_features == 7


def test_tinyvgg_default_shapes_and_hand_counted_parameters(tinyvgg):
    assert isinstance(tinyvgg, models.TinyVGG)
    # conv_1_1: 1*9*10 + 10; three 10->10 convs: 10*9*10 + 10 each; output: 10*7*7 -> 10.
    assert _params(tinyvgg) == 100 + 3 * 910 + (490 * 10 + 10) == 7740
    assert tinyvgg.output.in_features == 10 * 7 * 7


@pytest.mark.parametrize(
    "channels, padding, side",
    [(10, 1, 7), (10, 0, 4), (4, 1, 7), (3, 0, 4)],
    # padding 1: 28 -> 28 -> 28 -> 14 -> 14 -> 14 -> 7
    # padding 0: 28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4
)
def test_tinyvgg_flatten_width_follows_the_configuration(channels, padding, side):
    model = models.build(models.TinyVGGConfig(channels=channels, padding=padding), seed=0)
    assert model.output.in_features == channels * side * side
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("name", sorted(models.PRESETS))
@pytest.mark.parametrize("batch", [1, 5])
def test_every_preset_maps_a_batch_of_digits_to_ten_logits(name, batch):
    model = models.build(models.PRESETS[name], seed=0)
    x = torch.rand(batch, 1, 28, 28)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (batch, 10)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(models.PRESETS))
def test_each_digit_is_computed_independently_of_its_batch(name):
    model = models.build(models.PRESETS[name], seed=0)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


# --- forward is exactly the named children, in order ------------------------------------


@pytest.mark.parametrize("name", sorted(models.PRESETS))
def test_forward_equals_the_named_children_run_in_order(name):
    """The explorers and Captum rely on every operation being a child, in forward order."""
    model = models.build(models.PRESETS[name], seed=0)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
        y = x
        for _, child in model.named_children():
            y = child(y)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)


def test_fcnet_forward_by_hand(fcnet):
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        h = x.reshape(2, 784)
        h = torch.relu(h @ fcnet.fc_1.weight.T + fcnet.fc_1.bias)
        h = torch.relu(h @ fcnet.fc_2.weight.T + fcnet.fc_2.bias)
        expected = h @ fcnet.output.weight.T + fcnet.output.bias
        torch.testing.assert_close(fcnet(x), expected)


def test_tinyvgg_forward_by_hand(tinyvgg):
    m = tinyvgg
    x = torch.rand(2, 1, 28, 28)
    f = nn.functional
    with torch.no_grad():
        h = f.relu(f.conv2d(x, m.conv_1_1.weight, m.conv_1_1.bias, padding=1))
        h = f.relu(f.conv2d(h, m.conv_1_2.weight, m.conv_1_2.bias, padding=1))
        h = f.max_pool2d(h, 2)
        h = f.relu(f.conv2d(h, m.conv_2_1.weight, m.conv_2_1.bias, padding=1))
        h = f.relu(f.conv2d(h, m.conv_2_2.weight, m.conv_2_2.bias, padding=1))
        h = f.max_pool2d(h, 2)
        assert h.shape == (2, 10, 7, 7)
        expected = f.linear(h.flatten(1), m.output.weight, m.output.bias)
        torch.testing.assert_close(m(x), expected)


# --- build, seeds, presets --------------------------------------------------------------


@pytest.mark.parametrize("config", [models.FCConfig(), models.TinyVGGConfig()])
def test_build_with_a_seed_is_reproducible_and_the_seed_matters(config):
    a = models.build(config, seed=0).state_dict()
    b = models.build(config, seed=0).state_dict()
    c = models.build(config, seed=1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_build_keeps_the_configuration_on_the_model():
    config = models.TinyVGGConfig(channels=4, padding=0)
    assert models.build(config).config is config


def test_build_rejects_something_that_is_not_a_model_configuration():
    with pytest.raises(InvalidConfig, match="Unknown model configuration"):
        models.build({"architecture": "fcnet"})  # a dict, not a config


def test_presets_are_the_three_lesson_networks():
    assert set(models.PRESETS) == {"fc", "fc-wide", "cnn"}
    assert models.PRESETS["fc"] == models.FCConfig(hidden=(16, 16))
    assert models.PRESETS["fc-wide"] == models.FCConfig(hidden=(128, 64))
    assert models.PRESETS["cnn"] == models.TinyVGGConfig(channels=10, padding=1)
    assert isinstance(models.build(models.PRESETS["fc"]), models.FCNet)
    assert isinstance(models.build(models.PRESETS["fc-wide"]), models.FCNet)
    assert isinstance(models.build(models.PRESETS["cnn"]), models.TinyVGG)


def test_display_names():
    assert models.display_name(models.FCConfig()) == "FCNet 784-16-16-10"
    assert models.display_name(models.FCConfig(hidden=(128, 64))) == "FCNet 784-128-64-10"
    assert models.display_name(models.TinyVGGConfig()) == "TinyVGG (10 channels)"


# --- configuration checks ----------------------------------------------------------------


def test_configs_are_frozen_and_hashable():
    config = models.FCConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hidden = (1,)  # type: ignore[misc]
    assert hash(models.FCConfig(hidden=[16, 16])) == hash(config)  # a list becomes a tuple
    assert models.FCConfig(hidden=[16, 16]).hidden == (16, 16)
    assert {models.TinyVGGConfig(), models.TinyVGGConfig()} == {models.TinyVGGConfig()}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hidden": (0,)},
        {"hidden": (16, -1)},
        {"hidden": (4097,)},
        {"hidden": (16.5,)},  # not a whole number
        {"hidden": "16"},  # a string would otherwise read as widths (1, 6)
        {"hidden": 16},  # a bare number, not a list of widths
    ],
)
def test_fcconfig_rejects_bad_widths_with_a_sentence(kwargs):
    with pytest.raises(InvalidConfig) as info:
        models.FCConfig(**kwargs)
    message = str(info.value)
    assert message.startswith("Hidden widths must be") and message.endswith(".")


def test_fcconfig_accepts_the_edges_of_its_range():
    assert models.FCConfig(hidden=(1, 4096)).hidden == (1, 4096)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"channels": 0}, "Channels must be from 1 to 256"),
        ({"channels": 257}, "Channels must be from 1 to 256"),
        ({"padding": 2}, "Padding must be 0 or 1"),
        ({"padding": -1}, "Padding must be 0 or 1"),
        ({"channels": 10.5}, "whole numbers"),
        ({"padding": "1"}, "whole numbers"),
    ],
)
def test_tinyvggconfig_rejects_bad_settings_with_a_sentence(kwargs, words):
    with pytest.raises(InvalidConfig, match=words) as info:
        models.TinyVGGConfig(**kwargs)
    assert str(info.value).endswith(".")


def test_invalid_config_is_a_user_facing_error():
    assert issubclass(InvalidConfig, DigitrecError)


# --- config_to_dict / config_from_dict ---------------------------------------------------


def test_config_to_dict_is_plain_json_with_the_architecture():
    assert models.config_to_dict(models.FCConfig()) == {"architecture": "fcnet", "hidden": [16, 16]}
    assert models.config_to_dict(models.TinyVGGConfig(channels=4, padding=0)) == {
        "architecture": "tinyvgg",
        "channels": 4,
        "padding": 0,
    }


@pytest.mark.parametrize(
    "config",
    [*models.PRESETS.values(), models.FCConfig(hidden=(3,)), models.TinyVGGConfig(channels=1, padding=0)],
)
def test_config_round_trips_through_json(config):
    text = json.dumps(models.config_to_dict(config))
    back = models.config_from_dict(json.loads(text))
    assert back == config
    assert type(back) is type(config)


def test_config_from_dict_does_not_change_its_argument():
    d = {"architecture": "fcnet", "hidden": [8]}
    models.config_from_dict(d)
    assert d == {"architecture": "fcnet", "hidden": [8]}


def test_config_from_dict_fills_missing_settings_with_defaults():
    assert models.config_from_dict({"architecture": "tinyvgg"}) == models.TinyVGGConfig()


@pytest.mark.parametrize(
    "d, words",
    [
        ({"hidden": [16]}, "Unknown architecture"),  # missing architecture
        ({"architecture": "resnet"}, "Unknown architecture"),
        ({"architecture": "fcnet", "hidden": [16], "dropout": 0.5}, "Unknown fcnet settings"),
        ({"architecture": "tinyvgg", "kernel": 5}, "Unknown tinyvgg settings"),
        ({"architecture": "fcnet", "hidden": 16}, "Hidden widths"),  # was a bare TypeError
        ({"architecture": "fcnet", "hidden": "16"}, "Hidden widths"),  # was silently (1, 6)
        ({"architecture": "fcnet", "hidden": [0]}, "Hidden widths"),
        ({"architecture": "tinyvgg", "channels": "ten"}, "whole numbers"),
        ({"architecture": "tinyvgg", "channels": 10.5}, "whole numbers"),  # was accepted
    ],
)
def test_config_from_dict_raises_invalid_config_for_anything_unknown(d, words):
    with pytest.raises(InvalidConfig, match=words):
        models.config_from_dict(d)


# --- the activation switch (the lab's "linear ceiling") --------------------------------------------


def test_fcnet_without_activation_has_no_relu_and_is_one_linear_map():
    config = models.FCConfig(activation="none")
    model = models.build(config, seed=0)
    names = [name for name, _ in model.named_children()]
    assert names == ["flatten", "fc_1", "fc_2", "output"]
    # Stacked Linear layers without ReLU collapse into one: W = W3 W2 W1, b = W3 (W2 b1 + b2) + b3.
    w1, b1 = model.fc_1.weight, model.fc_1.bias
    w2, b2 = model.fc_2.weight, model.fc_2.bias
    w3, b3 = model.output.weight, model.output.bias
    x = torch.rand(5, 1, 28, 28)
    by_hand = x.flatten(1) @ (w3 @ w2 @ w1).T + (w3 @ (w2 @ b1 + b2) + b3)
    torch.testing.assert_close(model(x), by_hand, rtol=1e-4, atol=1e-5)
    assert models.display_name(config) == "FCNet 784-16-16-10 (no activation)"
    # The same parameters as the ReLU network: only the bends are gone.
    assert models.count_params(model) == models.count_params(models.build(models.FCConfig()))


def test_activation_round_trips_and_old_configs_read_as_relu():
    config = models.FCConfig(activation="none")
    assert models.config_from_dict(models.config_to_dict(config)) == config
    assert models.config_from_dict({"architecture": "fcnet", "hidden": [16, 16]}).activation == "relu"
    assert "activation" not in models.config_to_dict(models.FCConfig())  # ReLU checkpoints are unchanged
    with pytest.raises(InvalidConfig, match="activation must be one of relu, none"):
        models.FCConfig(activation="tanh")


# --- the presets are two layer specifications ---------------------------------------------


def _old_fcnet_forward(t: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """FCNet's forward as its own class wrote it before it became a spec, from the raw tensors."""
    import torch.nn.functional as F

    x = x.flatten(1)  # (B, 784)
    i = 1
    while f"fc_{i}.weight" in t:
        x = F.relu(F.linear(x, t[f"fc_{i}.weight"], t[f"fc_{i}.bias"]))  # (B, hidden[i-1])
        i += 1
    return F.linear(x, t["output.weight"], t["output.bias"])  # (B, 10)


def _old_tinyvgg_forward(t: dict[str, torch.Tensor], x: torch.Tensor, padding: int) -> torch.Tensor:
    import torch.nn.functional as F

    for block in (1, 2):
        for conv in (1, 2):
            key = f"conv_{block}_{conv}"
            x = F.relu(F.conv2d(x, t[f"{key}.weight"], t[f"{key}.bias"], padding=padding))
        x = F.max_pool2d(x, 2)  # (B, C, 14, 14), then (B, C, 7, 7)
    return F.linear(x.flatten(1), t["output.weight"], t["output.bias"])  # (B, 10)


@pytest.mark.parametrize("key", ["fc", "cnn", "linear"])
def test_shipped_checkpoints_load_as_specs_with_the_old_classes_outputs(key, mnist):
    """Each shipped checkpoint loads into the SpecNet its preset's spec builds, and on 100 real test
    digits gives the outputs of the old FCNet/TinyVGG classes, recomputed here with torch.nn.functional."""
    import safetensors.torch

    from digitrec import checkpoints
    from digitrec.layers import SpecNet

    ck = checkpoints.load_pretrained(key)
    assert isinstance(ck.model, SpecNet) and ck.model.spec == models.spec_of(ck.config)
    raw = safetensors.torch.load_file(checkpoints.PRETRAINED[key])
    x = mnist.test.images[:100].unsqueeze(1).float() / 255.0  # (100, 1, 28, 28)
    with torch.inference_mode():
        got = ck.model(x)
        if isinstance(ck.config, models.TinyVGGConfig):
            want = _old_tinyvgg_forward(raw, x, ck.config.padding)
        else:
            want = _old_fcnet_forward(raw, x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert (got.argmax(1) == mnist.test.labels[:100]).float().mean() > 0.8  # real digits, read well


def test_preset_specs_keep_the_layer_names_every_explorer_uses():
    fc = models.FCConfig(hidden=(16, 16)).spec()
    assert fc.text() == "flatten linear(16) relu linear(16) relu linear(10)"
    assert [n for n, _ in models.build(models.FCConfig()).named_children()] == [
        "flatten", "fc_1", "relu_1", "fc_2", "relu_2", "output"]
    assert models.TinyVGGConfig().spec().text() == (
        "conv3x3(10,p=1) relu conv3x3(10,p=1) relu maxpool2 conv3x3(10,p=1) relu conv3x3(10,p=1) relu maxpool2 "
        "flatten linear(10)")
    assert [n for n, _ in models.build(models.TinyVGGConfig()).named_children()] == [
        "conv_1_1", "relu_1_1", "conv_1_2", "relu_1_2", "max_pool_1",
        "conv_2_1", "relu_2_1", "conv_2_2", "relu_2_2", "max_pool_2", "flatten", "output"]
    # The spec of a preset builds the same network, weights and all, as the preset's class.
    for config in (models.FCConfig(hidden=(32,), activation="none"), models.TinyVGGConfig(channels=4, padding=0)):
        a, b = models.build(config, seed=3), models.build(models.spec_of(config), seed=3)
        assert a.state_dict().keys() == b.state_dict().keys()
        assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
