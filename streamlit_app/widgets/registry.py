"""Widgets a lesson may embed by name (``::: widget NAME key=value``).

Each entry points at a keyword-only function in ``streamlit_app/widgets`` that
the explorer pages use too, so a lesson never carries its own copy of a
drawing or of the maths. Functions are imported when first used, so one broken
widget module cannot take the whole course down.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Callable

WIDGETS: dict[str, tuple[str, str, str]] = {
    # name: (module in streamlit_app.widgets, function, one line for teachers)
    "digit_input": ("digit_input", "digit_input", "draw, upload or pick the current digit"),
    "preprocess_view": ("preprocess_view", "preprocess_view", "how a drawing becomes 28 x 28"),
    "predictions": ("predictions", "predictions", "both networks' ten probabilities"),
    "digit_numbers": ("fc", "digit_numbers", "the current digit as 28 x 28 numbers"),
    "flatten_view": ("fc", "flatten_view", "a 28 x 28 grid becoming 784 numbers"),
    "fc_neuron": ("fc", "fc_neuron", "one neuron's weighted sum, with its weights as an image"),
    "fc_weight_grid": ("fc", "fc_weight_grid", "every first-layer neuron's weights as images"),
    "fc_forward_steps": ("fc", "fc_forward_steps", "the FC forward pass step by step"),
    "fc_network_diagram": ("fc", "fc_network_diagram", "the whole FC network as dots lit by the current digit"),
    "linear_collapse": ("fc", "linear_collapse", "two Linear layers without ReLU are one"),
    "softmax": ("softmax", "softmax_widget", "scores to probabilities, exp(z)/sum exp(z)"),
    "loss": ("softmax", "loss_widget", "cross-entropy of the current digit"),
    "loss_slice": ("landscape", "loss_slice", "the real loss along one weight, and gradient descent steps on it"),
    "live_training": ("training", "live_training", "train the FC network live for a few hundred steps"),
    "race_chart": ("training", "race_chart", "FC vs CNN: accuracy against seconds"),
    "conv_sandbox": ("cnn", "conv_sandbox", "padding, stride and kernel size on the current digit"),
    "conv_arithmetic": ("cnn", "conv_arithmetic", "one convolution output: kernel x patch, summed"),
    "relu_detail": ("cnn", "relu_detail", "a feature map before and after ReLU"),
    "pool_detail": ("cnn", "pool_detail", "2 x 2 max pooling"),
    "cnn_overview": ("cnn", "cnn_overview", "every TinyVGG layer's feature maps"),
    "cnn_filters": ("cnn", "cnn_filters", "the 3 x 3 kernels of a conv layer"),
    "cnn_output": ("cnn", "cnn_output", "flatten, the last layer and softmax, in numbers"),
    "confusion_matrix": ("mistakes", "confusion_matrix", "a network's confusion matrix on the 10,000 test digits"),
    "confident_mistakes": ("mistakes", "confident_mistakes", "a network's most confident mistakes on the test digits"),
    "network_table": ("compare", "network_table", "parameters and multiply-adds of both networks"),
    "shift_test": ("compare", "shift_test", "shift the digit and watch both networks' confidence"),
    "attribution_compare": ("attribution", "attribution_compare", "an attribution map for both networks"),
    "attribution_classes": ("attribution", "attribution_classes", "attributions for all ten classes"),
    "attribution_sanity": ("attribution", "attribution_sanity", "the randomised-weights sanity check"),
    "unit_biography": ("units", "unit_biography", "one neuron or feature map: top digits, dead or not, best picture"),
    "unit_link": ("units", "unit_link", "the dead units named; any unit's biography one click away"),
    "unit_intervention": ("units", "unit_intervention", "switch a unit off or type a weight; watch the scores"),
    "digit_map": ("embedding", "digit_map", "10,000 test digits on a 2-D map of one layer, yours placed"),
    "make_it_a": ("fooling", "make_it_a", "the smallest edit that makes a network read another digit"),
    "noise_test": ("fooling", "noise_test", "what the networks call random noise"),
    "draw_to_fool": ("fooling", "draw_to_fool", "draw a digit one network misreads"),
}


# The explorer page that shows each widget module's piece in full.
PAGES = {
    "digit_input": ("views/draw.py", "Draw & predict"),
    "preprocess_view": ("views/draw.py", "Draw & predict"),
    "predictions": ("views/draw.py", "Draw & predict"),
    "fc": ("views/fc_explorer.py", "the fully connected explorer"),
    "softmax": ("views/fc_explorer.py", "the fully connected explorer"),
    "cnn": ("views/cnn_explorer.py", "the convolutional explorer"),
    "attribution": ("views/attributions.py", "the attributions page"),
    "training": ("views/train.py", "the training page"),
    "compare": ("views/race.py", "the FC vs CNN race"),
    "units": ("views/unit.py", "Inside a unit"),
    "embedding": ("views/map.py", "Where a digit lands"),
    "fooling": ("views/break_it.py", "Break it"),
    "mistakes": ("views/mistakes.py", "the Mistakes page"),
}


# Widgets whose full page is not their module's.
WIDGET_PAGES = {
    "race_chart": ("views/race.py", "the FC vs CNN race"),
    "loss_slice": ("views/train.py", "the training page"),
}


def page_of(name: str) -> tuple[str, str] | None:
    """(page file, title) of the explorer that shows widget ``name`` in full."""
    if name in WIDGET_PAGES:
        return WIDGET_PAGES[name]
    return PAGES.get(WIDGETS[name][0]) if name in WIDGETS else None


def resolve(name: str) -> Callable[..., None]:
    """The widget function for ``name``; KeyError with the known names if there is none."""
    if name not in WIDGETS:
        raise KeyError(f"There is no widget called {name!r}. Known widgets: {', '.join(sorted(WIDGETS))}.")
    module, function, _ = WIDGETS[name]
    return getattr(importlib.import_module(f"streamlit_app.widgets.{module}"), function)


def lesson_params(name: str) -> dict[str, inspect.Parameter]:
    """The parameters a lesson may set on widget ``name``, by name.

    Those are the keyword-only ones with a str/int/float/bool default. ``key`` is
    the page's, and objects such as ``digit: Digit | None = None`` default to the
    current ones, so neither can be written in a lesson. ``url`` (a widget writing
    its view into the link) is left out too: on a lesson the link holds the lesson
    and step, and a widget's own ``?step=`` would fight the page's.
    """
    sig = inspect.signature(resolve(name))
    return {
        p.name: p for p in sig.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
        and type(p.default) in (str, int, float, bool) and p.name not in ("key", "url")
    }


def check(name: str, params: dict[str, object]) -> list[str]:
    """What is wrong with embedding widget ``name`` with ``params``, in sentences; [] when nothing.

    Checks the name is registered, the function imports and takes a keyword-only
    ``key``, every param is one it accepts, and each value has its default's type
    (an int where a float is expected is fine).
    """
    try:
        function = resolve(name)
    except KeyError as e:
        return [str(e.args[0])]
    except Exception as e:  # a widget module that fails to import: say so, don't crash the course
        return [f"The widget {name!r} could not be loaded: {type(e).__name__}: {e}"]
    sig = inspect.signature(function)
    key = sig.parameters.get("key")
    if key is None or key.kind is not inspect.Parameter.KEYWORD_ONLY:
        return [f"The widget function for {name!r} does not take a keyword-only 'key' argument."]
    allowed = lesson_params(name)
    problems = []
    for param, value in params.items():
        if param not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            problems.append(f"The widget {name!r} has no parameter {param!r} (it takes: {known}).")
            continue
        expected = type(allowed[param].default)
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        ok = ok or (expected is float and type(value) is int)
        if not ok:
            problems.append(
                f"The widget {name!r} expects {param}= to be {expected.__name__} "
                f"(default {allowed[param].default!r}), got {value!r}."
            )
    return problems


def _as_text(value: object) -> str:
    """A default as a lesson would write it: true/false, 3, 0.5, conv_1_1 (and "" for empty text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return '""' if value == "" else str(value)


def markdown_table() -> str:
    """Every widget, its parameters with defaults and what it shows, as a Markdown table (for lessons/README.md)."""
    rows = ["| widget | parameters (default) | what it shows | full page |", "|---|---|---|---|"]
    for name in WIDGETS:  # in the order of the course
        params = ", ".join(f"`{p}={_as_text(v.default)}`" for p, v in lesson_params(name).items()) or "–"
        page = page_of(name)
        rows.append(f"| `{name}` | {params} | {WIDGETS[name][2]} | {page[1] if page else '–'} |")
    return "\n".join(rows)


README_START = "<!-- widgets: generated, do not edit by hand -->\n"
README_END = "\n<!-- end of widgets -->"


def update_readme(path: str | Path) -> None:
    """Replace the widget table of the teachers' README (between its two markers) with ``markdown_table()``."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    path.write_text(text[:start] + markdown_table() + text[end:], encoding="utf-8")


if __name__ == "__main__":
    # python -m streamlit_app.widgets.registry           print the table
    # python -m streamlit_app.widgets.registry --update  rewrite it in lessons/README.md
    import sys

    if sys.argv[1:] == ["--update"]:
        update_readme(Path(__file__).resolve().parents[2] / "lessons" / "README.md")
    else:
        print(markdown_table())
