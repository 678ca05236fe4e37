"""SASRec's full-softmax loss on CPU is computed chunk by chunk (genrec.training.sequences.linear_cross_entropy)
and must equal plain cross-entropy over the full logits: the same loss and the same gradients for the hidden
states and the item embeddings, whatever the chunk size, also through a whole SASRec training step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genrec.models.sasrec import SASRec
from genrec.training.sequences import linear_cross_entropy


def plain_and_chunked(hidden, weight, targets, chunk_rows):
    """(loss, grad hidden, grad weight) of both computations, in float64 for the reference."""
    h, w = hidden.double().requires_grad_(), weight.double().requires_grad_()
    reference = F.cross_entropy(h @ w.T, targets)
    ref_grads = torch.autograd.grad(reference, (h, w))
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    chunked = linear_cross_entropy(h, w, targets, chunk_rows)
    grads = torch.autograd.grad(chunked * 3.0, (h, w))  # a non-unit upstream gradient scales both
    return (reference, *ref_grads), (chunked, grads[0] / 3.0, grads[1] / 3.0)


@pytest.mark.parametrize("n_rows,chunk_rows", [(37, 8), (64, 64), (50, 200), (1, 4)])
def test_chunked_cross_entropy_matches_the_full_logits(n_rows, chunk_rows):
    g = torch.Generator().manual_seed(n_rows)
    hidden, weight = torch.randn(n_rows, 16, generator=g), torch.randn(300, 16, generator=g)
    targets = torch.randint(300, (n_rows,), generator=g)
    (loss, gh, gw), (ours, our_gh, our_gw) = plain_and_chunked(hidden, weight, targets, chunk_rows)
    assert abs(ours.item() - loss.item()) <= 1e-5 * max(1.0, abs(loss.item()))
    torch.testing.assert_close(our_gh.double(), gh, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(our_gw.double(), gw, atol=1e-5, rtol=1e-5)


def test_large_logits_neither_overflow_nor_lose_the_target():
    hidden = torch.tensor([[30.0, 0.0], [0.0, -40.0]])
    weight = torch.tensor([[4.0, 0.0], [0.0, 3.0], [-2.0, 1.0]])  # logits up to 120 and down to -120
    targets = torch.tensor([1, 0])
    (loss, gh, gw), (ours, our_gh, our_gw) = plain_and_chunked(hidden, weight, targets, 1)
    assert torch.isfinite(ours) and abs(ours.item() - loss.item()) <= 1e-5 * loss.item()
    torch.testing.assert_close(our_gh.double(), gh, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(our_gw.double(), gw, atol=1e-5, rtol=1e-5)


def test_a_sasrec_training_step_gives_the_same_loss_and_gradients_as_plain_cross_entropy(monkeypatch):
    import genrec.models.sasrec as sasrec

    model = SASRec(dim=16, max_len=12, dropout=0.0)
    model.n_items_, model.item_features_ = 40, None
    torch.manual_seed(0)
    net = model._build_module().train()
    tokens = torch.tensor([[0, 0, 0, 3, 7, 9, 12, 4], [5, 6, 7, 8, 9, 10, 11, 40], [0, 0, 0, 0, 0, 0, 2, 3]])

    def step():
        net.zero_grad()
        loss = net.training_step(tokens, None)
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in net.named_parameters()}

    ours, our_grads = step()
    monkeypatch.setattr(sasrec, "linear_cross_entropy", lambda h, w, y, **_: F.cross_entropy(h @ w.T, y))
    plain, grads = step()
    torch.testing.assert_close(ours, plain, atol=1e-5, rtol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(our_grads[name], grad, atol=1e-5, rtol=1e-5, msg=name)


def test_bfloat16_products_stay_within_a_fraction_of_a_percent_of_float32():
    g = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(300, 32, generator=g), torch.randn(3000, 32, generator=g) * 0.3
    targets = torch.randint(3000, (300,), generator=g)
    h, w = hidden.double().requires_grad_(), weight.double().requires_grad_()
    reference = F.cross_entropy(h @ w.T, targets)
    gh, gw = torch.autograd.grad(reference, (h, w))
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    low = linear_cross_entropy(h, w, targets, chunk_rows=64, low_precision=True)
    our_gh, our_gw = torch.autograd.grad(low, (h, w))
    assert low.dtype == our_gh.dtype == our_gw.dtype == torch.float32
    assert abs(low.item() - reference.item()) <= 1e-3 * reference.item()
    assert (our_gh.double() - gh).norm() <= 1e-2 * gh.norm() and (our_gw.double() - gw).norm() <= 1e-2 * gw.norm()
    exact = linear_cross_entropy(hidden, weight, targets, chunk_rows=64)
    assert abs(exact.item() - reference.item()) <= 1e-5 * reference.item()  # float32 is the default


def test_sasrec_under_cpu_autocast_takes_the_bfloat16_loss_and_trains():
    from tests.models.scenarios import blocks_split
    from tests.models.test_sasrec import tiny_sasrec

    split = blocks_split()
    model = tiny_sasrec(epochs=6, train_options={"progress": False, "amp_cpu": True}).fit(split.train)
    losses = [r["loss"] for r in model.history_]
    assert losses[-1] < 0.9 * losses[0], losses
    net = model.module_.train()
    tokens = torch.tensor([[0, 0, 3, 7, 9, 12, 4], [5, 6, 7, 8, 9, 10, 11]])
    torch.manual_seed(1)
    exact = net.training_step(tokens, None)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = net.training_step(tokens, None)
    assert low.dtype == torch.float32 and abs(low.item() - exact.item()) <= 2e-2 * exact.item()
