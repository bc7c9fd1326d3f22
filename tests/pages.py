"""Helpers for the page tests: the real app in Streamlit's AppTest, and reading back what it drew.

Plotly charts come back as their figure JSON (the same the browser gets), so a test
compares the numbers on the page with numbers it computed itself.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
from streamlit.testing.v1 import AppTest

from streamlit_app import state

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app" / "app.py")


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def open_page(page: str, digit: state.Digit | None = None, query: dict[str, str] | None = None,
              session: dict | None = None, timeout: float = 120, arrive_home: bool = True) -> AppTest:
    """The app opened on ``page`` (e.g. "views/cnn_explorer.py") with this digit (default: sample 7).

    query: the link's parameters; session: session-state entries set before the page runs (a
    chosen network ``net``, ``my_models``). arrive_home: run the home page first, as a visitor
    arriving by a link does (the app reads the link on its first run).
    """
    at = AppTest.from_file(APP, default_timeout=timeout)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    if arrive_home:
        at.run()
    at.switch_page(page)
    at.session_state["digit"] = digit or state.sample_digit(7)
    for k, v in (session or {}).items():
        at.session_state[k] = v
    at.run()
    assert_no_exception(at)
    return at


def figures(at: AppTest) -> list[dict]:
    """Every plotly figure on the page, in page order."""
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def chart(at: AppTest, key: str) -> dict:
    """The plotly figure JSON of the chart whose Streamlit key ends with ``key``."""
    found = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key)]
    assert found, f"no chart {key}: {[c.proto.id for c in at.get('plotly_chart')]}"
    return json.loads(found[0].proto.spec)


def metric(at: AppTest, label: str) -> str:
    """The value of the one metric with this label."""
    found = [m.value for m in at.metric if m.label == label]
    assert len(found) == 1, (label, [m.label for m in at.metric])
    return found[0]


def number(text: str) -> float:
    """A number as the pages print it (a real minus sign, maybe a % sign) as a float."""
    return float(text.replace("\u2212", "-").rstrip("%"))


def values(v) -> list:
    """A figure array as a list: plotly sends numpy arrays as {"dtype", "bdata": base64}."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
    return list(v)


def array(v) -> np.ndarray:
    """A figure array as numpy in its own shape: plotly sends {"dtype", "bdata", "shape"} or plain (nested) lists."""
    if isinstance(v, dict) and "bdata" in v:
        flat = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return flat.reshape(tuple(int(n) for n in str(v.get("shape", flat.size)).split(",")))
    return np.array(v, dtype=float)


def page_links(at: AppTest) -> dict[str, object]:
    """The page's st.page_link elements by label (their protos: ``.page`` is the URL path, ``.query_string``)."""
    return {link.proto.label: link.proto for link in at.get("page_link")}


def follow_link(at: AppTest, label: str, page: str) -> AppTest:
    """Follow the page link ``label`` to ``page`` (its script, e.g. "views/unit.py") as the browser does:
    the link's query replaces the URL's, then the page runs."""
    link = page_links(at)[label]
    for name in list(at.query_params):
        del at.query_params[name]
    for name, value in parse_qsl(link.query_string):
        at.query_params[name] = value
    return at.switch_page(page).run()
