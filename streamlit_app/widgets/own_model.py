"""Your own model: upload the state dict a notebook saved; it joins every network picker as "mine: NAME".

The numbers come from ``digitrec.importer`` (layers inferred from the tensors,
input normalisation and test accuracy measured on real digits). A file that
cannot be imported gets one sentence and changes nothing: the models, digit
and runs already loaded stay.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from digitrec import checkpoints, importer
from digitrec.errors import DigitrecError
from streamlit_app import state

AUTO = "detect it on test digits"


def model_import(*, key: str) -> None:
    """Upload a ``.pth`` / ``.safetensors`` state dict, optionally with its layers and input transform."""
    upload = st.file_uploader(
        "Your model's state dict (.pth, .pt or .safetensors)", key=f"{key}_file",
        type=["pth", "pt", "safetensors"],
        help="Saved in your notebook with torch.save(model.state_dict(), \"model.pth\"). It is opened only with "
             "PyTorch's restricted loader; a whole pickled model is refused.",
    )
    left, right = st.columns(2)
    arch = left.text_input(
        "Its layers (only if they cannot be worked out)", key=f"{key}_arch", max_chars=2000,
        placeholder="conv3x3(10,p=1) relu maxpool2 flatten linear(10)",
        help="One line: flatten, linear(N), convKxK(C,s=stride,p=padding), maxpool2, avgpool2, relu, leakyrelu, "
             "sigmoid, tanh, gelu, dropout, bn1d, bn2d. Leave empty to infer them from the file.",
    ).strip()
    norm = right.selectbox(
        "What your notebook fed it", [AUTO, *importer.NORMALISATIONS], key=f"{key}_norm",
        help="transforms.ToTensor() alone gives ink in [0, 1]; many notebooks add Normalize. digitrec feeds the "
             "model the same, while the pages still show the digit's ink in [0, 1].",
    )
    if upload is None:
        return
    done = st.session_state.setdefault(f"{key}_done", {})  # (file, arch, norm) -> Network key: no second import
    ident = (upload.file_id, arch, norm)
    if ident not in done:
        dataset = state.mnist()
        name = Path(upload.name).stem[:40] or "model"
        try:
            with st.spinner(f"Working out {upload.name}'s layers on real test digits…"):
                result = importer.import_bytes(
                    upload.getvalue(), upload.name, arch=arch or None,
                    digits=dataset.test if dataset is not None else None,
                    normalisation=None if norm == AUTO else norm, model_name=name,
                )
        except DigitrecError as e:
            st.warning(str(e))
            return
        accuracy = f" ({result.test_accuracy:.1%})" if result.test_accuracy is not None else ""
        net = state.add_my_model(state.new_my_model_key(), f"mine: {name}{accuracy}", result.model,
                                 result.test_accuracy)
        done[ident] = (net.key, result)
        state.set_network(net.key)  # the explorers open on it next
    net_key, result = done[ident]
    net = state.networks().get(net_key)
    if net is None:
        return
    st.success(f"Imported **{net.label}**: the explorers now show it, and it is in the network picker of every page.")
    st.markdown("\n".join(f"- {line}" for line in importer.summary(result).splitlines()))
    for warning in result.warnings:
        st.warning(warning)
    st.download_button(
        "Download it as a digitrec checkpoint", key=f"{key}_download", icon=":material/download:",
        data=checkpoints.to_bytes(result.model, test_accuracy=result.test_accuracy, epochs=None, seed=None,
                                  extra={"input_normalisation": result.normalisation}),
        file_name=f"mine-{result.spec.name or 'model'}.safetensors",
    )
