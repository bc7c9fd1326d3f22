"""Plotly figure builders. Every figure the app shows comes from here.

One module per subject: ``scales`` (colour maps and ranges), ``digits``
(images and probabilities), and the explorers', attributions' and training
figures in their own modules. Each function returns a
``plotly.graph_objects.Figure`` and never imports streamlit.
"""
