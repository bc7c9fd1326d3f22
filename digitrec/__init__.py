"""digitrec: how neural networks read handwritten digits, in real numbers.

A plain Python library (it never imports streamlit): MNIST in memory
(`data`), the two networks (`models`), the training loop (`train`),
checkpoints, inspection of activations and operations, Captum attributions,
preprocessing of drawings, and plotly figures (`viz`).
"""

__version__ = "0.1.0"


def show(model, name: str = "my-model", **kwargs) -> str:
    """Open digitrec on ``model`` (an nn.Module you trained): see ``digitrec.notebook.show``."""
    from digitrec.notebook import show as _show

    return _show(model, name, **kwargs)


explore = show
