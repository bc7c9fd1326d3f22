"""TinyVGG's inside, piece by piece: the widgets of the convolutional explorer and of the lessons.

Every widget takes keyword-only arguments: ``key`` prefixes every Streamlit key
inside it (two copies can share a page), ``net``/``digit`` default to the
current ones, and the rest are plain values a lesson can write as text
(``::: widget conv_arithmetic layer=conv_2_1 channel=3``). The numbers come from
``digitrec.inspection`` and ``digitrec.conv_maths``, the figures from
``digitrec.viz.cnn``. With ``url=True`` (the explorer page) a widget keeps its
view choices in the address bar so a link reproduces the view.
"""

from __future__ import annotations


import pandas as pd
import streamlit as st
import torch
from torch import nn

from digitrec import conv_maths
from digitrec.errors import DigitrecError
from digitrec.inspection import (ACTIVATION_FORMULAS, activation, batchnorm_step, conv_step, layer_io, linear_step, pool_step,
                                 pool_step_of, relu)
from digitrec.viz import cnn as viz
from digitrec.viz.scales import SCOPES, symmetric_range
from streamlit_app import state
from streamlit_app.widgets.context import network_of_kind
from streamlit_app.widgets.softmax import softmax_explainer

PLAY_SECONDS = 0.6  # one window position per tick: slow enough to read the numbers change
# The overview draws at most this many maps per layer (a picker shows the others): every map
# is a chart trace, and a 256-channel network drawn whole cost ~40 s of server CPU a rerun.
MAX_OVERVIEW_MAPS = 16
MATCH_TOLERANCE = 1e-4  # |hand sum - layer output|: float32 sums in a different order differ by ~1e-6


# ---------------------------------------------------------------- helpers


def _layers(model: nn.Module, kind: type) -> list[str]:
    return [name for name, m in model.named_children() if isinstance(m, kind)]


def _url_value(name: str, url: bool) -> str | None:
    return st.query_params.get(name) if url else None


def _as_int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _set_url(url: bool, **params) -> None:
    """Write view choices into the address bar (only those that changed: each write costs a message)."""
    if not url:
        return
    for name, value in params.items():
        if st.query_params.get(name) != str(value):
            st.query_params[name] = str(value)


def _forget(*keys: str) -> None:
    """on_change callback: drop dependent choices so they take their new default."""
    for k in keys:
        st.session_state.pop(k, None)


def _seed(k: str, value) -> None:
    """A widget's first value. Widgets are then drawn without index/value, so session state alone
    decides (mixing both makes Streamlit warn)."""
    if k not in st.session_state:
        st.session_state[k] = value


def _clamp_state(k: str, low: int, high: int) -> None:
    """Keep a stored slider value inside [low, high] before the slider is drawn (its range changes with the layer)."""
    if k in st.session_state:
        value = _as_int(st.session_state[k], low)
        clamped = min(max(value, low), high)
        if clamped != st.session_state[k]:
            st.session_state[k] = clamped


def _argmax2d(t: torch.Tensor) -> tuple[int, int]:
    flat = int(t.argmax())
    return flat // t.shape[1], flat % t.shape[1]


def _fmt(v: float, digits: int = 3) -> str:
    """A number for LaTeX sums: negatives in brackets so 'a + (−b)' reads right."""
    s = f"{v:.{digits}f}"
    return f"({s})" if v < 0 else s


# ---------------------------------------------------------------- overview


def cnn_overview(*, key: str, net: state.Network | None = None, digit: state.Digit | None = None,
                 scope: str = "layer", url: bool = False) -> None:
    """Every layer's feature maps for the digit, with the colour-range scope switch and a legend.

    (Clicking a map to explain it is not offered: plotly heatmaps emit no selection
    events, so ``st.plotly_chart(on_select=...)`` never reports a click on them.)
    """
    net = network_of_kind(net, cnn=True)
    if net is None:
        return
    digit = digit or state.current_digit()
    k_scope = f"{key}_scope"
    if k_scope not in st.session_state:
        wanted = _url_value("scope", url) or str(scope)
        st.session_state[k_scope] = wanted if wanted in SCOPES else "layer"
    chosen = st.radio(
        "Colour range", SCOPES, key=k_scope, horizontal=True, format_func=viz.SCOPE_LABELS.get,
        help="The colours of every map run from blue (−R) through white (0) to red (+R). This sets R: "
             "each map's own largest |value|, its layer's, or the largest in the whole network.",
    )
    _set_url(url, scope=chosen)
    forward = viz.cnn_forward(net.model, digit.x)
    channels = max(m.shape[0] for m in forward.maps.values())
    shown = None
    if channels > MAX_OVERVIEW_MAPS:  # a wide network: a page of maps at a time
        pages = [range(lo, min(lo + MAX_OVERVIEW_MAPS, channels)) for lo in range(0, channels, MAX_OVERVIEW_MAPS)]
        shown = st.selectbox(
            f"Maps shown (this network has {channels} per layer)", pages, key=f"{key}_maps_{channels}",
            format_func=lambda r: f"maps {r.start}–{r.stop - 1}",
        )
    # Dead maps are measured once over the 10,000 test digits: seconds for TinyVGG, minutes
    # for a 256-channel network, which would hold the page (and the server) meanwhile.
    stats = state.relu_statistics(net) if channels <= MAX_OVERVIEW_MAPS else None  # None without MNIST too
    dead = {name: s.dead for name, s in stats.items()} if stats else None
    fig = viz.overview_figure(forward, chosen, dead=dead, maps=shown)
    st.plotly_chart(fig, key=f"{key}_fig", config={"displayModeBar": False})
    if dead and any(dead.values()):
        n_dead = sum(len(d) for d in dead.values())
        st.caption(
            f":material/block: **{n_dead} of the {sum(s.units for s in stats.values())} ReLU maps are dead**, marked "
            "*dead*: on every one of the 10,000 test digits their convolution is zero or negative everywhere, so "
            "ReLU outputs 0 and nothing after them ever hears from them (their pooled copy too, and the flattened "
            "numbers they feed are always 0). A dead ReLU gets no gradient either, so training cannot revive it."
        )
    rows = shown if shown is not None else range(channels)
    st.caption(
        f"Each column is one layer, each small square one feature map (rows: map {rows.start} to {rows.stop - 1}). "
        "Red cells are positive, "
        "blue negative, white zero; the input is the digit itself in grey. "
        + {
            "map": "Every map uses its own range, so you see each map's pattern but cannot compare maps.",
            "layer": "All maps of a layer share one range (±R above each column), so maps of a layer compare.",
            "network": "Every map shares one range, so you can compare layers: see how values grow in deeper layers.",
        }[chosen]
        + " Notice how ReLU columns have no blue and each pooling column is half the size. "
        "Hover over a map for its numbers."
    )


# ---------------------------------------------------------------- convolution arithmetic


def _conv_keys(key: str) -> dict[str, str]:
    names = ("layer", "map", "row", "col", "play", "play_start", "play_button", "stop_button")
    return {name: f"{key}_{name}" for name in names}


def conv_arithmetic(*, key: str, net: state.Network | None = None, digit: state.Digit | None = None,
                    layer: str = "conv_1_1", channel: int = 0, row: int = -1, col: int = -1,
                    url: bool = False) -> None:
    """One output value of a convolution as kernel × patch, summed, plus bias, with a Play button
    that slides the window along. row/col = -1: the map's most active position."""
    net = network_of_kind(net, cnn=True)
    if net is None:
        return
    digit = digit or state.current_digit()
    model = net.model
    convs = _layers(model, nn.Conv2d)
    k = _conv_keys(key)
    ss = st.session_state
    if k["layer"] not in ss:  # first draw: the address bar, else the arguments
        wanted = _url_value("layer", url) or str(layer)
        ss[k["layer"]] = wanted if wanted in convs else convs[0]
        ss[k["map"]] = _as_int(_url_value("map", url), _as_int(channel, 0))
        r, c = _as_int(_url_value("row", url), _as_int(row, -1)), _as_int(_url_value("col", url), _as_int(col, -1))
        if r >= 0 and c >= 0:
            ss[k["row"]], ss[k["col"]] = r, c
    if ss[k["layer"]] not in convs:
        ss[k["layer"]] = convs[0]
    left, right = st.columns(2)
    layer = left.selectbox("Convolution layer", convs, key=k["layer"], on_change=_forget, args=(k["row"], k["col"]),
                           help="conv_1_1 reads the digit; the later ones read the maps of the layer before.")
    conv: nn.Conv2d = dict(model.named_children())[layer]
    _clamp_state(k["map"], 0, conv.out_channels - 1)
    channel = right.selectbox("Output map (feature map)", list(range(conv.out_channels)), key=k["map"],
                              on_change=_forget, args=(k["row"], k["col"]))
    # Play runs only between the Play click and the next full rerun: the click sets "play_start" and
    # reruns the app, which starts the fragment's timer; timer ticks rerun only the fragment. Any other
    # full rerun (another widget, another page) stops it, so a hidden animation never keeps running.
    playing = bool(ss.pop(k["play_start"], False))
    ss[k["play"]] = playing
    st.fragment(_conv_position, run_every=PLAY_SECONDS if playing else None)(
        key=key, net=net, digit=digit, layer=layer, channel=int(channel), url=url)


def _conv_position(*, key: str, net: state.Network, digit: state.Digit, layer: str, channel: int, url: bool) -> None:
    """The position sliders, Play/Stop and the arithmetic; a fragment so Play reruns only this part."""
    k = _conv_keys(key)
    ss = st.session_state
    model = net.model
    conv: nn.Conv2d = dict(model.named_children())[layer]
    inp, out = layer_io(model, digit.x, layer)  # (1, C_in, H, W), (1, C_out, H', W')
    out_map = out[0, channel]  # (H', W')
    h, w = out_map.shape
    if k["row"] not in ss or k["col"] not in ss:
        ss[k["row"]], ss[k["col"]] = _argmax2d(out_map)
    _clamp_state(k["row"], 0, h - 1)
    _clamp_state(k["col"], 0, w - 1)
    playing = bool(ss.get(k["play"], False))
    if playing:  # slide one step along the row, then on to the next row
        r, c = ss[k["row"]], ss[k["col"]] + 1
        if c >= w:
            r, c = r + 1, 0
        if r >= h:  # reached the bottom-right corner: stop (and stop the timer with a full rerun)
            ss[k["play"]] = False
            st.rerun()
        ss[k["row"]], ss[k["col"]] = r, c

    c1, c2, c3 = st.columns([3, 3, 1], vertical_alignment="bottom")
    row = c1.slider("Output row", 0, h - 1, key=k["row"])
    col = c2.slider("Output column", 0, w - 1, key=k["col"])
    # Two buttons with their own keys: a click always means what its label said.
    if playing:
        if c3.button("Stop", key=k["stop_button"], width="stretch", icon=":material/pause:"):
            ss[k["play"]] = False
            st.rerun()  # a full rerun drops the timer
    elif c3.button("Play", key=k["play_button"], width="stretch", icon=":material/play_arrow:",
                   help="Slide the kernel one position to the right about twice a second, row after row."):
        ss[k["play_start"]] = True
        st.rerun()  # a full rerun starts the timer
    _set_url(url, layer=layer, map=channel, row=row, col=col)

    step = conv_step(model, digit.x, layer, channel, row, col)
    first = layer == _layers(model, nn.Conv2d)[0]
    c_in = conv.in_channels
    fig_col, out_col = st.columns([4, 1]) if c_in == 1 else st.columns([5, 1])
    with fig_col:
        st.plotly_chart(viz.conv_step_figure(inp[0], step, symmetric_range(conv.weight), ink=first),
                        key=f"{key}_step_fig", config={"displayModeBar": False})
    with out_col:
        st.plotly_chart(viz.output_map_figure(out_map, row, col, f"{layer} map {channel}"),
                        key=f"{key}_out_fig", config={"displayModeBar": False})
    sums = [float(v) for v in step.channel_sums]
    if c_in == 1:
        st.latex(rf"\textstyle\sum (\text{{patch}} \times \text{{kernel}}) + b = {_fmt(sums[0], 4)}"
                 rf" + \underbrace{{{_fmt(step.bias, 4)}}}_{{\text{{bias}}}}"
                 rf" = \mathbf{{{step.result:.4f}}}")
    else:
        half = (c_in + 1) // 2  # two lines: ten terms do not fit one
        first = " + ".join(_fmt(v) for v in sums[:half])
        rest = " + ".join(_fmt(v) for v in sums[half:])
        st.latex(rf"\begin{{aligned}}\textstyle\sum_{{c=0}}^{{{c_in - 1}}} \sum (\text{{patch}}_c \times \text{{kernel}}_c) + b"
                 rf" &= {first} \\ &\quad + {rest} + \underbrace{{{_fmt(step.bias)}}}_{{\text{{bias}}}}"
                 rf" \\ &= \mathbf{{{step.result:.4f}}}\end{{aligned}}")
    actual = float(out_map[row, col])
    m1, m2, m3 = st.columns([2, 2.4, 2.6])
    m1.metric("kernel × patch, summed, + bias", f"{step.result:.4f}")
    # Short enough for a lesson's narrower column (a longer label is cut off there).
    m2.metric(f"{layer}, map {channel}, row {row}, col {col}", f"{actual:.4f}",
              help=f"What {layer} itself output at this place of map {channel}, read during a normal forward pass "
                   "of the network.")
    if abs(step.result - actual) <= MATCH_TOLERANCE:
        m3.success("The hand-made sum is exactly what the layer computed.")
    else:  # a bug, not a user problem: say so plainly
        m3.warning(f"These differ by {abs(step.result - actual):.2e}: the explanation does not match the layer.")
    edge = " Here it hangs over the edge: the padding adds nothing (0 × weight = 0)." if (
        row < conv.padding[0] or col < conv.padding[0] or row >= h - conv.padding[0] or col >= w - conv.padding[0]) else ""
    st.caption(
        f"The green square is the {conv.kernel_size[0]}×{conv.kernel_size[1]} window the kernel looks at for output row {row}, column {col}; grey cells "
        f"around each input map are the zero padding.{edge} "
        "Each number of the patch is multiplied by the kernel's number at the same place; adding all products "
        + ("" if c_in == 1 else f"of all {c_in} input channels ")
        + "and the bias gives one number of the feature map. Press Play to slide the window along."
    )


# ---------------------------------------------------------------- ReLU


def _map_io(key: str, net: state.Network, digit: state.Digit, layer: str, right) -> tuple[int, int, torch.Tensor, torch.Tensor]:
    """The map picker beside the layer picker (a new map forgets the chosen cell), and that map's
    input and output at ``layer``: (channel, channels, (H, W) before, (H', W') after)."""
    before, after = layer_io(net.model, digit.x, layer)  # (1, C, H, W), (1, C, H', W')
    channels = before.shape[1]
    _clamp_state(f"{key}_map", 0, channels - 1)
    channel = right.selectbox("Feature map", list(range(channels)), key=f"{key}_map",
                              on_change=_forget, args=(f"{key}_row", f"{key}_col"))
    return channel, channels, before[0, channel], after[0, channel]


def _layer_picker(key: str, net: state.Network, kind: type, layer: str, channel, label: str):
    """A select box over the model's layers of ``kind`` (seeded with ``layer`` and ``channel``);
    returns the chosen layer and the column beside it, where the caller puts its map picker."""
    names = _layers(net.model, kind)
    if not names:  # a learner's own model may have none of this kind
        st.info(f"{net.label} has no layer of this kind; the overview above shows every layer it has.")
        return None, None
    _seed(f"{key}_layer", layer if layer in names else names[0])
    _seed(f"{key}_map", _as_int(channel, 0))
    left, right = st.columns(2)
    chosen = left.selectbox(label, names, key=f"{key}_layer", on_change=_forget, args=(f"{key}_row", f"{key}_col"))
    return chosen, right


def relu_detail(*, key: str, net: state.Network | None = None, digit: state.Digit | None = None,
                layer: str = "relu_1_1", channel: int = 0, row: int = -1, col: int = -1) -> None:
    """A feature map before and after ReLU, max(0, x) per cell, with a 3×3 region in numbers.
    row/col: the region's top-left cell; -1 puts it around the most negative cell."""
    net = network_of_kind(net, cnn=True)
    if net is None:
        return
    digit = digit or state.current_digit()
    layer, right = _layer_picker(key, net, _ACTIVATIONS, layer, channel, "Activation layer")
    if layer is None:
        return
    module = dict(net.model.named_children())[layer]
    if not isinstance(module, nn.ReLU):  # a learner's model: Sigmoid, Tanh, GELU, LeakyReLU
        _activation_detail(key, net, digit, layer, module, right)
        return
    channel, _, b, a = _map_io(key, net, digit, layer, right)  # (H, W) before and after
    h, w = b.shape
    size = min(3, h)
    if f"{key}_row" not in st.session_state:
        r, c = _as_int(row, -1), _as_int(col, -1)
        if r < 0 or c < 0:
            r, c = _argmax2d(-b)  # the most negative cell: ReLU has something to do there
            r, c = r - 1, c - 1
        st.session_state[f"{key}_row"], st.session_state[f"{key}_col"] = r, c
    _clamp_state(f"{key}_row", 0, h - size)
    _clamp_state(f"{key}_col", 0, w - size)
    s1, s2 = st.columns(2)
    r = s1.slider("Region top row", 0, h - size, key=f"{key}_row")
    c = s2.slider("Region left column", 0, w - size, key=f"{key}_col")
    st.plotly_chart(viz.relu_figure(b, a, r, c, size), key=f"{key}_fig", config={"displayModeBar": False})
    if not torch.equal(relu(b), a):  # a bug, not a user problem: say so plainly
        st.warning("The layer's output differs from max(0, x) of its input: the explanation does not match the layer.")
    zeroed = int((b < 0).sum())
    st.caption(
        f"ReLU keeps every positive number and replaces every negative one by 0: max(0, x), cell by cell. "
        f"Here {zeroed} of {h * w} cells ({zeroed / (h * w):.0%}) were negative and became 0 (crossed out). "
        "What is left is where the pattern was found *and* wherever blank paper gives a positive value: in "
        "the first convolution that is the map's bias, so a positive bias survives ReLU all over the empty "
        "paper; a deeper map gets on blank paper whatever the layers before it pass on."
    )
    region = pd.DataFrame(
        [[f"max(0, {float(b[i, j]):.3f}) = {float(a[i, j]):.3f}" for j in range(c, c + size)] for i in range(r, r + size)],
        index=[f"row {i}" for i in range(r, r + size)], columns=[f"col {j}" for j in range(c, c + size)],
    )
    st.markdown(f"**The green {size}×{size} region in numbers**")
    st.dataframe(region, key=f"{key}_table")


# ---------------------------------------------------------------- max pooling


def pool_detail(*, key: str, net: state.Network | None = None, digit: state.Digit | None = None,
                layer: str = "max_pool_1", channel: int = 0, row: int = -1, col: int = -1) -> None:
    """2×2 max pooling of one map: the window behind one output cell and its maximum.
    row/col: the output cell; -1 picks the map's largest output."""
    net = network_of_kind(net, cnn=True)
    if net is None:
        return
    digit = digit or state.current_digit()
    layer, right = _layer_picker(key, net, (nn.MaxPool2d, nn.AvgPool2d), layer, channel, "Pooling layer")
    if layer is None:
        return
    pool: nn.MaxPool2d = dict(net.model.named_children())[layer]
    if isinstance(pool, nn.AvgPool2d) or pool.stride != pool.kernel_size or pool.padding:
        _avg_pool_detail(key, net, digit, layer, pool, right)
        return
    size = pool.kernel_size if isinstance(pool.kernel_size, int) else pool.kernel_size[0]
    channel, channels, i_map, o_map = _map_io(key, net, digit, layer, right)  # (H, W), (H/2, W/2)
    oh, ow = o_map.shape
    if f"{key}_row" not in st.session_state:
        r, c = _as_int(row, -1), _as_int(col, -1)
        st.session_state[f"{key}_row"], st.session_state[f"{key}_col"] = (r, c) if r >= 0 and c >= 0 else _argmax2d(o_map)
    _clamp_state(f"{key}_row", 0, oh - 1)
    _clamp_state(f"{key}_col", 0, ow - 1)
    s1, s2 = st.columns(2)
    r = s1.slider("Output row", 0, oh - 1, key=f"{key}_row")
    c = s2.slider("Output column", 0, ow - 1, key=f"{key}_col")
    step = pool_step(i_map, r, c, size)
    st.plotly_chart(viz.pool_figure(i_map, o_map, r, c, step, size), key=f"{key}_fig", config={"displayModeBar": False})
    values = ", ".join(f"{float(v):.3f}" for v in step.window.flatten())
    st.latex(rf"\max({values}) = \mathbf{{{step.result:.3f}}}")
    ih, iw = i_map.shape
    st.caption(
        f"Max pooling cuts the {ih}×{iw} map into {size}×{size} windows and keeps only the largest number of each: "
        f"{ih * iw} numbers in, {oh * ow} out per map ({channels * ih * iw:,} → {channels * oh * ow:,} for the layer). "
        f"Three of every four numbers are dropped, yet a feature found anywhere in a window survives. "
        f"The layer's output here is {float(o_map[r, c]):.3f}, the star marks where it came from."
    )


_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.GELU)


def _activation_detail(key: str, net: state.Network, digit: state.Digit, layer: str, module: nn.Module, right) -> None:
    """An activation other than ReLU on one map: before and after, its formula, one cell in numbers."""
    before, after = layer_io(net.model, digit.x, layer)  # (1, C, H, W) each
    channels = before.shape[1]
    _clamp_state(f"{key}_map", 0, channels - 1)
    channel = right.selectbox("Feature map", list(range(channels)), key=f"{key}_map")
    b, a = before[0, channel], after[0, channel]  # (H, W)
    kind = type(module).__name__
    st.plotly_chart(viz.relu_figure(b, a, 0, 0, 1, titles=(f"before {kind}", f"after {kind}")),
                    key=f"{key}_fig", config={"displayModeBar": False})
    st.latex(ACTIVATION_FORMULAS[kind])
    r, c = _argmax2d(-b)
    st.markdown(f"The same formula for every cell; the most negative one (row {r}, col {c}): "
                f"**{float(b[r, c]):.4f} → {float(a[r, c]):.4f}**.")
    if not torch.allclose(activation(module, b), a, atol=1e-5):
        st.warning("The layer's output differs from the formula: the explanation does not match the layer.")


def _avg_pool_detail(key: str, net: state.Network, digit: state.Digit, layer: str, pool: nn.Module, right) -> None:
    """Average (or overlapping max) pooling: the window behind one output cell and its mean or max."""
    inp, out = layer_io(net.model, digit.x, layer)  # (1, C, H, W), (1, C, H', W')
    channels = inp.shape[1]
    _clamp_state(f"{key}_map", 0, channels - 1)
    channel = right.selectbox("Feature map", list(range(channels)), key=f"{key}_map")
    i_map, o_map = inp[0, channel], out[0, channel]
    oh, ow = o_map.shape
    _seed(f"{key}_row", _argmax2d(o_map)[0])
    _seed(f"{key}_col", _argmax2d(o_map)[1])
    _clamp_state(f"{key}_row", 0, oh - 1)
    _clamp_state(f"{key}_col", 0, ow - 1)
    s1, s2 = st.columns(2)
    r = s1.slider("Output row", 0, oh - 1, key=f"{key}_row")
    c = s2.slider("Output column", 0, ow - 1, key=f"{key}_col")
    step = pool_step_of(pool, i_map, r, c)
    size = step.window.shape[0]
    st.plotly_chart(viz.pool_figure(i_map, o_map, r, c, step, size), key=f"{key}_fig", config={"displayModeBar": False})
    values = " + ".join(f"{float(v):.3f}" for v in step.window.flatten())
    is_avg = isinstance(pool, nn.AvgPool2d)
    if is_avg:
        st.latex(rf"\tfrac{{1}}{{{size * size}}}({values}) = \mathbf{{{step.result:.3f}}}")
    else:
        st.latex(rf"\max({values.replace(' + ', ', ')}) = \mathbf{{{step.result:.3f}}}")
    st.caption(
        f"{'Average' if is_avg else 'Max'} pooling looks at {size}×{size} windows and keeps "
        f"{'their mean: every number counts, so a faint feature spread over the window survives too' if is_avg else 'the largest number of each'}. "
        f"The layer's own output here is {float(o_map[r, c]):.3f}."
    )
    if abs(step.result - float(o_map[r, c])) > MATCH_TOLERANCE:
        st.warning("The layer's output differs from the formula: the explanation does not match the layer.")


# ---------------------------------------------------------------- batch norm


def batchnorm_detail(*, key: str, net: state.Network | None = None, digit: state.Digit | None = None,
                     layer: str = "", channel: int = 0, row: int = -1, col: int = -1) -> None:
    """BatchNorm2d on one map: before and after, and γ(x − μ)/√(σ² + ε) + β for one cell in numbers,
    with the channel's running statistics. row/col: the cell; -1 picks the map's largest |input|."""
    net = network_of_kind(net, cnn=True)
    if net is None:
        return
    digit = digit or state.current_digit()
    layer, right = _layer_picker(key, net, nn.BatchNorm2d, layer, channel, "Batch-norm layer")
    if layer is None:
        return
    module = dict(net.model.named_children())[layer]
    channel, _, b, a = _map_io(key, net, digit, layer, right)  # (H, W) before and after
    h, w = b.shape
    if f"{key}_row" not in st.session_state:
        r, c = _as_int(row, -1), _as_int(col, -1)
        st.session_state[f"{key}_row"], st.session_state[f"{key}_col"] = (r, c) if r >= 0 and c >= 0 else _argmax2d(b.abs())
    _clamp_state(f"{key}_row", 0, h - 1)
    _clamp_state(f"{key}_col", 0, w - 1)
    s1, s2 = st.columns(2)
    r = s1.slider("Row", 0, h - 1, key=f"{key}_row")
    c = s2.slider("Column", 0, w - 1, key=f"{key}_col")
    st.plotly_chart(viz.relu_figure(b, a, r, c, 1, titles=("before batch norm", "after batch norm")),
                    key=f"{key}_fig", config={"displayModeBar": False})
    bn = batchnorm_step(module, channel)
    x, y = float(b[r, c]), float(a[r, c])
    st.latex(bn.latex(x))
    st.markdown(
        f"Map {channel} is shifted by the mean μ = {bn.mean:.3f} and divided by the spread √(σ² + ε) = "
        f"{(bn.var + bn.eps) ** 0.5:.3f} it had over the training digits, then scaled by its learned γ = {bn.gamma:.3f} "
        f"and shifted by β = {bn.beta:.3f}: every cell of the map gets x × {bn.scale:.3f} + ({bn.shift:.3f}). "
        f"The layer's own output at row {r}, column {c} is **{y:.4f}**."
    )
    if not torch.allclose(bn.apply(b.double()).float(), a, atol=MATCH_TOLERANCE):
        st.warning("The layer's output differs from the formula: the explanation does not match the layer.")


# ---------------------------------------------------------------- filters


def cnn_filters(*, key: str, net: state.Network | None = None, layer: str = "conv_1_1") -> None:
    """A conv layer's 3×3 kernels as small images on the weight scale."""
    net = network_of_kind(net, cnn=True)
    if net is None:
        return
    convs = _layers(net.model, nn.Conv2d)
    _seed(f"{key}_layer", layer if layer in convs else convs[0])
    layer = st.selectbox("Convolution layer", convs, key=f"{key}_layer")
    conv: nn.Conv2d = dict(net.model.named_children())[layer]
    weight, bias = conv.weight.detach(), conv.bias.detach()
    st.plotly_chart(viz.filters_figure(weight, bias, layer), key=f"{key}_fig", config={"displayModeBar": False})
    o, i = weight.shape[:2]
    st.caption(
        f"{layer} has {o} kernels, one per output map; each holds one {weight.shape[2]}×{weight.shape[3]} slice "
        f"per input map ({i} here): {weight.numel():,} weights and {o} biases in all. Orange weights reward ink "
        "(or activity) under them, purple ones punish it: "
        + ("a kernel with orange on one side and purple on the other finds edges." if i == 1 else
           "row *m* shows which patterns of each earlier map feed map *m*.")
    )


# ---------------------------------------------------------------- the end: flatten, linear, softmax


def cnn_output(*, key: str, net: state.Network | None = None, digit: state.Digit | None = None, top: int = 10) -> None:
    """Flatten → linear → softmax in numbers, and the flattened features that pushed the winner up most."""
    net = network_of_kind(net, cnn=True)
    if net is None:
        return
    digit = digit or state.current_digit()
    forward = viz.cnn_forward(net.model, digit.x)
    c, h, w = forward.flat_shape
    st.markdown(
        f"The last pooling layer's {c} maps of {h}×{w} are read row by row into one list of "
        f"{c * h * w} numbers (*flatten*). The output layer gives each digit a score: the sum of those numbers, "
        "each times its own weight, plus a bias. Softmax turns the ten scores into probabilities."
    )
    softmax_explainer(net, digit, key=f"{key}_softmax")
    pred = forward.predicted
    linears = _layers(net.model, nn.Linear)
    step = linear_step(net.model, digit.x, linears[-1], pred)
    contribs = viz.top_contributions(step, forward.flat_shape, max(1, _as_int(top, 10)))
    st.markdown(f"**Which of the {c * h * w} features pushed the score of {pred} up most** (value × weight)")
    st.plotly_chart(viz.contributions_figure(contribs, pred), key=f"{key}_contrib_fig",
                    config={"displayModeBar": False})
    st.caption(
        f"All {c * h * w} products add up to {float(step.products.sum()):.3f}; plus the bias {step.bias:.3f} "
        f"that is the score z = {step.result:.3f} of digit {pred}. A bar names the map and the (row, column) "
        f"of the {h}×{w} grid the feature came from."
    )


# ---------------------------------------------------------------- sandbox: padding, stride, kernel size


def conv_sandbox(*, key: str, digit: state.Digit | None = None, kernel: str = "edge", size: int = 3,
                 padding: int = 0, stride: int = 1) -> None:
    """Slide a hand-made kernel over the current digit with your own kernel size, padding and stride."""
    digit = digit or state.current_digit()
    names = list(conv_maths.KERNEL_NAMES)
    _seed(f"{key}_kernel", kernel if kernel in names else names[0])
    _seed(f"{key}_size", min(max(_as_int(size, 3), 1), conv_maths.MAX_KERNEL))
    _seed(f"{key}_padding", min(max(_as_int(padding, 0), 0), conv_maths.MAX_PADDING))
    _seed(f"{key}_stride", min(max(_as_int(stride, 1), 1), conv_maths.MAX_STRIDE))
    c1, c2, c3, c4 = st.columns(4)
    name = c1.selectbox("Kernel", names, key=f"{key}_kernel")
    k = c2.slider("Kernel size k", 1, conv_maths.MAX_KERNEL, key=f"{key}_size")
    p = c3.slider("Padding p", 0, conv_maths.MAX_PADDING, key=f"{key}_padding")
    s = c4.slider("Stride s", 1, conv_maths.MAX_STRIDE, key=f"{key}_stride")
    n = digit.pixels.shape[0]
    try:
        g = conv_maths.geometry(n, k, p, s)
        weights = conv_maths.make_kernel(name, k)
        output = conv_maths.convolve(digit.pixels, weights, p, s)  # (out, out)
    except DigitrecError as e:
        st.warning(str(e))
        return
    exact = f"{g.exact:g}" if g.fits else f"{g.exact:.2f}"
    st.latex(
        rf"\text{{output size}} = \frac{{n + 2p - k}}{{s}} + 1 = \frac{{{n} + 2\cdot{p} - {k}}}{{{s}}} + 1 = {exact}"
        + ("" if g.fits else rf" \;\rightarrow\; {g.out}")
    )
    if not g.fits:
        st.warning(
            f"Stride {s} does not fit: ({n} + 2·{p} − {k}) / {s} = {g.span / s:.2f} is not a whole number, so the "
            f"last window would hang over the edge. CNN Explainer calls this stride invalid; PyTorch rounds down and "
            f"ignores the last {g.leftover} row(s) and column(s) (shaded red). Pick a stride that divides {g.span}."
        )
    st.plotly_chart(viz.sandbox_figure(digit.pixels, weights, output, g), key=f"{key}_fig",
                    config={"displayModeBar": False})
    st.caption(
        f"A {k}×{k} kernel moved {s} cell(s) at a time over the {n}×{n} digit with {p} ring(s) of zeros (grey) "
        f"stops {g.out}×{g.out} times: that is the output's size. The green square is the first window"
        + (", the dotted one the second." if s > 1 and g.out > 1 else ".")
        + " Padding keeps the size up and lets the kernel look at the border; a bigger stride shrinks the output fast."
    )
