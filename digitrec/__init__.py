"""digitrec: how neural networks read handwritten digits, in real numbers.

A plain Python library (it never imports streamlit): MNIST in memory
(`data`), the two networks (`models`), the training loop (`train`),
checkpoints, inspection of activations and operations, Captum attributions,
preprocessing of drawings, and plotly figures (`viz`).
"""

__version__ = "0.1.0"
