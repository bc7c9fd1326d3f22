"""Inside one unit: its biography, a link to it from the explorers, and changing it to watch what happens.

The numbers come from ``digitrec.units`` and ``digitrec.intervention``, the
figures from ``digitrec.viz.units``; the one pass over the test set is cached
by ``state.unit_statistics``.
"""

from __future__ import annotations

import streamlit as st
import torch

from digitrec import config, intervention, models, units
from digitrec.data import IMAGE_SIZE
from digitrec.inspection import layer_io, predict_proba
from digitrec.viz import units as viz
from digitrec.viz.digits import digit_figure, percent_sure, probabilities_figure
from streamlit_app import state

UNIT_PAGE = "views/unit.py"


def _as_int(value, default: int) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def _is_map(model, layer: str) -> bool:
    return isinstance(dict(model.named_children())[layer], torch.nn.Conv2d)


def _dead_sentence(model, dead: dict[str, list[int]]) -> str:
    parts = [f"{layer} {'map' if _is_map(model, layer) else 'neuron'}{'s' if len(ids) > 1 else ''} "
             + ", ".join(str(i) for i in ids) for layer, ids in dead.items() if ids]
    if not parts:
        return "No unit of this network is dead: every one is positive on at least one test digit."
    return ("Dead units (never positive on any of the 10,000 test digits, so ReLU always gives 0 and nothing after "
            "them ever hears from them): " + "; ".join(parts) + ".")


def choose_unit(*, key: str, net: state.Network, layer: str = "", unit: int = 0, url: bool = False) -> units.Unit:
    """Layer and unit pickers (dead units marked); the first choice comes from the URL, else the arguments."""
    model = net.model
    layers = units.unit_layers(model)
    ss = st.session_state
    k_layer, k_unit = f"{key}_layer", f"{key}_unit"
    if k_layer not in ss:
        asked = url and ("layer" in st.query_params or "unit" in st.query_params)
        wanted_layer = (st.query_params.get("layer") if url else None) or layer or layers[0]
        wanted_unit = _as_int(st.query_params.get("unit") if url else None, _as_int(unit, 0))
        chosen, moved = units.clamp_unit(model, wanted_layer, wanted_unit)
        if moved and asked:  # plain words of our own: nothing from the URL is echoed (it could carry Markdown)
            st.toast(f"The link named a layer or unit this network does not have, so this shows "
                     f"{chosen.layer} unit {chosen.index}.")
        ss[k_layer], ss[k_unit] = chosen.layer, chosen.index
    if ss[k_layer] not in layers:  # another network was picked since
        ss[k_layer] = layers[0]
    dead = state.dead_units(net)
    left, right = st.columns(2)
    chosen_layer = left.selectbox("Layer", layers, key=k_layer,
                                  help="A unit is named by the layer that computes it: map 3 of relu_2_1 is map 3 "
                                       "of conv_2_1 with its negatives cut off.")
    count = units.unit_count(model, chosen_layer)
    if _as_int(ss.get(k_unit), 0) not in range(count):
        ss[k_unit] = 0
    kind = "map" if _is_map(model, chosen_layer) else "neuron"
    index = right.selectbox(
        "Feature map" if kind == "map" else "Neuron", list(range(count)), key=k_unit,
        format_func=lambda i: f"{kind} {i}" + (" (dead)" if i in dead[chosen_layer] else ""))
    if url:
        for name, value in (("layer", chosen_layer), ("unit", str(index))):
            if st.query_params.get(name) != value:
                st.query_params[name] = value
    return units.Unit(chosen_layer, int(index))


def _pick(net: state.Network | None, network: str) -> state.Network:
    """The given network, else the one a lesson names ("fc", "cnn"), else the one chosen in the sidebar."""
    return net or (state.networks().get(network) if network else None) or state.network()


def unit_biography(*, key: str, net: state.Network | None = None, network: str = "", layer: str = "",
                   unit: int = 0, pick: str = "", url: bool = False) -> None:
    """Everything about one neuron or feature map: top digits (and patches), how often it fires, dead or not,
    receptive field on the current digit, the picture it likes best, its pull on the ten scores.

    pick: start at the unit ``units.pick_unit`` chooses instead of ``unit``: "quietest" (fires least, so a dead
    one first) or "clearest" (top inputs agree most), in ``layer`` or, when it is empty, the whole network; the
    lessons' ``{{ NET.units.… }}`` facts name the same unit."""
    net = _at_snapshot(key=key, net=_pick(net, network))
    dataset = state.require_mnist()
    digit = state.current_digit()
    model = net.model
    stats = state.unit_statistics(net)
    if pick and pick not in units.PICKS:
        st.warning(f"This widget can pick the {' or the '.join(units.PICKS)} unit; it shows the first one instead.")
    elif pick:
        chosen = state.model_result(net, ("picked unit", pick, layer),
                                    lambda: units.pick_unit(model, stats, dataset.test, pick, layer))
        layer, unit = chosen.layer, chosen.index
    u = choose_unit(key=key, net=net, layer=layer, unit=unit, url=url)
    bio = units.biography(model, stats, dataset.test, u)
    is_map = bio.kind == "feature map"
    if bio.dead:
        st.warning(f"{u.layer} {bio.kind} {u.index} is **dead**: it is never positive on any of the 10,000 test "
                 "digits, so after ReLU it is always 0 and the layers after it never hear from it.")
    m1, m2, m3 = st.columns(3)
    m1.metric("Fires on, of the test digits", f"{bio.fires:.1%}",
              help="Positive (somewhere, for a map) on this share of the 10,000 test digits.")
    if is_map:
        m2.metric("Cells positive", f"{bio.cells_positive:.1%}", help="Mean share of the map's cells above 0.")
        m3.metric("Receptive field", f"{bio.receptive_field} × {bio.receptive_field} px",
                  help="The input pixels one cell of this map can see (the border may cut it).")
    else:
        m2.metric("Sees", "every pixel" if u.layer == units.unit_layers(model)[0] else "every unit before it")
        m3.metric("Strongest value", f"{float(bio.top_values[0]):.2f}")

    top_col, mid_col, max_col = st.columns([3, 3, 2] if is_map else [3, 0.01, 2])
    with top_col:
        st.markdown("**The test digits that excite it most**")
        images = dataset.test.images[bio.top_indices].float() / 255.0
        st.plotly_chart(viz.top_digits_figure(images, bio.top_indices, bio.top_values, bio.boxes),
                        key=f"{key}_top", config={"displayModeBar": False})
        st.caption("Its value before ReLU on each" + (" (its strongest cell; the box is what that cell sees)."
                                                    if is_map else "."))
    if is_map:
        with mid_col:
            st.markdown("**What its strongest cell saw**")
            st.plotly_chart(viz.patches_figure(bio.patches, bio.top_values), key=f"{key}_patches",
                            config={"displayModeBar": False})
            st.caption(f"The {bio.receptive_field} × {bio.receptive_field} input patch under the strongest cell of "
                       "each top digit: what they share is what this map detects.")
    with max_col:
        st.markdown("**The picture it likes best**")
        with st.spinner("Painting the input that excites it most…"):
            best = state.model_result(net, ("maximising input", u.layer, u.index),
                                      lambda: units.maximising_input(model, u))
        st.plotly_chart(digit_figure(best, height=230), key=f"{key}_max", config={"displayModeBar": False})
        _, on_best = layer_io(model, best.reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE), u.layer)
        value = float(on_best[0, u.index].max())  # a neuron's value; a map's strongest cell
        st.caption(f"Gradient ascent from a blank grey image, with jitter and blur. Its {'strongest cell' if is_map else 'value'} "
                   f"here: {value:.2f} (the top test digit: {float(bio.top_values[0]):.2f}).")

    weights_col, left, right = st.columns([2, 3, 3])
    with weights_col:
        st.markdown("**Its incoming weights**")
        st.plotly_chart(viz.weights_figure(units.incoming_weights(model, u)), key=f"{key}_weights",
                        config={"displayModeBar": False})
        st.caption("What it multiplies its inputs by: orange adds, purple subtracts"
                   + (" (one kernel per map it reads, titled with that map's number)." if is_map else "."))
    with left:
        st.markdown("**Its pull on the ten scores**")
        pull = state.model_result(net, ("pull", u.layer, u.index), lambda: units.pull(model, dataset.test, u))
        st.plotly_chart(viz.pull_figure(pull), key=f"{key}_pull", config={"displayModeBar": False})
        up, down = int(pull.argmax()), int(pull.argmin())
        st.caption(f"How much each score drops, on average over {units.PULL_DIGITS:,} test digits, when this unit "
                   "is switched off. " + (f"It pushes hardest for {up} and against {down}." if bool(pull.abs().max() > 0)
                                          else "Nothing changes: a unit that never fires has no pull."))
    with right:
        st.markdown(f"**On the current digit ({digit.source})**")
        _, out = layer_io(model, digit.x, u.layer)
        if is_map:
            values = out[0, u.index]  # (H, W) before ReLU
            h, w = values.shape
            flat = int(values.argmax())
            k_cell = f"{key}_cell"
            default = f"{flat // w},{flat % w}"
            cells = [f"{r},{c}" for r in range(h) for c in range(w)]
            if st.session_state.get(k_cell) not in cells:
                st.session_state[k_cell] = default
            cell_text = st.select_slider("Cell (row, col)", cells, key=k_cell,
                                         help="Starts at the map's strongest cell for this digit.")
            r, c = (int(v) for v in cell_text.split(","))
            box = units.receptive_field(model, u.layer, r, c)
            a, b = st.columns(2)
            a.plotly_chart(viz.unit_map_figure(values, (r, c), f"its map, cell ({r}, {c}) = {float(values[r, c]):.2f}",
                                               height=230), key=f"{key}_map", config={"displayModeBar": False})
            b.plotly_chart(viz.receptive_field_figure(digit.pixels, box, "what that cell sees", height=230),
                           key=f"{key}_rf", config={"displayModeBar": False})
        else:
            value = float(out[0, u.index])
            rank = int((stats[u.layer].peak[:, u.index] > value).sum())
            st.metric("Its value before ReLU", f"{value:.3f}",
                      help="After ReLU it is max(0, this).")
            st.caption(f"Higher than {1 - rank / len(dataset.test):.1%} of the test digits' values for this neuron.")


def _at_snapshot(*, key: str, net: state.Network) -> state.Network:
    """For a network trained on the Train page: a slider over its run's snapshots, and the network at the chosen one
    (the rest of the panel describes that network). Any other network is returned as it is."""
    snaps = state.training_snapshots(net)
    if len(snaps) < 2:
        return net
    k_at = f"{key}_snapshot_{net.key}"
    if st.session_state.get(k_at) not in range(len(snaps)):
        st.session_state[k_at] = len(snaps) - 1  # start at the trained network
    i = st.select_slider(
        "Your run, at", options=list(range(len(snaps))), key=k_at,
        format_func=lambda i: f"step {snaps[i].step:,}",
        help="Every panel below is recomputed for the network as it was at that step of training (once per step).")
    snap = snaps[i]
    accuracy = f", validation accuracy {snap.val_accuracy:.1%}" if snap.val_accuracy is not None else ""
    st.caption(f"{net.label} kept {len(snaps)} snapshots while it trained. This is step {snap.step:,}{accuracy}: "
               "slide from the first to the last to watch the unit's weights, top digits and pull form.")
    return state.snapshot_network(net, snap)


def unit_link(*, key: str, net: state.Network | None = None, network: str = "") -> None:
    """A row for the explorers: the dead units of this network, and any neuron or map's biography one click away."""
    net = _pick(net, network)
    model = net.model
    macs = state.model_result(net, ("multiply-adds",), lambda: models.count_macs(model))
    if macs <= config.STATISTICS_MAX_MACS or st.session_state.get(f"{key}_measure"):
        st.caption(_dead_sentence(model, state.dead_units(net)))
    else:  # a wide network: the 10,000-digit pass is the learner's choice, not a side effect of opening a page
        st.caption(f"This network needs {macs:,} multiply-adds per digit, so finding its dead units means a long "
                   "pass over the 10,000 test digits.")
        if st.button("Find its dead units", key=f"{key}_measure_button", icon=":material/hourglass:"):
            st.session_state[f"{key}_measure"] = True
            st.rerun()
    layers = units.unit_layers(model)
    a, b, c = st.columns([2, 2, 3], vertical_alignment="bottom")
    layer = a.selectbox("Layer", layers, key=f"{key}_layer")
    count = units.unit_count(model, layer)
    index = b.selectbox("Map" if _is_map(model, layer) else "Neuron", list(range(count)), key=f"{key}_unit")
    # A link, not a button that switches pages (a click sent as the page finished drawing could be dropped:
    # widgets/training.py model_export). Its ?net= wins on arrival (state.sync_url): the unit page shows the
    # network this unit belongs to, whatever the session chose before.
    with c:
        st.page_link(UNIT_PAGE, label=f"See the biography of {layer} unit {index}", icon=":material/person_search:",
                     query_params={"layer": layer, "unit": str(index), "net": net.key,
                                   "digit": state.current_digit().ref})


# ---------------------------------------------------------------- change a unit and watch


def unit_intervention(*, key: str, net: state.Network | None = None, network: str = "") -> None:
    """Knock out or clamp a unit, or type a new weight, on the session's own copy; watch the digit's scores move."""
    chosen = _pick(net, network)
    base = state.base_network(chosen)
    digit = state.current_digit()
    model = base.model
    current = state.changes(base)
    layers = units.unit_layers(model) + [n for n, m in model.named_children()
                                         if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1:]
    with st.form(f"{key}_form", border=True):
        a, b, c = st.columns(3)
        kind = a.radio("Change", intervention.KINDS, key=f"{key}_kind", horizontal=False,
                       help="knock out: the unit gives 0 on every digit. clamp: it gives the value below on every "
                            "digit. set weight: one weight becomes the value below.")
        layer = b.selectbox("Layer", layers, key=f"{key}_layer")
        unit = b.number_input("Unit (neuron or map); for a weight, its row", min_value=0, value=0, step=1,
                              key=f"{key}_unit")
        value = c.number_input("Value (clamp or weight)", value=0.0, step=0.1, format="%.4f", key=f"{key}_value")
        rest = c.text_input("Weight position after the row",
                            value="0" if not _is_map(model, layer) else "0, 1, 1", key=f"{key}_rest",
                            help="For a Linear layer the input index (0-783 for fc_1); for a convolution "
                                 "in-channel, row, column of the 3 × 3 kernel.")
        apply = st.form_submit_button("Apply the change", type="primary")
    if apply:
        try:
            weight = tuple(int(p) for p in rest.replace(",", " ").split()) if kind == "set weight" else ()
        except ValueError:
            st.error("The weight position must be whole numbers separated by commas, such as 0, 1, 1.")
            weight = None
        if weight is not None:
            change = intervention.Change(kind, layer, int(unit), float(value), weight)
            try:
                state.set_changes(base, current + [change], digit.x)
                current = state.changes(base)
            except intervention.BadChange as e:
                st.error(str(e))
    if not current:
        st.info(f"No change yet: {base.label} is as trained. Changes are made on your own copy; the shared "
                "network is never touched.")
        return
    changed = state.networks()[state.CHANGED_PREFIX + base.key]
    st.markdown("**Your changes:** " + "; ".join(ch.describe() for ch in current))
    if st.button("Reset: undo every change", key=f"{key}_reset", icon=":material/undo:"):
        state.set_changes(base, [], digit.x)
        st.rerun()
    before = predict_proba(base.model, digit.x)[0]
    after = predict_proba(changed.model, digit.x)[0]
    st.plotly_chart(probabilities_figure({f"{base.label}": before, "with your changes": after}, height=280),
                    key=f"{key}_probs", config={"displayModeBar": False})
    st.caption(f"On {digit.source}: it said {int(before.argmax())} ({percent_sure(before.max())}); with your changes it "
               f"says {int(after.argmax())} ({percent_sure(after.max())}). The changed copy is in every page's network "
               f"picker as “{changed.label}”, so the explorers show its activations and arithmetic.")
    with st.expander("Every activation of the changed network on this digit", expanded=False):
        if changed.is_cnn:
            from streamlit_app.widgets.cnn import cnn_overview

            cnn_overview(key=f"{key}_overview", net=changed, digit=digit)
        else:
            from streamlit_app.widgets.fc import fc_network_diagram

            fc_network_diagram(key=f"{key}_diagram", net=changed, digit=digit)
    if st.button("Accuracy on the 10,000 test digits with this change", key=f"{key}_acc"):
        from digitrec.train import predictions

        test = state.require_mnist().test
        for label, n in (("as trained", base), ("with your changes", changed)):
            probs = state.model_result(n, ("test predictions",), lambda n=n: predictions(n.model, test))
            st.write(f"{label}: {float((probs.argmax(1) == test.labels).float().mean()):.2%}")
