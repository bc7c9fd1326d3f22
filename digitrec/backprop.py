"""The backward pass in numbers: the chain rule by hand, checked against autograd.

For one digit x, a target class t and a model, ``backward`` runs one forward
and one backward pass of ``torch.autograd`` on a private copy of the model and
walks the same layers backwards by hand with the chain rule:

- the loss is −log p(t); its gradient with respect to the ten scores is
  p − onehot(t);
- a Linear layer passes blame back as a weighted sum: ∂loss/∂input = Wᵀ δ, and
  its weight gradient is δ (the blame of the neuron a weight feeds) times the
  input the weight multiplied: ∂loss/∂W[j, i] = δ[j] · a[i];
- ReLU lets blame through where it was on (input > 0) and stops it where it was off;
- max pooling sends each window's blame to the one value that won the window;
- a convolution's kernel weight gradient is the sum over every output position
  of (the input value under that kernel cell) × (the output map's gradient there).

Every hand-made number is kept next to autograd's, so a page can show both and a
test can check they agree. ``sgd_step`` takes one plain gradient-descent step on
another copy. The shared model is never touched: no hooks, gradients or mode
changes are left on it.

Shapes are for one digit, without the batch dimension.
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from digitrec.data import IMAGE_SIZE, NUM_CLASSES
from digitrec.errors import DigitrecError


class UnsupportedModel(DigitrecError):
    """The model has a layer (or a layout) the hand-written chain rule does not know."""


class BadTarget(DigitrecError):
    """A target class outside 0-9."""


# ---------------------------------------------------------------- the traces


@dataclass(frozen=True)
class LayerTrace:
    """One layer of the model during the forward and the backward pass.

    input / output: what the layer received and produced; grad_output: the blame
    arriving from above, ∂loss/∂output; grad_input: the blame it passes down,
    ∂loss/∂input. ``autograd_grad_output`` is autograd's ∂loss/∂output for
    comparison. weight/bias and their gradients are None for layers without
    parameters.
    """

    name: str
    kind: str  # "Linear", "ReLU", "Conv2d", "MaxPool2d", "Flatten"
    input: torch.Tensor
    output: torch.Tensor
    grad_output: torch.Tensor  # by hand
    grad_input: torch.Tensor  # by hand
    autograd_grad_output: torch.Tensor
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    weight_grad: torch.Tensor | None = None  # by hand, shape of weight
    bias_grad: torch.Tensor | None = None
    autograd_weight_grad: torch.Tensor | None = None
    autograd_bias_grad: torch.Tensor | None = None
    settings: dict = field(default_factory=dict)  # conv/pool geometry: kernel, stride, padding


@dataclass(frozen=True)
class Backward:
    """One digit's backward pass: the loss, every layer's blame and every weight's gradient.

    logits, probs, output_delta: (10,). ``layers`` in forward order.
    ``gradients``: autograd's gradient of every parameter by its name ("fc_1.weight").
    """

    target: int
    logits: torch.Tensor
    probs: torch.Tensor
    loss: float  # −log p(target), from autograd's cross-entropy
    hand_loss: float  # −log p(target) from the softmax worked by hand
    output_delta: torch.Tensor  # p − onehot(target): ∂loss/∂score, by hand
    layers: tuple[LayerTrace, ...]
    gradients: dict[str, torch.Tensor]

    def layer(self, name: str) -> LayerTrace:
        for trace in self.layers:
            if trace.name == name:
                return trace
        raise KeyError(f"The model has no layer {name!r}; it has {', '.join(t.name for t in self.layers)}.")

    @property
    def predicted(self) -> int:
        return int(self.probs.argmax())

    def linear_layers(self) -> list[str]:
        return [t.name for t in self.layers if t.kind == "Linear"]

    def conv_layers(self) -> list[str]:
        return [t.name for t in self.layers if t.kind == "Conv2d"]

    def disagreement(self) -> float:
        """The largest |hand − autograd| over every layer's blame and every weight's gradient."""
        worst = 0.0
        for t in self.layers:
            pairs = [(t.grad_output, t.autograd_grad_output)]
            if t.weight_grad is not None:
                pairs += [(t.weight_grad, t.autograd_weight_grad), (t.bias_grad, t.autograd_bias_grad)]
            for hand, auto in pairs:
                worst = max(worst, float((hand - auto).abs().max()))
        return worst


# ---------------------------------------------------------------- the pass


def check_target(target: int) -> int:
    """``target`` as an int in 0-9, or BadTarget with a sentence."""
    try:
        t = int(target)
    except (TypeError, ValueError):
        raise BadTarget(f"The target class must be a whole number from 0 to 9, got {target!r}.") from None
    if not 0 <= t < NUM_CLASSES or t != target:
        raise BadTarget(f"The target class must be a whole number from 0 to 9, got {target!r}.")
    return t


def _as_input(x: torch.Tensor) -> torch.Tensor:
    """A digit (28, 28) or (1, 1, 28, 28) as the (1, 1, 28, 28) model input."""
    if x.numel() != IMAGE_SIZE * IMAGE_SIZE:
        raise ValueError(f"backprop works on one digit of 28 × 28 pixels, got a tensor of shape {tuple(x.shape)}")
    return x.detach().reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE)


@contextmanager
def _recording(model: nn.Module) -> Iterator[list]:
    """Record (name, module, input, output) of every child as it runs, keeping the outputs' gradients."""
    records: list = []
    handles = []

    def hook(module, inputs, output, name):
        output.retain_grad()  # autograd's ∂loss/∂output, to set beside the hand-made one
        records.append((name, module, inputs[0], output))

    try:
        for name, module in model.named_children():
            handles.append(module.register_forward_hook(lambda m, i, o, name=name: hook(m, i, o, name)))
        yield records
    finally:
        for h in handles:
            h.remove()


def backward(model: nn.Module, x: torch.Tensor, target: int, dtype: torch.dtype | None = None) -> Backward:
    """The whole backward pass for digit x (1, 1, 28, 28) and class ``target``, by hand and by autograd.

    Works on a private copy of ``model`` (converted to ``dtype`` when given:
    tests use float64 to compare at 1e-12). The model's forward pass must run its
    named children one after the other (FCNet and TinyVGG do); the hand-written
    rules know Linear, ReLU, Flatten, Conv2d (groups 1, no dilation) and
    MaxPool2d.
    """
    target = check_target(target)
    work = copy.deepcopy(model)
    if dtype is not None:
        work = work.to(dtype)
    work.eval()  # these networks have no dropout or batch norm, but a run may have left train mode on
    for p in work.parameters():
        p.requires_grad_(True)
        p.grad = None
    param_dtype = next(work.parameters()).dtype
    # The input asks for its gradient too, so every layer's output (also a first Flatten's) has one to compare.
    x = _as_input(x).to(param_dtype).clone().requires_grad_(True)

    with torch.enable_grad(), _recording(work) as records:
        logits = work(x)  # (1, 10)
        loss = F.cross_entropy(logits, torch.tensor([target]))
        loss.backward()  # the one backward pass of autograd
    _check_sequential(records, x, logits)

    # Softmax and the loss by hand: p = exp(z − max) / Σ exp(z − max); ∂(−log p_t)/∂z = p − onehot(t).
    z = logits.detach()[0]
    exps = (z - z.max()).exp()
    probs = exps / exps.sum()
    hand_loss = float(torch.log(exps.sum()) - (z[target] - z.max()))
    onehot = torch.zeros_like(probs)
    onehot[target] = 1.0
    blame = probs - onehot  # (10,)
    output_delta = blame.clone()

    traces: list[LayerTrace] = []
    for name, module, inp, out in reversed(records):
        inp_d, out_d = inp.detach()[0], out.detach()[0]
        traces.append(_layer_backward(name, module, inp_d, out_d, blame, out.grad[0]))
        blame = traces[-1].grad_input
    traces.reverse()

    gradients = {n: p.grad.detach().clone() for n, p in work.named_parameters()}
    return Backward(target, z, probs, float(loss.detach()), hand_loss, output_delta, tuple(traces), gradients)


def _check_sequential(records: list, x: torch.Tensor, logits: torch.Tensor) -> None:
    """The hand walk assumes each child reads what the child before it produced."""
    if not records:
        raise UnsupportedModel("The model has no named layers to walk back through.")
    previous = x
    for name, _, inp, out in records:
        if inp is not previous and not (inp.shape == previous.shape and torch.equal(inp, previous)):
            raise UnsupportedModel(
                f"Layer {name!r} does not read the output of the layer before it, so the step-by-step backward "
                "pass cannot follow this model."
            )
        previous = out
    if previous is not logits and not torch.equal(previous, logits):
        raise UnsupportedModel("The model's last layer is not its output, so the backward pass cannot start there.")


def _layer_backward(name: str, module: nn.Module, inp: torch.Tensor, out: torch.Tensor, grad_out: torch.Tensor,
                    autograd_grad_out: torch.Tensor) -> LayerTrace:
    """The chain rule for one layer: the blame it passes down and, if it has weights, their gradients."""
    kind = type(module).__name__
    common = dict(name=name, kind=kind, input=inp, output=out, grad_output=grad_out,
                  autograd_grad_output=autograd_grad_out.detach())
    if isinstance(module, nn.Linear):
        w = module.weight.detach()  # (out, in)
        grad_in = w.T @ grad_out  # each input's blame: Σ_j w[j, i] δ[j], the weighted sum of the blame above
        weight_grad = torch.outer(grad_out, inp)  # ∂loss/∂w[j, i] = δ[j] · a[i]
        bias = module.bias.detach() if module.bias is not None else None
        return LayerTrace(
            **common, grad_input=grad_in, weight=w, bias=bias, weight_grad=weight_grad,
            bias_grad=grad_out.clone() if bias is not None else None,
            autograd_weight_grad=module.weight.grad.detach().clone(),
            autograd_bias_grad=module.bias.grad.detach().clone() if bias is not None else None,
        )
    if isinstance(module, nn.ReLU):
        on = (inp > 0).to(grad_out.dtype)  # ReLU's slope: 1 where it let the value through, 0 where it was off
        return LayerTrace(**common, grad_input=grad_out * on)
    if isinstance(module, nn.Flatten):
        return LayerTrace(**common, grad_input=grad_out.reshape(inp.shape))
    if isinstance(module, nn.MaxPool2d):
        return _maxpool_backward(module, common, inp, grad_out)
    if isinstance(module, nn.Conv2d):
        return _conv_backward(module, common, inp, grad_out)
    raise UnsupportedModel(
        f"Layer {name!r} is a {kind}; the step-by-step backward pass knows Linear, ReLU, Flatten, Conv2d and "
        "MaxPool2d layers."
    )


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _maxpool_backward(module: nn.MaxPool2d, common: dict, inp: torch.Tensor, grad_out: torch.Tensor) -> LayerTrace:
    k, s, p = _pair(module.kernel_size), _pair(module.stride or module.kernel_size), _pair(module.padding)
    if module.dilation not in (1, (1, 1)) or module.ceil_mode:
        raise UnsupportedModel(f"Layer {common['name']!r} pools with dilation or ceil mode, which is not explained here.")
    # Which input cell won each window (flat index into H*W per channel); all its blame goes there, none elsewhere.
    _, winners = F.max_pool2d(inp[None], k, s, p, return_indices=True)  # (1, C, H', W')
    c = inp.shape[0]
    grad_in = torch.zeros(c, inp.shape[1] * inp.shape[2], dtype=grad_out.dtype)
    grad_in.scatter_add_(1, winners[0].reshape(c, -1), grad_out.reshape(c, -1))
    return LayerTrace(**common, grad_input=grad_in.reshape(inp.shape), settings={"kernel": k, "stride": s, "padding": p})


def _conv_backward(module: nn.Conv2d, common: dict, inp: torch.Tensor, grad_out: torch.Tensor) -> LayerTrace:
    if module.groups != 1 or module.dilation != (1, 1) or not isinstance(module.padding, tuple):
        raise UnsupportedModel(f"Layer {common['name']!r} is a grouped or dilated convolution, not explained here.")
    k, s, p = module.kernel_size, module.stride, module.padding
    w = module.weight.detach()  # (C_out, C_in, kh, kw)
    c_out = w.shape[0]
    # Every window of the padded input as a column: (C_in * kh * kw, H' * W').
    columns = F.unfold(inp[None], k, padding=p, stride=s)[0]
    # ∂loss/∂w[o, c, u, v] = Σ over positions of input under kernel cell (c, u, v) × output gradient there.
    weight_grad = (grad_out.reshape(c_out, -1) @ columns.T).reshape(w.shape)
    bias_grad = grad_out.sum(dim=(1, 2)) if module.bias is not None else None
    # Each input cell's blame: the kernel weights that touched it times the blame of those outputs
    # (a "transposed" convolution). output_padding restores a size that stride > 1 rounded away.
    extra = tuple((inp.shape[1 + d] + 2 * p[d] - k[d]) % s[d] for d in range(2))
    grad_in = F.conv_transpose2d(grad_out[None], w, stride=s, padding=p, output_padding=extra)[0]
    return LayerTrace(
        **common, grad_input=grad_in, weight=w, bias=module.bias.detach() if module.bias is not None else None,
        weight_grad=weight_grad, bias_grad=bias_grad,
        autograd_weight_grad=module.weight.grad.detach().clone(),
        autograd_bias_grad=module.bias.grad.detach().clone() if module.bias is not None else None,
        settings={"kernel": k, "stride": s, "padding": p},
    )


# ---------------------------------------------------------------- one neuron's blame (FCNet)


@dataclass(frozen=True)
class NeuronBlame:
    """How neuron ``neuron`` of Linear layer ``layer`` got its blame δ = ∂loss/∂z.

    For the output layer δ = p − onehot. For a hidden layer the blame arriving at
    the neuron's output is the weighted sum of the blame of the layer above,
    Σ_k w[k, j] δ_above[k] (weights, blame_above, products: (width_above,)), and
    δ is that sum × ReLU's on/off (1 if the neuron's sum z was positive, else 0).
    """

    layer: str
    neuron: int
    is_output: bool
    delta: float  # by hand
    autograd_delta: float
    pre_activation: float  # z: the neuron's weighted sum for this digit
    probability: float | None = None  # output layer: p of this class
    is_target: bool | None = None  # output layer: is this the target class?
    above: str | None = None  # hidden layer: the next Linear layer
    weights: torch.Tensor | None = None
    blame_above: torch.Tensor | None = None
    products: torch.Tensor | None = None
    blame_sum: float | None = None  # Σ_k w[k, j] δ_above[k]
    relu_on: bool | None = None


def _linear_chain(bw: Backward, layer: str) -> tuple[int, str | None]:
    """Index of Linear ``layer`` among the traces and the name of the next Linear layer (None for the last)."""
    names = [t.name for t in bw.layers]
    if layer not in names or bw.layer(layer).kind != "Linear":
        raise KeyError(f"{layer!r} is not a Linear layer of this model; those are {', '.join(bw.linear_layers())}.")
    i = names.index(layer)
    rest = bw.layers[i + 1:]
    if not rest:
        return i, None
    if rest[0].kind != "ReLU" or len(rest) < 2 or rest[1].kind != "Linear":
        raise UnsupportedModel(f"{layer!r} is not followed by ReLU and another Linear layer.")
    return i, rest[1].name


def neuron_blame(bw: Backward, layer: str, neuron: int) -> NeuronBlame:
    """Neuron ``neuron``'s δ in Linear ``layer``, worked out from the layer above (or from p − onehot)."""
    trace = bw.layer(layer)
    _, above = _linear_chain(bw, layer)
    width = trace.output.numel()
    if not 0 <= neuron < width:
        raise IndexError(f"{layer} has neurons 0 to {width - 1}, not {neuron}")
    common = dict(layer=layer, neuron=neuron, delta=float(trace.grad_output[neuron]),
                  autograd_delta=float(trace.autograd_grad_output[neuron]),
                  pre_activation=float(trace.output[neuron]))
    if above is None:
        return NeuronBlame(**common, is_output=True, probability=float(bw.probs[neuron]),
                           is_target=neuron == bw.target)
    up = bw.layer(above)
    weights = up.weight[:, neuron]  # (width_above,): how strongly this neuron feeds each neuron above
    products = weights * up.grad_output
    on = float(trace.output[neuron]) > 0
    return NeuronBlame(**common, is_output=False, above=above, weights=weights, blame_above=up.grad_output,
                       products=products, blame_sum=float(products.sum()), relu_on=on)


def deltas(bw: Backward) -> list[tuple[str, torch.Tensor]]:
    """(layer, δ (width,)) for every Linear layer, in forward order: what the diagram shows."""
    return [(t.name, t.grad_output) for t in bw.layers if t.kind == "Linear"]


def most_blamed(bw: Backward, layer: str) -> int:
    """The neuron of ``layer`` with the largest |δ|."""
    return int(bw.layer(layer).grad_output.abs().argmax())


# ---------------------------------------------------------------- one weight's gradient (FCNet)


@dataclass(frozen=True)
class WeightGradient:
    """∂loss/∂w for the weight from input ``source`` to neuron ``neuron`` of Linear ``layer``:
    the input value a[source] times the δ of the neuron the weight feeds."""

    layer: str
    neuron: int
    source: int  # a pixel 0..783 (first layer) or a neuron of the layer below
    weight: float
    input_value: float  # a[source]: what this weight multiplied in the forward pass
    delta: float  # δ[neuron]
    hand: float  # a[source] · δ[neuron]
    autograd: float
    blame: NeuronBlame
    layer_input_width: int  # 784 when the weight reads a pixel

    @property
    def from_pixels(self) -> bool:
        return self.layer_input_width == IMAGE_SIZE * IMAGE_SIZE

    @property
    def pixel(self) -> tuple[int, int]:
        return divmod(self.source, IMAGE_SIZE)


def weight_gradient(bw: Backward, layer: str, neuron: int, source: int) -> WeightGradient:
    trace = bw.layer(layer)
    if trace.kind != "Linear":
        raise KeyError(f"{layer!r} is not a Linear layer")
    n_in = trace.input.numel()
    if not 0 <= source < n_in:
        raise IndexError(f"{layer} reads inputs 0 to {n_in - 1}, not {source}")
    blame = neuron_blame(bw, layer, neuron)
    a = float(trace.input[source])
    return WeightGradient(
        layer, neuron, source, float(trace.weight[neuron, source]), a, blame.delta, a * blame.delta,
        float(trace.autograd_weight_grad[neuron, source]), blame, n_in,
    )


def strongest_input(bw: Backward, layer: str, neuron: int) -> int:
    """The input whose weight into ``neuron`` has the largest gradient (the largest |a|: δ is shared)."""
    return int(bw.layer(layer).input.abs().argmax())


def first_layer_pictures(bw: Backward) -> tuple[str, torch.Tensor, torch.Tensor]:
    """(layer, gradients (n, 28, 28), δ (n,)) of the first Linear layer if it reads the 784 pixels.

    Row j is δ[j] times the digit: every weight of neuron j is nudged in
    proportion to the ink under it, which is why trained weights look like strokes.
    """
    first = next((t for t in bw.layers if t.kind == "Linear"), None)
    if first is None or first.input.numel() != IMAGE_SIZE * IMAGE_SIZE:
        raise UnsupportedModel("The first Linear layer of this model does not read the 784 pixels.")
    n = first.output.numel()
    return first.name, first.weight_grad.reshape(n, IMAGE_SIZE, IMAGE_SIZE), first.grad_output


# ---------------------------------------------------------------- one kernel weight's gradient (TinyVGG)


@dataclass(frozen=True)
class KernelGradient:
    """∂loss/∂w for one kernel weight w[out_channel, in_channel, row, col] of conv ``layer``.

    inputs: (H', W') the input value that this kernel cell touched at each output
    position (from the zero-padded input map); grad_output: (H', W') the output
    map's gradient ∂loss/∂(conv output)[out_channel] there; products = inputs ×
    grad_output, summed = ``hand``. padded_input: (H + 2p, W + 2p) for drawing.
    """

    layer: str
    out_channel: int
    in_channel: int
    row: int
    col: int
    weight: float
    padded_input: torch.Tensor
    inputs: torch.Tensor
    grad_output: torch.Tensor
    products: torch.Tensor
    hand: float
    autograd: float
    padding: int
    stride: int


def kernel_gradient(bw: Backward, layer: str, out_channel: int, in_channel: int, row: int, col: int) -> KernelGradient:
    trace = bw.layer(layer)
    if trace.kind != "Conv2d":
        raise KeyError(f"{layer!r} is not a convolution; those are {', '.join(bw.conv_layers())}.")
    c_out, c_in, kh, kw = trace.weight.shape
    for value, limit, what in ((out_channel, c_out, "output map"), (in_channel, c_in, "input channel"),
                               (row, kh, "kernel row"), (col, kw, "kernel column")):
        if not 0 <= value < limit:
            raise IndexError(f"{layer} has {what}s 0 to {limit - 1}, not {value}")
    (ph, pw), (sh, sw) = trace.settings["padding"], trace.settings["stride"]
    padded = F.pad(trace.input[in_channel], (pw, pw, ph, ph))  # (H + 2p, W + 2p)
    grad = trace.grad_output[out_channel]  # (H', W')
    h, w = grad.shape
    inputs = padded[row: row + sh * (h - 1) + 1: sh, col: col + sw * (w - 1) + 1: sw]  # (H', W')
    products = inputs * grad
    return KernelGradient(
        layer, out_channel, in_channel, row, col, float(trace.weight[out_channel, in_channel, row, col]),
        padded, inputs, grad, products, float(products.sum()),
        float(trace.autograd_weight_grad[out_channel, in_channel, row, col]), ph, sh,
    )


def largest_kernel_gradient(bw: Backward, layer: str) -> tuple[int, int, int, int]:
    """(out_channel, in_channel, row, col) of the kernel weight of ``layer`` with the largest |gradient|."""
    g = bw.layer(layer).weight_grad
    flat = int(g.abs().argmax())
    idx = []
    for size in reversed(g.shape):
        idx.append(flat % size)
        flat //= size
    return tuple(reversed(idx))  # type: ignore[return-value]


# ---------------------------------------------------------------- one step of gradient descent


@dataclass(frozen=True)
class SGDStep:
    """One plain SGD step on this digit alone: every parameter w becomes w − lr × ∂loss/∂w.

    before / gradient / after: parameter name -> tensor. probs_*: (10,).
    """

    lr: float
    target: int
    loss_before: float
    loss_after: float
    probs_before: torch.Tensor
    probs_after: torch.Tensor
    before: dict[str, torch.Tensor]
    gradient: dict[str, torch.Tensor]
    after: dict[str, torch.Tensor]

    def largest_change(self) -> tuple[str, float]:
        """(parameter name, |change|) of the parameter that moved most."""
        name, delta = max(((n, float((self.after[n] - self.before[n]).abs().max())) for n in self.before),
                          key=lambda item: item[1])
        return name, delta


def _loss_and_probs(model: nn.Module, x: torch.Tensor, target: int) -> tuple[float, torch.Tensor]:
    with torch.inference_mode():
        logits = model(x)[0].double()
    log_p = torch.log_softmax(logits, dim=0)
    return float(-log_p[target]), log_p.exp()


def sgd_step(model: nn.Module, x: torch.Tensor, target: int, lr: float, bw: Backward | None = None) -> SGDStep:
    """Take one SGD step with learning rate ``lr`` on a copy of ``model`` for digit x and class ``target``.

    ``bw``: this digit's backward pass, if already computed (its autograd
    gradients are used); else one is run. The model itself is left as it was.
    """
    target = check_target(target)
    if not lr > 0 or lr != lr or lr == float("inf"):
        raise ValueError(f"The learning rate must be a positive number, got {lr!r}.")
    if bw is None or bw.target != target:
        bw = backward(model, x, target)
    x = _as_input(x)
    work = copy.deepcopy(model).eval()
    before = {n: p.detach().clone() for n, p in work.named_parameters()}
    with torch.no_grad():
        for n, p in work.named_parameters():
            p.copy_(before[n] - lr * bw.gradients[n])  # the whole rule: w ← w − lr · ∂loss/∂w
    after = {n: p.detach().clone() for n, p in work.named_parameters()}
    loss_before, probs_before = _loss_and_probs(model_copy_eval(model), x, target)
    loss_after, probs_after = _loss_and_probs(work, x, target)
    return SGDStep(float(lr), target, loss_before, loss_after, probs_before, probs_after, before, dict(bw.gradients),
                   after)


def model_copy_eval(model: nn.Module) -> nn.Module:
    """A private eval-mode copy (the shared model's mode is never switched)."""
    return copy.deepcopy(model).eval()


def _stepped(model: nn.Module, bw: Backward, lr: float) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """An eval copy of ``model`` and its parameters after one step of ``lr`` (for functional_call)."""
    work = model_copy_eval(model)
    return work, {n: p.detach() - float(lr) * bw.gradients[n] for n, p in work.named_parameters()}


def loss_along_gradient(
    model: nn.Module, x: torch.Tensor, bw: Backward, lrs: Sequence[float],
    others: torch.Tensor | None = None, other_labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The loss after one SGD step of each learning rate in ``lrs``: (len(lrs),) float64 each.

    Returns this digit's loss (for ``bw.target``) and, when ``others`` (N, 1, 28, 28)
    with ``other_labels`` (N,) are given, those digits' average loss for their own
    labels after the same step. The step is made for this digit alone: this
    digit's loss keeps falling as the step grows, while past some learning rate
    the other digits' loss shoots up. That is overshooting.
    """
    x = _as_input(x)
    work = model_copy_eval(model)
    base = {n: p.detach() for n, p in work.named_parameters()}
    mine, theirs = [], []
    for lr in lrs:
        params = {n: base[n] - float(lr) * bw.gradients[n] for n in base}
        with torch.inference_mode():
            logits = torch.func.functional_call(work, params, (x,))[0].double()
            mine.append(float(-torch.log_softmax(logits, dim=0)[bw.target]))
            if others is not None:
                out = torch.func.functional_call(work, params, (others,)).double()
                theirs.append(float(F.cross_entropy(out, other_labels)))
    return torch.tensor(mine, dtype=torch.float64), (torch.tensor(theirs, dtype=torch.float64) if others is not None
                                                     else None)


@dataclass(frozen=True)
class OthersEffect:
    """What one step made for one digit does to a fixed set of other digits."""

    count: int
    loss_before: float  # their average cross-entropy for their own labels
    loss_after: float
    accuracy_before: float  # fraction read right
    accuracy_after: float
    called_target_before: float  # fraction the network calls the step's target class
    called_target_after: float


def effect_on_others(model: nn.Module, bw: Backward, lr: float, images: torch.Tensor,
                     labels: torch.Tensor) -> OthersEffect:
    """Before and after one step of ``lr``: the loss and accuracy on ``images`` (N, 1, 28, 28) with ``labels`` (N,)."""
    work, params = _stepped(model, bw, lr)
    with torch.inference_mode():
        before = work(images).double()
        after = torch.func.functional_call(work, params, (images,)).double()

    def summary(logits: torch.Tensor) -> tuple[float, float, float]:
        guess = logits.argmax(dim=1)
        return (float(F.cross_entropy(logits, labels)), float((guess == labels).double().mean()),
                float((guess == bw.target).double().mean()))

    (lb, ab, tb), (la, aa, ta) = summary(before), summary(after)
    return OthersEffect(int(labels.numel()), lb, la, ab, aa, tb, ta)


# ---------------------------------------------------------------- speed (for the benchmark)


def time_backward(model: nn.Module, x: torch.Tensor, target: int = 0, repeats: int = 20) -> float:
    """Median milliseconds of one ``backward`` (copy, forward, autograd backward, hand chain rule)."""
    backward(model, x, target)  # warm-up: first calls allocate
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backward(model, x, target)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return times[len(times) // 2]


def latency_table(repeats: int = 30) -> list[tuple[str, float]]:
    """(network, median ms of one backward step-through) for the pretrained networks and a wide FCNet,
    on sample digit 7 with target 3: what ``make bench`` can print beside its training table."""
    from digitrec import checkpoints, models, samples

    x = samples.sample_digit(7).reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE)
    nets = {}
    for key in ("fc", "cnn"):
        try:
            model = checkpoints.load_pretrained(key).model
        except DigitrecError:  # no weights: a fresh network of the same shape times the same
            model = models.build(models.PRESETS[key], seed=0)
        nets[models.display_name(model.config)] = model
    wide = models.build(models.PRESETS["fc-wide"], seed=0)
    nets[models.display_name(wide.config)] = wide
    return [(name, time_backward(model, x, 3, repeats)) for name, model in nets.items()]


if __name__ == "__main__":  # python -m digitrec.backprop: the step-through latency on this machine
    for name, ms in latency_table():
        print(f"{name:<24} {ms:7.2f} ms per backward step-through (forward + autograd backward + hand chain rule)")
