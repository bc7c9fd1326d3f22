"""Backpropagation on the current digit: the widgets of the FC explorer's Backward mode,
the CNN explorer's kernel-gradient panel and lesson 7.

Each takes keyword-only arguments (``key`` prefixes every Streamlit key inside
it; ``net`` / ``digit`` default to the current ones; the rest a lesson can
write as text, e.g. ``::: widget backprop_weight layer=fc_1``). All the numbers
come from ``digitrec.backprop`` through the cache in ``streamlit_app.state``
(one forward + backward pass per network, digit and target class) and the
figures from ``digitrec.viz.backprop``.

The target class ("the right answer" the loss measures against) is shared by
every backprop widget of the session, so a lesson's steps all follow the same
one. With ``url=True`` it is read from and written to the link (``?target=3``);
a number outside 0-9 in a link is clamped, with a toast that says so.
"""

from __future__ import annotations

import streamlit as st

from digitrec import backprop
from digitrec.data import IMAGE_SIZE, NUM_CLASSES
from digitrec.errors import DigitrecError
from digitrec.viz import backprop as viz
from streamlit_app import state
from streamlit_app.widgets.context import network_of_kind

MINUS = "\u2212"
MATCH_TOLERANCE = 1e-6  # |hand − autograd| in float32: the same sums in another order differ by ~1e-9
LEARNING_RATES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
CURVE_RATES = tuple(10 ** (k / 4) for k in range(-16, 5))  # 1e-4 .. 10, four points per decade
MODES = ("Forward", "Backward")


def _num(v: float, places: int = 4) -> str:
    return f"{v:.{places}f}".replace("-", MINUS)


def _signed(v: float, places: int = 4) -> str:
    return f"{v:+.{places}f}".replace("-", MINUS)


def _tex(v: float, places: int = 4) -> str:
    """A number for a LaTeX product or sum: negatives in brackets."""
    s = f"{v:.{places}f}"
    return f"({s})" if v < 0 else s


def _small(v: float) -> str:
    """A gradient to read: 4 decimals, or scientific notation when it is tiny."""
    return _num(v, 6) if v == 0 or abs(v) >= 1e-4 else f"{v:.3e}".replace("-", MINUS)


def _tex_small(v: float, bracket: bool = True) -> str:
    """A gradient for LaTeX: 6 decimals, or a × 10^k when tiny; negatives bracketed unless it ends the line."""
    if v == 0 or abs(v) >= 1e-4:
        s = f"{v:.6f}"
    else:
        mantissa, exponent = f"{v:.3e}".split("e")
        s = rf"{mantissa} \times 10^{{{int(exponent)}}}"
    return f"({s})" if v < 0 and bracket else s


def _tt(name: str) -> str:
    """A layer name inside LaTeX \\text{}: KaTeX refuses a bare underscore there."""
    return name.replace("_", r"\_")


def _seed(k: str, value) -> None:
    if k not in st.session_state:
        st.session_state[k] = value


def _set_url(url: bool, **params) -> None:
    if not url:
        return
    for name, value in params.items():
        if st.query_params.get(name) != str(value):
            st.query_params[name] = str(value)


def _url_int(name: str, url: bool, default: int) -> int:
    if not url:
        return default
    try:
        return int(str(st.query_params.get(name, default)).strip())
    except ValueError:
        return default


def _backward(net: state.Network, digit: state.Digit, target: int) -> backprop.Backward | None:
    """This digit's cached backward pass, or None after one sentence if the network cannot be walked back."""
    try:
        return state.backward_pass(net, digit, target)
    except DigitrecError as e:  # e.g. an imported network with a layer the hand-written rules do not know
        st.info(f"{net.label}: {e}")
        return None


def _guess(net: state.Network, digit: state.Digit) -> int:
    """The target a digit starts with: its label, else the network's own answer."""
    if digit.label is not None:
        return digit.label
    bw = _backward(net, digit, 0)
    return bw.predicted if bw is not None else 0


# ---------------------------------------------------------------- the shared target class


def _target_from_link(default: int) -> int:
    """``?target=`` as a class 0-9: a number outside is clamped and anything else ignored, each with a toast.

    The toast never repeats the link's text (it could be Markdown); only a whole number is echoed.
    """
    raw = st.query_params.get("target")
    if raw is None:
        return default
    try:
        asked = int(str(raw).strip())
    except ValueError:
        st.toast(f"The link's target class could not be read as a number, so this shows {default}.")
        return default
    clamped = min(max(asked, 0), NUM_CLASSES - 1)
    if clamped != asked:
        shown = str(asked) if abs(asked) < 10**6 else ("a very large number" if asked > 0 else "a very negative number")
        st.toast(f"The link asked for target class {shown}; classes are 0 to 9, so this shows {clamped}.")
    return clamped


def target_picker(*, key: str, net: state.Network, digit: state.Digit, url: bool = False, show: bool = True) -> int:
    """A select box for the target class, shared by every backprop widget of the session for this digit.

    Its first value is the link's ``?target=`` (with ``url``), else the digit's label, else the network's
    own answer; a new digit starts again from its own. ``show=False``: no box, just the shared choice
    (for a page that already shows one box).
    """
    ss = st.session_state
    k = f"{key}_target"
    shared = state.backprop_target(digit)
    if shared is None:
        shared = _guess(net, digit)
        if url and show and k not in ss:  # the link decides only on the first draw
            shared = _target_from_link(shared)
        state.set_backprop_target(digit, shared)
    if not show:
        return shared
    if ss.get(k) != shared:  # another widget (another lesson step) changed it, or the digit is new
        ss[k] = shared
    target = st.selectbox(
        "Target class: the right answer the loss measures against", list(range(NUM_CLASSES)), key=k,
        on_change=lambda: state.set_backprop_target(digit, ss[k]),
        help="Pick another digit to see how the network would be corrected if that were the right answer.",
    )
    _set_url(url, target=target)
    return int(target)


# ---------------------------------------------------------------- the loss and p − onehot


def backprop_loss(*, key: str, net: state.Network | None = None, digit: state.Digit | None = None,
                  url: bool = False) -> None:
    """The loss −log p(target) for the current digit, and its blame on the ten scores: p − onehot."""
    net = net or network_of_kind(None, cnn=False)  # any kind given is kept: the loss is the same for both
    if net is None:
        return
    digit = digit or state.current_digit()
    target = target_picker(key=key, net=net, digit=digit, url=url)
    bw = _backward(net, digit, target)
    if bw is None:
        return
    p = float(bw.probs[target])
    c1, c2, c3 = st.columns(3)
    c1.metric(f"p({target})", f"{p:.2%}" if p >= 1e-4 else f"{p:.2e}")
    c2.metric("loss = −log p", _num(bw.loss, 4))
    c3.metric(f"∂loss/∂score {target} = p − 1", _signed(float(bw.output_delta[target]), 4))
    p_tex = _tex_small(p)
    st.latex(rf"\mathrm{{loss}} = -\log p_{{{target}}} = -\log {p_tex} = {bw.loss:.4f}"
             rf"\qquad \frac{{\partial\, \mathrm{{loss}}}}{{\partial z_j}} = p_j - [j = {target}]")
    st.plotly_chart(viz.output_blame_figure(bw.probs, target), key=f"{key}_fig")
    winner = bw.predicted
    st.caption(
        f"{net.label} says {winner}. Each score's blame is its probability minus 1 for the target and minus 0 "
        f"for the others. The target's score {target} gets {_signed(float(bw.output_delta[target]), 4)}: negative, "
        "so a step downhill raises it. Every other score gets its own probability as blame: positive, so the step "
        "lowers it, most for the most likely wrong answer. When the network is already sure and right, all ten "
        "are near 0 and there is little to learn."
    )


# ---------------------------------------------------------------- the network with every neuron's δ


def _choose_neuron(key: str, bw: backprop.Backward, layer: str, neuron: int, url: bool,
                   url_prefix: str) -> tuple[str, int]:
    """A layer and a neuron picker (Linear layers), seeded from the link or the arguments."""
    layers = bw.linear_layers()
    lk, nk = f"{key}_layer", f"{key}_neuron"
    if lk not in st.session_state:
        wanted = st.query_params.get(f"{url_prefix}layer", layer) if url else layer
        st.session_state[lk] = wanted if wanted in layers else (layers[-2] if len(layers) > 1 else layers[0])
        chosen_neuron = _url_int(f"{url_prefix}neuron", url, neuron)
        if chosen_neuron >= 0:
            st.session_state[nk] = chosen_neuron
    if st.session_state[lk] not in layers:
        st.session_state[lk] = layers[0]
    # A new target class is a new question: start again from its most blamed neuron.
    tk = f"{key}_neuron_target"
    if st.session_state.get(tk, bw.target) != bw.target:
        st.session_state.pop(nk, None)
    st.session_state[tk] = bw.target
    c1, c2 = st.columns([2, 3])
    layer = c1.selectbox("Layer", layers, key=lk, format_func=lambda n: (
        f"{n} (the ten scores)" if n == layers[-1] else f"{n} ({bw.layer(n).output.numel()} neurons)"),
        on_change=lambda: st.session_state.pop(nk, None))
    width = bw.layer(layer).output.numel()
    if nk not in st.session_state or not 0 <= int(st.session_state[nk]) < width:
        st.session_state[nk] = backprop.most_blamed(bw, layer) if layer != layers[-1] else bw.target
    neuron = c2.slider("Neuron (for the ten scores: the digit)", 0, width - 1, key=nk)
    _set_url(url, **{f"{url_prefix}layer": layer, f"{url_prefix}neuron": neuron})
    return layer, int(neuron)


def _match(hand: float, auto: float, what: str) -> None:
    if abs(hand - auto) <= MATCH_TOLERANCE * max(1.0, abs(auto)):
        same = "exactly the same number" if hand == auto else f"the same to rounding (they differ by {abs(hand - auto):.1e})"
        st.success(f"autograd's {what}: {_small(auto)}. {same[0].upper()}{same[1:]}.")
    else:  # a bug, not something the learner did: say so plainly
        st.warning(f"autograd's {what} is {_small(auto)}, off by {abs(hand - auto):.2e}: the explanation is wrong.")


def _blame_latex(nb: backprop.NeuronBlame, bw: backprop.Backward, terms: int = 3) -> str:
    """δ_j written out: p − onehot for a score, else the weighted sum of the blame above × ReLU's on/off
    (its largest terms), on three lines so it fits the page."""
    delta = rf"\delta^{{\text{{{_tt(nb.layer)}}}}}_{{{nb.neuron}}}"
    if nb.is_output:
        return (rf"{delta} = p_{{{nb.neuron}}} - [{nb.neuron} = {bw.target}]"
                rf" = {nb.probability:.6f} - {1 if nb.is_target else 0} = {_tex_small(nb.delta, bracket=False)}")
    order = nb.products.abs().argsort(descending=True).tolist()
    shown = " + ".join(rf"{_tex(float(nb.weights[k]), 3)} \cdot {_tex_small(float(nb.blame_above[k]))}"
                       for k in order[:terms])
    rest = len(order) - terms
    more = rf" + \dots\ ({rest}\text{{ more}})" if rest > 0 else ""
    on = 1 if nb.relu_on else 0
    return (rf"\begin{{aligned}} {delta} &= \Big(\sum_k w_{{k,{nb.neuron}}}\,"
            rf"\delta^{{\text{{{_tt(nb.above)}}}}}_k\Big) \times \mathrm{{ReLU}}'(z_{{{nb.neuron}}}) \\"
            rf" &= ({shown}{more}) \times {on} \\"
            rf" &= {_tex_small(nb.blame_sum)} \times {on} = {_tex_small(nb.delta, bracket=False)} \end{{aligned}}")


def backprop_diagram(*, key: str, net: state.Network | None = None, digit: state.Digit | None = None,
                     layer: str = "", neuron: int = -1, pick_target: bool = True, url: bool = False) -> None:
    """The FC network as columns of dots coloured by each neuron's blame δ, and one neuron's δ worked out
    from the layer above (weighted sum of the blame above × ReLU's on/off). neuron=-1: the most blamed."""
    net = network_of_kind(net, cnn=False)
    if net is None:
        return
    digit = digit or state.current_digit()
    target = target_picker(key=key, net=net, digit=digit, url=url, show=pick_target)
    bw = _backward(net, digit, target)
    if bw is None:
        return
    layer, neuron = _choose_neuron(key, bw, layer, neuron, url, "bp_")
    linears = bw.linear_layers()
    weights = [bw.layer(n).weight for n in linears[1:]]
    st.plotly_chart(viz.blame_diagram_figure(digit.pixels, backprop.deltas(bw), weights, target, (layer, neuron)),
                    key=f"{key}_diagram")
    st.caption(
        "Every neuron's blame δ = ∂loss/∂z: how much the loss would rise per unit its weighted sum z rose. Pink: "
        "raising this sum would raise the loss, so the step lowers it; green: the step raises it; white: no blame. "
        "Blame starts at the ten scores (right) and flows left along the weights; the lines are the weights the "
        "ringed neuron's blame came back along (orange positive, purple negative)."
    )
    nb = backprop.neuron_blame(bw, layer, neuron)
    st.latex(_blame_latex(nb, bw))
    if not nb.is_output:
        if nb.relu_on:
            st.markdown(
                f"Neuron {neuron} of `{layer}` had z = {_num(nb.pre_activation)} > 0 for this digit, so ReLU let its "
                f"value through and lets its blame back: δ = {_small(nb.delta)}."
            )
        else:
            st.markdown(
                f"Neuron {neuron} of `{layer}` had z = {_num(nb.pre_activation)} ≤ 0, so ReLU switched it **off** "
                f"(its output was 0). Nudging its sum a little changes nothing above, so its blame is 0, "
                f"whatever the {nb.weights.numel()} neurons above think (their weighted sum: "
                f"{_small(nb.blame_sum)}). None of its weights will change for this digit."
            )
        st.plotly_chart(viz.blame_sum_figure(nb), key=f"{key}_sum")
    _match(nb.delta, nb.autograd_delta, f"∂loss/∂z for {layer} neuron {neuron}")


# ---------------------------------------------------------------- one weight


def _chain_lines(bw: backprop.Backward, layer: str, neuron: int) -> list[str]:
    """From the loss down to δ of (layer, neuron): one LaTeX line per layer, each explaining a δ the next
    line uses, following at each layer the neuron above that passed down the most blame."""
    path = [(layer, neuron)]
    while True:
        nb = backprop.neuron_blame(bw, *path[-1])
        if nb.is_output:
            break
        path.append((nb.above, int(nb.products.abs().argmax())))
    return [_blame_latex(backprop.neuron_blame(bw, name, k), bw) for name, k in reversed(path)]


def backprop_weight(*, key: str, net: state.Network | None = None, digit: state.Digit | None = None,
                    layer: str = "", neuron: int = -1, source: int = -1, pick_target: bool = True,
                    url: bool = False) -> None:
    """The gradient of one weight by the chain rule in numbers: ∂loss/∂w = (input it multiplied) × δ of the
    neuron it feeds, with δ traced back to the loss, and autograd's value beside it.
    neuron=-1: the layer's most blamed neuron; source=-1: its input with the largest value."""
    net = network_of_kind(net, cnn=False)
    if net is None:
        return
    digit = digit or state.current_digit()
    target = target_picker(key=key, net=net, digit=digit, url=url, show=pick_target)
    bw = _backward(net, digit, target)
    if bw is None:
        return
    layer, neuron = _choose_neuron(key, bw, layer, neuron, url, "w_")
    trace = bw.layer(layer)
    n_in = trace.input.numel()
    sk = f"{key}_source_{layer}"
    if sk not in st.session_state:
        wanted = _url_int("w_input", url, source)
        st.session_state[sk] = wanted if 0 <= wanted < n_in else backprop.strongest_input(bw, layer, neuron)
    pixels = n_in == IMAGE_SIZE * IMAGE_SIZE
    source = st.slider(
        "The weight's input: " + ("a pixel, numbered row by row (28 × row + column)" if pixels
                                  else "a neuron of the layer below, after its ReLU"),
        0, n_in - 1, key=sk)
    _set_url(url, w_input=source)
    wg = backprop.weight_gradient(bw, layer, neuron, int(source))
    where = f"pixel ({wg.pixel[0]}, {wg.pixel[1]})" if pixels else f"neuron {source} of the layer below"
    st.markdown(f"The weight **w = {_num(wg.weight)}** from {where} into neuron **{neuron}** of `{layer}`.")

    st.markdown("**From the loss down to this neuron's blame δ**, one layer at a time (following, at each "
                "layer, the neuron above that passed down the most blame):")
    st.latex(rf"\mathrm{{loss}} = -\log p_{{{target}}} = {bw.loss:.4f}")
    for line in _chain_lines(bw, layer, neuron):
        st.latex(line)
    st.markdown("**Then the weight.** In the forward pass it multiplied its input a into the sum z = … + w·a + …, "
                "so nudging w by a little changes z by a times as much:")
    st.latex(rf"\frac{{\partial\, \mathrm{{loss}}}}{{\partial w}} = \frac{{\partial\, \mathrm{{loss}}}}{{\partial z}}"
             rf"\cdot \frac{{\partial z}}{{\partial w}} = \delta \cdot a = {_tex_small(wg.delta)} \times "
             rf"{_tex(wg.input_value, 4)} = {_tex_small(wg.hand, bracket=False)}")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("input a", _num(wg.input_value))
    m2.metric("δ of the neuron it feeds", _small(wg.delta))
    m3.metric("a × δ (by hand)", _small(wg.hand))
    m4.metric("autograd", _small(wg.autograd))
    _match(wg.hand, wg.autograd, "gradient for this weight")
    st.plotly_chart(viz.weight_gradient_figure(trace.input, wg.delta, wg.source, neuron, layer), key=f"{key}_fig")
    st.caption(
        f"Every weight into neuron {neuron} shares its δ, so their gradients are δ times their own inputs: the "
        "chosen one is marked in red. Inputs that were 0 leave their weights' gradients at 0."
    )
    if wg.input_value == 0:
        st.caption("Its input was 0 for this digit (blank paper, or a neuron ReLU switched off), so this weight "
                   "played no part in the answer and gets no gradient: only weights that were used are corrected.")


# ---------------------------------------------------------------- first-layer gradient pictures


def backprop_gradient_pictures(*, key: str, net: state.Network | None = None, digit: state.Digit | None = None,
                               per_page: int = 16, pick_target: bool = True) -> None:
    """Each first-layer neuron's weight gradient as a 28 × 28 picture: the digit scaled by that neuron's δ."""
    net = network_of_kind(net, cnn=False)
    if net is None:
        return
    digit = digit or state.current_digit()
    target = target_picker(key=key, net=net, digit=digit, show=pick_target)
    bw = _backward(net, digit, target)
    if bw is None:
        return
    try:
        layer, grads, deltas = backprop.first_layer_pictures(bw)
    except backprop.UnsupportedModel as e:
        st.info(str(e))
        return
    n = grads.shape[0]
    order = deltas.abs().argsort(descending=True).tolist()  # the most blamed first
    neurons = order[:per_page]
    top = order[0]
    st.plotly_chart(viz.gradient_grid_figure(grads, deltas, neurons=neurons, highlight=top), key=f"{key}_grid")
    gap = float((grads - deltas[:, None, None] * digit.pixels[None]).abs().max())
    off = int((deltas == 0).sum())
    shown = f"the {len(neurons)} most blamed of {n}" if len(neurons) < n else f"all {n}"
    st.caption(
        f"The gradient of every weight of `{layer}`, {shown} neurons, one picture each (most blamed first). "
        f"Picture j is the digit times neuron j's δ ({'checked: exactly equal' if gap == 0 else f'checked: they differ by at most {gap:.1e}'}): "
        "a weight is blamed "
        "in proportion to the ink it saw. Pink pictures: the step subtracts the digit from that neuron's weights; "
        "green ones: it adds the digit. Over thousands of digits these nudges pile up, which is why trained "
        f"weight pictures look like blurry strokes. {off} of the {n} neurons were switched off by ReLU: blank "
        "pictures, no change."
    )


# ---------------------------------------------------------------- one SGD step


def backprop_sgd_step(*, key: str, net: state.Network | None = None, digit: state.Digit | None = None,
                      lr: float = 0.01, pick_target: bool = True, url: bool = False) -> None:
    """One plain SGD step on this digit with a learning-rate slider: w ← w − lr × gradient; this digit's loss
    and probabilities before and after, and what the step does to other digits (too big a step overshoots)."""
    net = net or network_of_kind(None, cnn=False)  # any kind given is kept: the loss is the same for both
    if net is None:
        return
    digit = digit or state.current_digit()
    target = target_picker(key=key, net=net, digit=digit, url=url, show=pick_target)
    bw = _backward(net, digit, target)
    if bw is None:
        return
    lk = f"{key}_lr"
    if lk not in st.session_state:
        wanted = lr
        if url and st.query_params.get("lr") is not None:
            try:
                wanted = float(str(st.query_params["lr"]).strip())
            except ValueError:
                wanted = lr
        st.session_state[lk] = min(LEARNING_RATES, key=lambda v: abs(v - wanted) / v)  # the nearest offered
    lr = float(st.select_slider("Learning rate", LEARNING_RATES, key=lk, format_func=lambda v: f"{v:g}",
                                help="The size of the step: every weight moves by −lr × its gradient."))
    _set_url(url, lr=f"{lr:g}")
    step = backprop.sgd_step(net.model, digit.x, target, lr, bw)
    images, labels, what = state.overshoot_digits()
    others = backprop.effect_on_others(net.model, bw, lr, images, labels)

    name, idx = _largest_gradient_weight(step)
    w_before, w_grad, w_after = (float(t[name][idx]) for t in (step.before, step.gradient, step.after))
    where = f"{name}[{', '.join(str(i) for i in idx)}]"
    st.latex(rf"w \leftarrow w - \mathrm{{lr}} \cdot \frac{{\partial\, \mathrm{{loss}}}}{{\partial w}}: \quad"
             rf"\text{{{_tt(where)}}} = {_tex(w_before, 4)} - {lr:g} \times {_tex_small(w_grad)} = {w_after:.6f}")
    m1, m2, m3, m4 = st.columns(4)
    # −log p ≥ 0; rounding can give −0.0, which would print as "−0.0000" (+ 0.0 turns −0.0 into 0.0).
    after, before_loss = max(step.loss_after, 0.0) + 0.0, max(step.loss_before, 0.0) + 0.0
    # Deltas in ASCII: st.metric reads the sign (and draws the arrow) from a plain "-".
    m1.metric("this digit's loss after the step", _num(after), delta=f"{after - before_loss:+.4f}",
              delta_color="inverse", help=f"Before the step: {_num(before_loss)}")
    m2.metric(f"p({target}) after the step", f"{float(step.probs_after[target]):.2%}",
              delta=f"{(float(step.probs_after[target]) - float(step.probs_before[target])) * 100:+.2f} points")
    m3.metric(f"accuracy on {others.count} other digits", f"{others.accuracy_after:.1%}",
              delta=f"{(others.accuracy_after - others.accuracy_before) * 100:+.1f} points",
              help=f"Before the step: {others.accuracy_before:.1%} ({what})")
    m4.metric(f"of them called {target}", f"{others.called_target_after:.1%}",
              delta=f"{(others.called_target_after - others.called_target_before) * 100:+.1f} points",
              delta_color="off")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(viz.sgd_probabilities_figure(step), key=f"{key}_probs")
    with right:
        this_curve, other_curve = state.loss_curve(net, digit, target, CURVE_RATES)
        st.plotly_chart(viz.learning_rate_curve_figure(CURVE_RATES, this_curve.tolist(), other_curve.tolist(), lr,
                                                       others_label=f"{what} (average)"), key=f"{key}_curve",
                        config={"displayModeBar": False})  # its toolbar sat on the lr label
    overshoot = others.loss_after > 2 * max(others.loss_before, 0.05)
    st.caption(
        f"Left: this digit's probabilities before the step (hollow) and after it. Right: the loss after one step "
        f"of each learning rate, for this digit and, on average, for {what}. "
        + ("**This step is too big: it overshoots.** It was worked out for this one digit, and at this size it "
           f"wrecks the rest: the other digits' loss went from {_num(others.loss_before, 3)} to "
           f"{_num(others.loss_after, 3)}. Real training takes small steps averaged over batches of digits."
           if overshoot else
           f"A small step: this digit's loss moved from {_num(before_loss)} to {_num(after)} and "
           f"the other digits hardly noticed (their loss {_num(others.loss_before, 3)} → "
           f"{_num(others.loss_after, 3)}). Slide the learning rate up to see a step overshoot.")
        + " The shared network is untouched: the step is taken on a copy."
    )


def _largest_gradient_weight(step: backprop.SGDStep) -> tuple[str, tuple[int, ...]]:
    """(parameter name, index) of the weight with the largest |gradient|: the one the step moves most."""
    best = max((n for n in step.gradient if n.endswith("weight")), key=lambda n: float(step.gradient[n].abs().max()))
    g = step.gradient[best]
    flat = int(g.abs().argmax())
    idx = []
    for size in reversed(g.shape):
        idx.append(flat % size)
        flat //= size
    return best, tuple(reversed(idx))


# ---------------------------------------------------------------- TinyVGG: one kernel weight


def kernel_gradient(*, key: str, net: state.Network | None = None, digit: state.Digit | None = None,
                    layer: str = "conv_1_1", out_channel: int = -1, in_channel: int = -1, row: int = -1,
                    col: int = -1, url: bool = False) -> None:
    """One TinyVGG kernel weight's gradient as the sum over every position of (input under that kernel
    cell) × (the output map's gradient there), equal to autograd's. -1: the layer's largest gradient."""
    net = network_of_kind(net, cnn=True)
    if net is None:
        return
    digit = digit or state.current_digit()
    target = target_picker(key=key, net=net, digit=digit, url=url)
    bw = _backward(net, digit, target)
    if bw is None:
        return
    convs = bw.conv_layers()
    ss = st.session_state
    k = {n: f"{key}_{n}" for n in ("layer", "out", "in", "row", "col")}
    if k["layer"] not in ss:
        wanted = st.query_params.get("kg_layer", layer) if url else layer
        ss[k["layer"]] = wanted if wanted in convs else convs[0]
        for n, arg in (("out", out_channel), ("in", in_channel), ("row", row), ("col", col)):
            v = _url_int(f"kg_{n}", url, arg)
            if v >= 0:
                ss[k[n]] = v

    def reset() -> None:
        for n in ("out", "in", "row", "col"):
            ss.pop(k[n], None)

    c0, c1, c2, c3, c4 = st.columns([3, 2, 2, 1, 1])
    layer = c0.selectbox("Convolution layer", convs, key=k["layer"], on_change=reset)
    weight = bw.layer(layer).weight  # (C_out, C_in, kh, kw)
    c_out, c_in, kh, kw = weight.shape
    best = backprop.largest_kernel_gradient(bw, layer)
    for n, limit, b in (("out", c_out, best[0]), ("in", c_in, best[1]), ("row", kh, best[2]), ("col", kw, best[3])):
        if k[n] not in ss or not 0 <= int(ss[k[n]]) < limit:
            ss[k[n]] = b
    out_channel = c1.selectbox("Output map", list(range(c_out)), key=k["out"])
    in_channel = c2.selectbox("Input channel", list(range(c_in)), key=k["in"],
                              help="conv_1_1 reads the digit: one channel.")
    row = c3.selectbox("Kernel row", list(range(kh)), key=k["row"])
    col = c4.selectbox("Kernel column", list(range(kw)), key=k["col"])
    _set_url(url, kg_layer=layer, kg_out=out_channel, kg_in=in_channel, kg_row=row, kg_col=col)
    kg = backprop.kernel_gradient(bw, layer, int(out_channel), int(in_channel), int(row), int(col))
    kernel_grad = bw.layer(layer).weight_grad[kg.out_channel, kg.in_channel]
    st.plotly_chart(viz.kernel_gradient_figure(kg, kernel_grad, ink=layer == convs[0]), key=f"{key}_fig")
    flat = kg.products.flatten()
    order = flat.abs().argsort(descending=True).tolist()
    w = kg.products.shape[1]
    terms = " + ".join(rf"{_tex(float(kg.inputs.flatten()[i]), 3)} \cdot {_tex_small(float(kg.grad_output.flatten()[i]))}"
                       for i in order[:3])
    nonzero = int((flat != 0).sum())
    # Three lines: on one, a lesson's narrower column cut the result off.
    st.latex(rf"\begin{{aligned}}\frac{{\partial\, \mathrm{{loss}}}}{{\partial w_{{{kg.out_channel},{kg.in_channel},{kg.row},{kg.col}}}}}"
             rf" &= \sum_{{\text{{positions}}}} \text{{input}} \times \frac{{\partial\, \mathrm{{loss}}}}"
             rf"{{\partial\, \text{{output}}}} \\ &= {terms} + \dots \\ &= {_tex_small(kg.hand, bracket=False)}"
             rf"\end{{aligned}}")
    m1, m2, m3 = st.columns(3)
    m1.metric("the weight w", _num(kg.weight))
    m2.metric("sum over positions (by hand)", _small(kg.hand))
    m3.metric("autograd", _small(kg.autograd))
    _match(kg.hand, kg.autograd, "gradient for this kernel weight")
    positions = kg.products.numel()
    first = order[0]
    st.caption(
        f"The same 3 × 3 kernel is used at all {positions} positions of the map, so its weight at cell "
        f"({kg.row}, {kg.col}) collects blame from every one of them: the input value that cell touched there "
        f"times how much the loss wanted that output to change. {nonzero} of the {positions} products are not 0 "
        f"(blank input or outputs ReLU switched off add nothing); the largest is at position "
        f"({first // w}, {first % w}). The blame of the output maps comes back from the ten scores through the "
        "layers above: max pooling hands each window's blame to its winner, ReLU stops it where it was off."
    )


# ---------------------------------------------------------------- the FC explorer's Backward mode


def mode_picker(*, key: str, url: bool = False) -> str:
    """Forward / Backward switch for the FC explorer; the link keeps it (``?mode=backward``)."""
    if key not in st.session_state:
        wanted = str(st.query_params.get("mode", "forward")).lower() if url else "forward"
        st.session_state[key] = "Backward" if wanted == "backward" else "Forward"
    mode = st.segmented_control("Direction", MODES, key=key, required=True, label_visibility="collapsed") or MODES[0]
    if url:
        if mode == "Backward":
            _set_url(True, mode="backward")
        elif "mode" in st.query_params:
            del st.query_params["mode"]
    return mode


def fc_backward(*, key: str, net: state.Network | None = None, digit: state.Digit | None = None,
                url: bool = False) -> None:
    """The Backward mode: from the loss back through every layer to one weight, the gradient pictures and one
    SGD step, for the current digit and a chosen target class."""
    net = network_of_kind(net, cnn=False)
    if net is None:
        return
    digit = digit or state.current_digit()
    st.markdown(
        f"**Backpropagation on {digit.source}.** The loss says how wrong {net.label} is about this digit; "
        "the chain rule hands that blame back, layer by layer, to every weight. Each number below is computed "
        "by hand from the chain rule and checked against PyTorch's autograd."
    )
    st.subheader("1. The loss and its blame on the ten scores")
    backprop_loss(key=f"{key}_loss", net=net, digit=digit, url=url)
    st.subheader("2. Blame flows back: every neuron's δ")
    backprop_diagram(key=f"{key}_diagram", net=net, digit=digit, pick_target=False, url=url)
    weight_tab, pictures_tab, step_tab = st.tabs(["3. One weight's gradient", "4. First-layer gradient pictures",
                                                  "5. One SGD step"])
    with weight_tab:
        backprop_weight(key=f"{key}_weight", net=net, digit=digit, pick_target=False, url=url)
    with pictures_tab:
        backprop_gradient_pictures(key=f"{key}_pictures", net=net, digit=digit, pick_target=False)
    with step_tab:
        backprop_sgd_step(key=f"{key}_sgd", net=net, digit=digit, pick_target=False, url=url)
