"""examples/your_model.ipynb runs as a learner runs it (its code cells, in order), and
digitrec.show() puts the trained model in the app's pickers. DIGITREC_SHOW=print: no browser and
no server is started; the link is printed and returned."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from digitrec import checkpoints
from tests.pages import open_page

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "your_model.ipynb"


def test_the_notebook_trains_a_model_and_opens_digitrec_on_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIGITREC_SHOW", "print")
    monkeypatch.setenv("DIGITREC_SHOWN", str(tmp_path / "shown"))
    monkeypatch.chdir(tmp_path)
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    namespace: dict = {}
    for cell in cells:
        exec(compile("".join(cell["source"]), f"{NOTEBOOK.name} cell", "exec"), namespace)

    assert namespace["url"] == "http://localhost:8501/cnn?net=mine-my-cnn"
    out = capsys.readouterr().out
    assert "Open http://localhost:8501/cnn?net=mine-my-cnn" in out and "test accuracy" in out
    assert (tmp_path / "my_cnn.pth").is_file()

    # The saved checkpoint computes what the notebook's model computes.
    ck = checkpoints.load(tmp_path / "shown" / "my-cnn.safetensors")
    x = namespace["test"][:100]
    with torch.no_grad():
        assert torch.allclose(ck.model(x), namespace["model"](x), atol=1e-5)
    assert ck.info.test_accuracy > 0.9

    # The app lists it as "mine: my-cnn" and the CNN explorer opens on it from the link.
    at = open_page("views/cnn_explorer.py", query={"net": "mine-my-cnn"})
    picker = at.sidebar.selectbox(key="net_picker")
    assert picker.value == "mine-my-cnn"
    assert any("mine: my-cnn" in o for o in picker.options)
