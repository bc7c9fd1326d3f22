"""Widgets of the fully connected network, for the /fc page and the lessons.

Each takes keyword-only arguments: ``key`` prefixes every Streamlit key inside
it (two copies can live on one page), ``net`` and ``digit`` default to the
current ones, and the rest are plain values a lesson can pass from text, e.g.
``::: widget fc_neuron layer=fc_2 neuron=3``. The numbers come from
``digitrec.fc_maths`` / ``digitrec.inspection`` and the figures from
``digitrec.viz.fc``; nothing here computes or draws on its own.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
import torch

from digitrec import fc_maths
from digitrec.inspection import ACTIVATION_FORMULAS, ACTIVATION_KINDS, activation, batchnorm_step
from digitrec.data import IMAGE_SIZE
from digitrec.inspection import capture_activations, relu
from digitrec.viz import fc as fc_viz
from digitrec.viz.scales import symmetric_range
from streamlit_app import state
from streamlit_app.widgets.softmax import softmax_explainer

MINUS = "\u2212"  # a real minus sign reads better than a hyphen in formulas


def _signed(v: float, places: int = 4) -> str:
    """-0.45 -> '−0.4500', 0.45 -> '+0.4500'."""
    return f"{v:+.{places}f}".replace("-", MINUS)


def _num(v: float, places: int = 4) -> str:
    return f"{v:.{places}f}".replace("-", MINUS)


def _fc_net(net: state.Network | None) -> state.Network | None:
    """The given network, else the current one if it is an FCNet, else the first FCNet; None (with a note) if none."""
    if net is None:
        chosen = state.network_of_kind(cnn=False)
        if chosen is None:
            st.info("No fully connected network is loaded. Run `make weights` to rebuild the pretrained weights.")
        return chosen
    if net.is_cnn:
        st.info(f"{net.label} is a convolutional network; this view explains fully connected ones. "
                "Pick an FCNet in the sidebar.")
        return None
    return net


# ---------------------------------------------------------------- lesson 1: the digit is numbers


def digit_numbers(*, key: str, digit: state.Digit | None = None, height: int = 640) -> None:
    """The current digit as its 28 x 28 grid of grey values, each number printed in its cell."""
    digit = digit or state.current_digit()
    st.plotly_chart(fc_viz.digit_numbers_figure(digit.pixels, height=height), key=f"{key}_numbers")
    inked = int((digit.pixels > 0).sum())
    st.caption(
        f"This is all a network ever receives: {IMAGE_SIZE} × {IMAGE_SIZE} = {IMAGE_SIZE**2} numbers, "
        "0 for black paper up to 1 for full ink (blank cells are 0). "
        f"Only {inked} of them are not zero for this digit. There are no strokes or shapes in it, only numbers: "
        "hover over a cell to read its exact value."
    )


# ---------------------------------------------------------------- flattening


def flatten_view(*, key: str, digit: state.Digit | None = None, row: int = 14, col: int = 14) -> None:
    """The 28 x 28 grid read row by row into 784 numbers, with one pixel's neighbours followed."""
    digit = digit or state.current_digit()
    c1, c2 = st.columns(2)
    row = c1.slider("Image row to follow", 0, IMAGE_SIZE - 1, min(max(row, 0), IMAGE_SIZE - 1), key=f"{key}_row")
    col = c2.slider("Pixel in that row (column)", 0, IMAGE_SIZE - 1, min(max(col, 0), IMAGE_SIZE - 1),
                    key=f"{key}_col")
    st.plotly_chart(fc_viz.flatten_figure(digit.pixels, row=row, col=col), key=f"{key}_fig")
    here = row * IMAGE_SIZE + col
    st.markdown(
        f"`nn.Flatten` reads the grid **row by row, like a page of text**: row 0 becomes positions 0–27, "
        f"row 1 positions 28–55, and pixel (row *r*, column *c*) lands at position 28·*r* + *c*. "
        f"The framed row {row} became positions {row * IMAGE_SIZE}–{row * IMAGE_SIZE + IMAGE_SIZE - 1}; "
        f"pixel ({row}, {col}) is number {here}."
    )
    st.info(
        "**What is lost: the neighbourhood.** The pixels left and right of the green one stay next to it, "
        f"but the ones just above and below are now **{IMAGE_SIZE} places away** "
        f"({here - IMAGE_SIZE} and {here + IMAGE_SIZE}). The next layer gives each of the 784 positions its own "
        "weight and is never told which positions were neighbours: it would learn just as well if the pixels were "
        "shuffled (the same way for every digit). A convolutional network keeps the grid, and with it this "
        "information."
    )


# ---------------------------------------------------------------- the step-through


def _move(state_key: str, delta: int, count: int) -> None:
    st.session_state[state_key] = min(max(st.session_state[state_key] + delta, 1), count)


def fc_forward_steps(
    *, key: str, net: state.Network | None = None, digit: state.Digit | None = None, step: int = 1,
    url: bool = False,
) -> None:
    """The forward pass one step at a time: Previous / Next buttons and a slider that stay in sync.

    ``step`` is the first step shown (1-based). With ``url`` the step is read
    from and written to the link (``?step=3``), so a shared link opens at it.
    """
    net = _fc_net(net)
    if net is None:
        return
    digit = digit or state.current_digit()
    steps = fc_maths.forward_steps(net.model, digit.x)
    count = len(steps)
    state_key = f"{key}_step"
    if state_key not in st.session_state:
        st.session_state[state_key] = state.query_int("step", step) if url else step
    # Clamp: a network with more layers may have been picked before, or the link asked for step 99.
    st.session_state[state_key] = min(max(int(st.session_state[state_key]), 1), count)
    current = st.session_state[state_key]

    prev_col, slider_col, next_col = st.columns([1, 6, 1], vertical_alignment="center")
    prev_col.button("◀ Previous", key=f"{key}_prev", on_click=_move, args=(state_key, -1, count),
                    disabled=current <= 1, width="stretch")
    next_col.button("Next ▶", key=f"{key}_next", on_click=_move, args=(state_key, 1, count),
                    disabled=current >= count, width="stretch")
    slider_col.slider("Step", 1, count, key=state_key, label_visibility="collapsed")
    current = st.session_state[state_key]
    if url and st.query_params.get("step") != str(current):
        st.query_params["step"] = str(current)

    names = ["digit" if s.name == "input" else s.name for s in steps]
    st.markdown(" → ".join(f"**:red[{i + 1}\\. {n}]**" if i + 1 == current else f"{i + 1}\\. {n}"
                           for i, n in enumerate(names)))
    s = steps[current - 1]
    st.subheader(f"Step {current} of {count}: {s.title}")
    _show_step(s, steps, net, digit, key)


def _show_step(s: fc_maths.FCStep, steps: list[fc_maths.FCStep], net: state.Network, digit: state.Digit,
               key: str) -> None:
    if s.kind == "Input":
        digit_numbers(key=f"{key}_input", digit=digit)
    elif s.kind == "Flatten":
        flatten_view(key=f"{key}_flatten", digit=digit)
    elif s.kind == "Linear":
        _linear_step(s, net, key)
    elif s.kind == "ReLU":
        _relu_step(s, key)
    elif s.kind in ACTIVATION_KINDS or s.kind.startswith("BatchNorm"):  # a learner's own model's layers
        _other_step(s, net, key)
    elif s.kind == "Softmax":
        st.markdown(
            "Softmax turns the ten scores into ten probabilities that are positive and add up to 1: "
            "each score $z$ becomes $e^z$, and each $e^z$ is divided by the sum of all ten. "
            "The biggest score gets the biggest share, and a lead of a few points becomes near certainty."
        )
        softmax_explainer(net, digit, key=f"{key}_softmax")
    else:  # a layer kind this walk does not know: still show its numbers
        st.plotly_chart(fc_viz.vector_figure(s.values), key=f"{key}_values")


def _linear_step(s: fc_maths.FCStep, net: state.Network, key: str) -> None:
    lin = dict(net.model.named_children())[s.name]
    n_in, n_out = lin.in_features, lin.out_features
    is_output = s.name == "output"
    top = int(s.values.argmax())
    labels = [str(i) for i in range(n_out)]
    st.plotly_chart(
        fc_viz.vector_figure(s.values, labels=labels, axis_title="digit" if is_output else "neuron",
                             value_title="score" if is_output else "weighted sum z",
                             highlight=top if is_output else None),
        key=f"{key}_values",
    )
    source = "784 pixels" if n_in == IMAGE_SIZE**2 else f"{n_in} values of the layer before (after its ReLU)"
    if is_output:
        st.markdown(
            f"The output layer is one more round of weighted sums, one per digit: **ten scores** (logits) "
            f"from the {source}. The largest wins: here **{top}** with {_num(float(s.values[top]), 2)}. "
            "Scores are not probabilities yet: they can be negative and do not add up to 1. That is the next step."
        )
    else:
        first = "the digit's pixels" if n_in == IMAGE_SIZE**2 else "the patterns the previous layer found"
        st.markdown(
            f"Each of the **{n_out} neurons** of `{s.name}` multiplies every one of the {source} by its own "
            f"weight, adds the {n_in} products up, and adds its bias: a **weighted sum** "
            f"({n_in * n_out:,} multiplications in all). A neuron's sum is large when {first} line up with its "
            f"positive weights. Largest here: neuron {top} with {_num(float(s.values[top]), 2)}; "
            f"{int((s.values < 0).sum())} of the {n_out} are negative."
        )
    # i from 0, as the flatten step numbers the pixels (pixel (14, 14) is number 406) and j numbers the neurons.
    st.latex(rf"z_j = \sum_{{i=0}}^{{{n_in - 1}}} w_{{j,i}}\, x_i + b_j \qquad j = 0, \dots, {n_out - 1}")
    # A toggle, not an expander: the figure holds every weight of the layer, so it is only built when asked for.
    if st.toggle("Show it as a matrix times a vector: z = W x + b", key=f"{key}_matvec_on"):
        st.plotly_chart(fc_viz.linear_layer_figure(lin.weight, s.inputs, lin.bias, s.values), key=f"{key}_matvec")
        st.caption(
            f"Row j of W holds neuron j's {n_in} weights (orange positive, purple negative). Each row is "
            "multiplied cell by cell with the input strip on top (drawn on its own colour range), summed, and the bias "
            "added: that is z_j. "
            "The 'Pick a neuron' view works one of these rows out in full."
        )


def _relu_step(s: fc_maths.FCStep, key: str) -> None:
    before = s.inputs
    zeroed = fc_maths.zeroed_by_relu(before)
    st.plotly_chart(
        fc_viz.vector_figure(s.values, before=before, value_title="value", axis_title="neuron"),
        key=f"{key}_values",
    )
    st.latex(r"\mathrm{ReLU}(z) = \max(0, z)")
    if zeroed:
        listed = ", ".join(f"{i} ({_num(float(before[i]), 2)})" for i in zeroed[:20])
        more = f" and {len(zeroed) - 20} more" if len(zeroed) > 20 else ""
        st.markdown(f"**{len(zeroed)} of {before.numel()}** sums were negative and became 0: neurons {listed}{more}.")
    else:
        st.markdown(f"None of the {before.numel()} sums was negative for this digit, so ReLU changed nothing.")
    st.caption(
        "ReLU keeps a positive value as it is and turns a negative one into 0 (the hollow bars are the values "
        "before). A neuron at 0 is 'off' for this digit and the next layer ignores it. This bend is what makes "
        "layers worth stacking: without it, two Linear layers collapse into a single one."
    )


def _other_step(s: fc_maths.FCStep, net: state.Network, key: str) -> None:
    """An activation other than ReLU (its formula) or a batch norm (its scale and shift), in numbers."""
    module = dict(net.model.named_children())[s.name]
    st.plotly_chart(fc_viz.vector_figure(s.values, before=s.inputs, value_title="value", axis_title="neuron"),
                    key=f"{key}_values")
    i = int(s.inputs.abs().argmax())
    x, y = float(s.inputs[i]), float(s.values[i])
    if s.kind in ACTIVATION_KINDS:
        st.latex(ACTIVATION_FORMULAS[s.kind])
        st.markdown(f"Every value goes through the same formula; for neuron {i}: **{x:.4f} → {y:.4f}**.")
        written = activation(module, s.inputs)
    else:
        bn = batchnorm_step(module, i)
        st.latex(bn.latex(x))
        st.markdown(f"Batch norm rescales each neuron with the mean and variance it saw in training and then its own "
                    f"learned scale γ and shift β; for neuron {i}: x × {bn.scale:.3f} + ({bn.shift:.3f}).")
        written = torch.stack([batchnorm_step(module, j).apply(s.inputs[j]) for j in range(s.inputs.numel())])
    if not torch.allclose(written.float(), s.values.float(), atol=1e-4):
        st.warning("The layer's output differs from the formula: the explanation does not match the layer.")


# ---------------------------------------------------------------- one neuron


def fc_neuron(
    *, key: str, net: state.Network | None = None, digit: state.Digit | None = None, layer: str = "fc_1",
    neuron: int = -1, url: bool = False,
) -> None:
    """One neuron's weighted sum worked out: weights, products, Σ wᵢxᵢ + b, ReLU, top contributions.

    ``neuron=-1`` follows the most active neuron of the layer for the current
    digit. With ``url`` the choice is kept in the link (``?layer=fc_1&neuron=3``).
    """
    net = _fc_net(net)
    if net is None:
        return
    digit = digit or state.current_digit()
    model = net.model
    layers = fc_maths.linear_layers(model)
    modules = dict(model.named_children())

    layer_key, auto_key, neuron_key = f"{key}_layer", f"{key}_auto", f"{key}_neuron"
    if url and layer_key not in st.session_state:  # first run: the link's choice, else the arguments'
        layer = st.query_params.get("layer", layer)
        neuron = state.query_int("neuron", neuron)
    if st.session_state.get(layer_key) not in layers:
        st.session_state[layer_key] = layer if layer in layers else layers[0]
    c1, c2, c3 = st.columns([2, 2, 3], vertical_alignment="bottom")
    layer = c1.selectbox("Layer", layers, key=layer_key,
                         format_func=lambda n: f"{n} ({modules[n].out_features} neurons)",
                         help="The output layer's 'neurons' are the ten digit scores.")
    width = modules[layer].out_features
    auto = c2.toggle("Most active neuron", value=neuron < 0, key=auto_key,
                     help="Follow the neuron with the largest weighted sum for the current digit.")
    if auto:
        neuron = fc_maths.most_active_neuron(model, digit.x, layer)
        c3.markdown(f"Neuron **{neuron}** of `{layer}` (the most active)")
    else:
        neuron = c3.slider("Neuron", 0, width - 1, min(max(neuron, 0), width - 1), key=f"{neuron_key}_{layer}")
    if url:
        st.query_params["layer"] = layer
        st.query_params["neuron"] = "-1" if auto else str(neuron)

    ns = fc_maths.neuron_sum(model, digit.x, layer, neuron)
    actual = float(capture_activations(model, digit.x)[layer][0, neuron])  # what the layer itself computed

    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Σ wᵢxᵢ", _num(ns.weighted_sum))
    m2.metric("+ bias b", _signed(ns.bias))
    m3.metric("Σ wᵢxᵢ + b", _num(ns.result))
    if ns.activated is not None:
        m4.metric("→ ReLU", _num(ns.activated))
    else:
        m4.metric("score of digit", str(neuron))
    relu_part = (f" → {ns.activation_kind} → **{_num(ns.activated)}**" if ns.activated is not None
                 else " (a score: no ReLU here)" if layer == "output" else " (no activation follows it)")
    st.markdown(
        f"Σ wᵢxᵢ = {_num(ns.weighted_sum)}, + bias {_num(ns.bias)} = **{_num(ns.result)}**{relu_part}"
    )
    st.caption(f"✓ The network's own `{layer}` output for neuron {neuron} is {_num(actual)}: the same number.")

    st.plotly_chart(fc_viz.neuron_figure(ns), key=f"{key}_fig")
    if ns.from_pixels:
        st.caption(
            "Left: the neuron's 784 weights laid back onto the 28 × 28 grid (orange asks for ink there, purple "
            "asks for none). Right: each weight times the ink under it. Red cells added to the sum, blue cells "
            "took away; blank paper (0) contributes nothing, whatever its weight."
        )
    else:
        st.caption(
            "This neuron's inputs are the previous layer's values after ReLU. Its weights say how much each "
            "previous neuron counts (orange for, purple against); the products are what each one actually added."
        )

    what = "pixel" if ns.from_pixels else "neuron"

    def table(contribs: tuple[fc_maths.Contribution, ...]) -> pd.DataFrame:
        rows = [{
            what: f"({c.pixel[0]}, {c.pixel[1]})" if ns.from_pixels else str(c.index),
            "weight w": c.weight, "ink x" if ns.from_pixels else "value x": c.input, "w·x": c.product,
        } for c in contribs]
        return pd.DataFrame(rows)

    up, down = st.columns(2)
    with up:
        st.markdown(f"**Pushed it up** (all positive products: {_signed(ns.positive_total, 2)})")
        if ns.top_positive:
            st.dataframe(table(ns.top_positive).style.format(precision=3), hide_index=True)
        else:
            st.caption("No product is positive.")
    with down:
        st.markdown(f"**Held it down** (all negative products: {_signed(ns.negative_total, 2)})")
        if ns.top_negative:
            st.dataframe(table(ns.top_negative).style.format(precision=3), hide_index=True)
        else:
            st.caption("No product is negative.")


# ---------------------------------------------------------------- all first-layer neurons


def fc_weight_grid(
    *, key: str, net: state.Network | None = None, digit: state.Digit | None = None, layer: str = "fc_1",
    per_page: int = 32,
) -> None:
    """Every neuron's incoming weights as a small 28 x 28 image, titled with its value for the current digit."""
    net = _fc_net(net)
    if net is None:
        return
    digit = digit or state.current_digit()
    modules = dict(net.model.named_children())
    if layer not in fc_maths.linear_layers(net.model):
        st.info(f"This network has no layer {layer!r}; its Linear layers are "
                f"{', '.join(fc_maths.linear_layers(net.model))}.")
        return
    lin = modules[layer]
    values = capture_activations(net.model, digit.x)[layer][0]  # (out,) weighted sums before ReLU
    if lin.in_features != IMAGE_SIZE**2:
        st.plotly_chart(fc_viz.weight_matrix_figure(lin.weight, layer), key=f"{key}_matrix")
        st.caption(f"`{layer}` reads the previous layer's values, not pixels, so its weights have no picture: "
                   "row j is neuron j's weights, one per neuron before it.")
        return
    n = lin.out_features
    top = int(values.argmax())
    neurons = list(range(n))
    if n > 16:
        c1, c2 = st.columns([1, 2])
        order = c1.radio("Order", ["most active first", "by number"], horizontal=True, key=f"{key}_order")
        if order == "most active first":
            neurons = values.argsort(descending=True).tolist()
        pages = (n + per_page - 1) // per_page
        if pages > 1:
            page = c2.select_slider(
                "Page", options=list(range(1, pages + 1)), key=f"{key}_page",
                format_func=lambda p: f"{(p - 1) * per_page + 1}–{min(p * per_page, n)}",
            )
            neurons = neurons[(page - 1) * per_page: page * per_page]
    limit = symmetric_range(lin.weight)
    st.plotly_chart(
        fc_viz.weight_grid_figure(lin.weight, values, neurons=neurons, highlight=top, limit=limit),
        key=f"{key}_grid",
    )
    st.caption(
        f"Each small image is one neuron of `{layer}`: its 784 weights put back on the 28 × 28 grid, orange where "
        "ink raises its sum and purple where ink lowers it. All images share one colour range "
        f"(±{limit:.2f}) so they compare. The number over each is that neuron's weighted sum for the current "
        f"digit (negative ones are switched off by ReLU); the most active, neuron {top}, is framed in red. "
        + ("Many show blurry arcs, bars and blobs, pieces of strokes, but none is a clean stroke or a whole digit: "
           "a trained network's features rarely match what we would design by hand."
           if net.key == "fc" else  # what the pretrained FCNet's 16 pictures look like; another network's may not
           "Compare them with the pretrained FCNet's: a trained network's features are rarely neat digits.")
    )


# ---------------------------------------------------------------- the network as dots


def fc_network_diagram(*, key: str, net: state.Network | None = None, digit: state.Digit | None = None) -> None:
    """784 → 16 → 16 → 10 as columns of dots coloured by this digit's values, the prediction ringed."""
    net = _fc_net(net)
    if net is None:
        return
    digit = digit or state.current_digit()
    acts = capture_activations(net.model, digit.x)
    modules = dict(net.model.named_children())
    linears = fc_maths.linear_layers(net.model)
    columns = [(name, acts[name][0]) for name in fc_maths.hidden_outputs(net.model)] + [("output", acts["output"][0])]
    weights = [modules[name].weight for name in linears[1:]]
    predicted = int(acts["output"][0].argmax())
    st.plotly_chart(
        fc_viz.network_diagram_figure(digit.pixels, columns, weights, predicted=predicted),
        key=f"{key}_diagram",
    )
    st.caption(
        "The whole network at a glance: the digit's 784 pixels, each hidden layer's neurons after ReLU and the "
        "ten output scores as dots (red: large, white: 0, blue: negative; each column on its own range, hover "
        "for the numbers). Lines show each neuron's strongest incoming weights (orange positive, purple "
        f"negative). The network says **{predicted}**."
    )


# ---------------------------------------------------------------- lesson 4: why ReLU


def _bmatrix(t: torch.Tensor) -> str:
    t = t.reshape(t.shape[0], -1) if t.dim() == 2 else t.reshape(-1, 1)
    rows = [" & ".join(f"{v:g}" for v in row) for row in t.tolist()]
    return r"\begin{bmatrix}" + r" \\ ".join(rows) + r"\end{bmatrix}"


def linear_collapse(
    *, key: str, net: state.Network | None = None, digit: state.Digit | None = None, seed: int = 2,
) -> None:
    """Two Linear layers with no ReLU between them are one Linear layer: worked out on small whole numbers,
    then checked on the real network's fc_1 and fc_2."""
    example, x0 = fc_maths.small_example(seed)
    st.markdown("Two small Linear layers, 3 inputs → 2 → 2, with whole-number weights you can check by hand. "
                "Change the input:")
    cols = st.columns(len(x0))
    x = torch.tensor([float(c.number_input(f"x{i + 1}", value=int(v), step=1, key=f"{key}_x{i}"))
                      for i, (c, v) in enumerate(zip(cols, x0.tolist()))], dtype=torch.float64)
    h = example.w1 @ x + example.b1
    two, one, bent = example.two_layers(x), example.one_layer(x), example.with_relu(x)
    B = _bmatrix
    st.markdown("**Layer 1, then layer 2**, with nothing in between:")
    st.latex(rf"h = W_1 x + b_1 = {B(example.w1)} {B(x)} + {B(example.b1)} = {B(h)}")
    st.latex(rf"y = W_2 h + b_2 = {B(example.w2)} {B(h)} + {B(example.b2)} = {B(two)}")
    st.markdown("**One layer** with W = W₂W₁ and b = W₂b₁ + b₂, worked out once, before any input:")
    st.latex(rf"W = W_2 W_1 = {B(example.w2)} {B(example.w1)} = {B(example.w)}, \quad "
             rf"b = W_2 b_1 + b_2 = {B(example.b)}")
    st.latex(rf"y = W x + b = {B(example.w)} {B(x)} + {B(example.b)} = {B(one)}")
    if torch.allclose(two, one):  # always, by the algebra; checked on the numbers shown, not assumed
        st.success("The same answer, and for every input: W₂(W₁x + b₁) + b₂ = (W₂W₁)x + (W₂b₁ + b₂). "
                   "Stacking Linear layers without anything in between adds no power.")
    st.markdown(
        f"**With ReLU between them**: h becomes max(0, h) = {B(relu(h)).join(['$', '$'])}, and "
        f"W₂·ReLU(h) + b₂ = {B(bent).join(['$', '$'])}. "
        + ("That is a different answer: no single Linear layer gives it for every input, so the bend matters."
           if not torch.allclose(bent, two) else
           "Here no value of h was negative, so ReLU changed nothing; try an input that makes one negative.")
    )

    net = _fc_net(net)
    if net is None:
        return
    layers = fc_maths.linear_layers(net.model)
    if len(layers) < 3:
        return
    digit = digit or state.current_digit()
    modules = dict(net.model.named_children())
    first, second = modules[layers[0]], modules[layers[1]]
    real = fc_maths.collapse_layers(first, second)
    pixels = digit.x.reshape(-1).double()  # (784,)
    with st.expander(f"The same on the real network: `{layers[0]}` then `{layers[1]}` of {net.label}"):
        acts = capture_activations(net.model, digit.x)
        table = pd.DataFrame({
            f"{layers[1]}({layers[0]}(x)) without ReLU": real.two_layers(pixels).numpy(),
            f"one layer W x + b ({tuple(real.w.shape)[0]}×{tuple(real.w.shape)[1]})": real.one_layer(pixels).numpy(),
            f"the real network, with ReLU ({layers[1]})": acts[layers[1]][0].double().numpy(),
        })
        table.index.name = "neuron"
        st.dataframe(table.style.format("{:.4f}"))
        gap = float((real.two_layers(pixels) - real.one_layer(pixels)).abs().max())
        st.caption(f"The first two columns agree to {gap:.1e} (rounding) for the current digit. The third, "
                   "the network as trained with ReLU, does not: that is why the ReLU is there.")
