"""The fused forward-only evaluation (models.fused.evaluate_line, tt_mlp_line, and
evaluate_members on top of it) against ``ensemble_loss`` / ``ensemble_accuracy`` of torch's
logits, and its contract."""

from __future__ import annotations

import pytest
import torch

from thermotrain.models import MLP, ensemble_accuracy, ensemble_loss, fused

needs_kernel = pytest.mark.skipif(fused._library() is None, reason="no C compiler here")

CASES = [
    # widths, activation, members, dtype, rows
    ([2, 100, 1], "relu", 5, torch.float32, 97),   # the notebook-4turn SHLP, binary head
    ([2, 7, 1], "relu", 1, torch.float64, 40),     # one member
    ([3, 9, 5, 4], "tanh", 3, torch.float64, 70),  # deeper, tanh, softmax head
    ([4, 20, 3], "relu", 2, torch.float32, 33),    # in = 4, 3 classes
    ([6, 12, 10, 1], "tanh", 4, torch.float32, 65),  # in > 4 and out < 8 layers
    ([1, 9, 2], "relu", 2, torch.float64, 31),     # in = 1; N < one block of rows
    ([5, 3], "tanh", 3, torch.float32, 64),        # no hidden layer, N = two full blocks
]


def _params(model):
    return ([m.weight.detach().contiguous() for m in model.layers],
            [m.bias.detach().contiguous() for m in model.layers])


def _tol(dtype):
    # float32: the member mean of N per-row losses, each from ~100-term sums, against torch's
    # other summation order: a few ulp of each term (~1e-7 relative); float64: ~1e-15
    return dict(rtol=2e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12,
                                                                          atol=1e-13)


@needs_kernel
@pytest.mark.parametrize("widths,act,k,dtype,n", CASES)
def test_evaluation_equals_torch_loss_and_accuracy(widths, act, k, dtype, n):
    g = torch.Generator().manual_seed(0)
    model = MLP(widths, activation=act, ensemble=k, seed=1, dtype=dtype)
    with torch.no_grad():
        for p in model.parameters():  # logits of order 1-10: losses and accuracies vary
            p.mul_(3.0)
    x = torch.randn(n, widths[0], generator=g, dtype=dtype)
    y = torch.randint(0, max(2, widths[-1]), (n,), generator=g)
    assert fused.supports_evaluation(model, x, y)
    with torch.no_grad():
        logits = model(x)
    loss, acc = fused.evaluate_members(*_params(model), act, x, y)
    assert loss.dtype == acc.dtype == torch.float64 and loss.shape == acc.shape == (k,)
    torch.testing.assert_close(loss, ensemble_loss(logits, y).double(), **_tol(dtype))
    # accuracies are counts / N: equal unless a logit sits within rounding of a decision
    # boundary (none does for these seeds); float32 only adds torch's rounding of the mean
    torch.testing.assert_close(acc, ensemble_accuracy(logits, y).double(), rtol=0, atol=1e-6)
    assert len(set(acc.tolist())) > 1 or k == 1  # members differ: not a vacuous comparison


@needs_kernel
@pytest.mark.parametrize("widths,act,k,dtype", [
    ([5, 3], "relu", 3, torch.float64),          # no hidden layer: the logits are lerped
    ([40, 64, 10], "relu", 2, torch.float32),    # a wide first layer, softmax head
    ([2, 100, 1], "tanh", 3, torch.float64),     # the fused one-hidden-layer binary path
    ([2, 100, 1], "relu", 2, torch.float32),
    ([30, 20, 1], "relu", 2, torch.float64),     # the same with a wide input
    ([3, 8, 8, 1], "relu", 2, torch.float64),    # deeper: lerped W^T of later layers
    ([3, 9, 5, 4], "tanh", 2, torch.float32),
])
def test_line_equals_torch_at_every_alpha(widths, act, k, dtype):
    g = torch.Generator().manual_seed(5)
    a_net = MLP(widths, activation=act, ensemble=k, seed=1, dtype=dtype)
    b_net = MLP(widths, activation=act, ensemble=k, seed=11, dtype=dtype)
    with torch.no_grad():
        for p in b_net.parameters():
            p.mul_(4.0)
    x = torch.randn(75, widths[0], generator=g, dtype=dtype)
    y = torch.randint(0, max(2, widths[-1]), (75,), generator=g)
    # 7 α: a tail of 3 after one pass of 4; 75 rows: two blocks of 32 and one of 11
    alphas = torch.tensor([-0.7, 0.0, 0.3, 0.5, 0.9, 1.0, 1.6], dtype=dtype)
    loss, acc = fused.evaluate_line(_params(a_net), _params(b_net), alphas, act, x, y)
    assert loss.shape == acc.shape == (7, k)
    for i, alpha in enumerate(alphas.tolist()):
        net = MLP(widths, activation=act, ensemble=k, dtype=dtype)
        with torch.no_grad():
            for p, p0, p1 in zip(net.parameters(), a_net.parameters(), b_net.parameters(),
                                 strict=True):
                p.copy_(torch.lerp(p0, p1, alpha))
            logits = net(x)
        # the first layer lerped after the product: a few ulp more than summation order
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-11,
                                                                             atol=1e-12)
        torch.testing.assert_close(loss[i], ensemble_loss(logits, y).double(), **tol)
        torch.testing.assert_close(acc[i], ensemble_accuracy(logits, y).double(), rtol=0,
                                   atol=1e-6)
    assert loss.std() > 0.05  # the line is not flat: a real comparison


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_soft_binary_targets_and_float_labels(dtype):
    model = MLP([3, 16, 1], ensemble=3, seed=2, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 3, generator=g, dtype=dtype)
    y = torch.rand(50, generator=g, dtype=dtype)  # soft targets; accuracy: y > 0.5 is class 1
    with torch.no_grad():
        logits = model(x)
    loss, acc = fused.evaluate_members(*_params(model), "relu", x, y)
    torch.testing.assert_close(loss, ensemble_loss(logits, y).double(), **_tol(dtype))
    torch.testing.assert_close(acc, ensemble_accuracy(logits, y).double(), rtol=0, atol=1e-6)


@needs_kernel
@pytest.mark.parametrize("widths", [[2, 30, 1], [2, 30, 3]])
def test_saturated_logits_give_finite_exact_losses(widths):
    # |logits| of hundreds: exp(-|z|) underflows; the loss must stay finite and exact
    model = MLP(widths, ensemble=2, seed=4)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(40.0)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(80, 2, generator=g) * 5
    y = torch.randint(0, max(2, widths[-1]), (80,), generator=g)
    with torch.no_grad():
        logits = model(x)
    assert float(logits.abs().max()) > 100  # really saturated
    loss, _ = fused.evaluate_members(*_params(model), "relu", x, y)
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss, ensemble_loss(logits, y).double(), rtol=1e-5, atol=1e-4)


@needs_kernel
def test_results_do_not_depend_on_threads_or_on_the_other_members():
    model = MLP([2, 50, 1], ensemble=6, seed=3)
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(1))
    y = (x[:, 0] > 0).long()
    weights, biases = _params(model)
    threads = torch.get_num_threads()
    out = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            out.append(fused.evaluate_members(weights, biases, "relu", x, y))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*out, strict=True))
    alone = fused.evaluate_members([w[4:5].clone() for w in weights],
                                   [b[4:5].clone() for b in biases], "relu", x, y)
    assert torch.equal(alone[0][0], out[0][0][4]) and torch.equal(alone[1][0], out[0][1][4])
    # along a line too: 7 alphas (a pass of 4 and a tail), threads and members
    other = _params(MLP([2, 50, 1], ensemble=6, seed=30))
    alphas = torch.linspace(-0.5, 1.5, 7)
    lines = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            lines.append(fused.evaluate_line((weights, biases), other, alphas, "relu", x, y))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*lines, strict=True))
    one = fused.evaluate_line(([w[2:3].clone() for w in weights], [b[2:3].clone() for b in biases]),
                              ([w[2:3].clone() for w in other[0]],
                               [b[2:3].clone() for b in other[1]]), alphas, "relu", x, y)
    assert torch.equal(one[0][:, 0], lines[0][0][:, 2])
    assert torch.equal(one[1][:, 0], lines[0][1][:, 2])


@needs_kernel
def test_bad_arguments_are_clear_errors():
    model = MLP([2, 5, 3], ensemble=2)
    weights, biases = _params(model)
    x, y = torch.randn(10, 2), torch.arange(10) % 3
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\), got values in \[5, 5\]"):
        fused.evaluate_members(weights, biases, "relu", x, torch.full((10,), 5))
    with pytest.raises(TypeError, match="integer class indices, got dtype torch.float32"):
        fused.evaluate_members(weights, biases, "relu", x, y.float())
    with pytest.raises(ValueError, match="activation must be one of"):
        fused.evaluate_members(weights, biases, "gelu", x, y)
    with pytest.raises(ValueError, match=r"x must be a CPU torch.float32 tensor \(N, 2\)"):
        fused.evaluate_members(weights, biases, "relu", x.double(), y)
    with pytest.raises(ValueError, match=r"y the shape \(10,\), got \(4,\)"):
        fused.evaluate_members(weights, biases, "relu", x, y[:4])
    with pytest.raises(ValueError, match="at least one row"):
        fused.evaluate_members(weights, biases, "relu", x[:0], y[:0])
    line = ((weights, biases), (weights, biases))
    with pytest.raises(ValueError, match="at least one finite value"):
        fused.evaluate_line(*line, torch.tensor([0.5, float("nan")]), "relu", x, y)
    with pytest.raises(ValueError, match=r"batchnorm must be \(scale, shift\), CPU "
                                         r"torch.float32 tensors of shape .* = \(1, 2, 5\)"):
        fused.evaluate_line(*line, torch.zeros(1), "relu", x, y,
                            (torch.ones(1, 2, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(ValueError, match="start and end must have the same layers"):
        fused.evaluate_line(line[0], _params(MLP([2, 6, 3], ensemble=2)), torch.zeros(1),
                            "relu", x, y)
    with pytest.raises(ValueError, match="layer 1: weight takes 2 inputs, the previous layer "
                                         "gives 5"):
        fused.evaluate_members([weights[0], weights[0]], [biases[0], biases[0]], "relu", x, y)
    with pytest.raises(ValueError, match="contiguous CPU"):
        fused.evaluate_members([weights[0].transpose(1, 2).contiguous().transpose(1, 2),
                                weights[1]], biases, "relu", x, y)
    with pytest.raises(ValueError, match="two lists of 1 to 16 layers"):
        fused.evaluate_members(weights, biases[:1], "relu", x, y)


def test_supports_evaluation_declines_what_it_cannot_do_exactly():
    x, y = torch.randn(10, 2), torch.arange(10) % 3  # classes 0, 1, 2
    assert not fused.supports_evaluation(MLP([2, 5, 3], batchnorm=True), x, y)
    if fused._library() is not None:  # the caller passes the batch norm's scale and shift
        assert fused.supports_evaluation(MLP([2, 5, 3], batchnorm=True), x, y, batchnorm=True)
    assert not fused.supports_evaluation(MLP([2, 5, 3], dtype=torch.float64), x, y)  # dtype mix
    assert not fused.supports_evaluation(MLP([2, 5, 3]), x, y.float())  # torch raises on these
    assert not fused.supports_evaluation(MLP([2, 5, 2]), x, y)  # class 2 out of range
    assert not fused.supports_evaluation(MLP([2, 5, 3]), x.to("meta"), y)  # not the CPU
    assert not fused.supports_evaluation(torch.nn.Linear(2, 3), x, y)

    class Scaled(MLP):  # another forward: the kernel would compute MLP's
        def forward(self, x):
            return 2 * super().forward(x)

    assert not fused.supports_evaluation(Scaled([2, 5, 3]), x, y)
    assert not fused.supports_evaluation(MLP([2, 300, 300, 1]), x, y)  # torch's GEMMs win
    if fused._library() is not None:
        assert fused.supports_evaluation(MLP([2, 5, 3]), x, y)
        # a wide first layer is evaluated at the two ends only: the mli-mnist net qualifies
        assert fused.supports_evaluation(MLP([784, 64, 64, 10]), torch.rand(10, 784), y)
