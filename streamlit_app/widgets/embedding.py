"""Where a digit lands: a layer's view of the 10,000 test digits as a 2-D map, the current digit placed on it.

Numbers from ``digitrec.embedding`` (maps built once per network and layer by
``state.digit_map``), figures from ``digitrec.viz.embedding``.
"""

from __future__ import annotations

import time

import streamlit as st

from digitrec import embedding
from digitrec.viz.embedding import map_figure
from digitrec.viz.units import image_grid
from streamlit_app import state

METHODS = ("PCA", "UMAP")


def digit_map(*, key: str, net: state.Network | None = None, network: str = "", layer: str = "",
              method: str = "PCA") -> None:
    """The map of one layer with the current digit placed on it, its 8 nearest training digits, and a click on
    any point to see that digit."""
    net = net or (state.networks().get(network) if network else None) or state.network()
    dataset = state.require_mnist()
    digit = state.current_digit()
    layers = embedding.map_layers(net.model)
    k_layer, k_method = f"{key}_layer", f"{key}_method"
    if st.session_state.get(k_layer) not in layers:
        st.session_state[k_layer] = layer if layer in layers else layers[-2]
    if st.session_state.get(k_method) not in METHODS:
        st.session_state[k_method] = method if method in METHODS else "PCA"
    a, b = st.columns([3, 1])
    chosen = a.segmented_control("Layer", layers, key=k_layer, format_func=embedding.layer_title, required=True,
                                 help="Each layer turns a digit into a list of numbers; the map places those lists.")
    chosen = chosen or layers[-2]
    how = b.segmented_control("Projection", METHODS, key=k_method, required=True,
                              help="PCA: the two directions of largest spread, instant. UMAP: keeps neighbours "
                                   "together, built once per layer (seconds).") or "PCA"
    dmap = state.digit_map(net, chosen, how)
    start = time.perf_counter()
    features = embedding.features_of(net.model, digit.x, chosen)  # (1, D)
    placed = dmap.place(features)[0]
    place_ms = (time.perf_counter() - start) * 1000
    labels = dataset.test.labels[: len(dmap.coords)]
    title = (f"{net.label}: {embedding.layer_title(chosen)} of {len(dmap.coords):,} test digits ({how}); "
             f"the star is {digit.source}")
    event = st.plotly_chart(map_figure(dmap.coords, labels, title, placed=placed), key=f"{key}_map",
                            on_select="rerun", selection_mode="points", config={"scrollZoom": True})
    score = embedding.separation(dmap.coords, labels)
    measured = min(len(dmap.coords), embedding.SEPARATION_POINTS)
    which = f"the first {measured:,}" if measured < len(dmap.coords) else f"all {measured:,}"
    st.caption(
        f"One dot per test digit, coloured by its true class. For {score:.0%} of {which} dots, most of their "
        f"{embedding.SEPARATION_NEIGHBOURS} nearest dots on this map are of the same class "
        f"({embedding.separation_words(score)}; a random mix gives about 0 %, ten clean islands nearly 100 %). "
        f"Built in {'under 0.1' if dmap.seconds < 0.05 else f'{dmap.seconds:.1f}'} s; your digit placed in "
        f"{place_ms:.0f} ms. Click a dot to see its digit; "
        "scroll to zoom."
    )
    left, right = st.columns(2)
    with left:
        st.markdown(f"**The 8 training digits closest to {digit.source} at {embedding.layer_title(chosen)}**")
        pool = state.neighbour_features(net)[chosen]
        idx, dist = embedding.nearest(features[0], pool)
        images = embedding.pool_images(dataset.train)[idx].float() / 255.0
        titles = [f"a {int(dataset.train.labels[i])} (distance {float(d):.1f})" for i, d in zip(idx, dist)]
        st.plotly_chart(image_grid(images, titles, cols=4, cell_px=120), key=f"{key}_neighbours",
                        config={"displayModeBar": False})
        votes = [int(dataset.train.labels[i]) for i in idx]
        common = max(set(votes), key=votes.count)
        st.caption(f"Measured in the layer's own numbers (not on the flat map), among the first "
                   f"{embedding.NEIGHBOUR_POOL:,} training digits. {votes.count(common)} of 8 are {common}s.")
    with right:
        points = (event or {}).get("selection", {}).get("points", []) if event else []
        index = next((p.get("customdata") for p in points if isinstance(p.get("customdata"), int)), None)
        if index is None:
            st.info("Click a dot on the map to see which digit it is.")
        else:
            st.markdown(f"**Test digit #{index}, labelled {int(dataset.test.labels[index])}**")
            st.plotly_chart(image_grid((dataset.test.images[index].float() / 255.0).unsqueeze(0),
                                       [f"test digit #{index}"], cols=1, height=230),
                            key=f"{key}_clicked", config={"displayModeBar": False})
            if st.button("Make it the current digit", key=f"{key}_use"):
                state.set_current_digit(state.test_digit(index))
                st.rerun()
