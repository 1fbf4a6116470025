"""Margin cross-entropy, partial-label loss and the confusion-aware margin, against hand values."""

import math

import pytest
import torch
import torch.nn.functional as F

from cap.errors import UnknownNameError
from cap.core.losses import (logsumexp, margin_cross_entropy, masked_margin_cross_entropy, partial_label_loss,
                             single_labels)
from cap.core.margin import class_prototypes, class_similarity, confusion_margin, first_entry_per_image, largest_entries

LOGITS = torch.tensor([[2.0, 1.0, 0.0]])
TARGET = torch.tensor([0])


def test_plain_cross_entropy_without_margin():
    # −log(e²/(e²+e¹+e⁰)) = log(1 + e⁻¹ + e⁻²)
    assert margin_cross_entropy(LOGITS, TARGET).item() == pytest.approx(math.log(1 + math.exp(-1) + math.exp(-2)))


def test_margin_is_added_to_non_target_logits_of_the_label_row():
    margin = torch.tensor([[5.0, 1.0, 2.0], [9.0, 9.0, 9.0], [9.0, 9.0, 9.0]])
    # row 0 applies: [2, 1+1, 0+2] = [2, 2, 2]; the diagonal 5 is ignored -> log 3
    assert margin_cross_entropy(LOGITS, TARGET, margin).item() == pytest.approx(math.log(3))


def test_batch_mean_and_mask():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    target = torch.tensor([0, 1])
    margin = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    first, second = math.log(3), -math.log(1 / (1 + 2 * math.e))  # second: [1, 0, 1] target 1
    assert margin_cross_entropy(logits, target, margin).item() == pytest.approx((first + second) / 2)
    mask = torch.tensor([1.0, 0.0])
    assert masked_margin_cross_entropy(logits, target, mask, margin).item() == pytest.approx(first)
    none = masked_margin_cross_entropy(logits, target, torch.zeros(2), margin)
    assert none.item() == 0.0


def test_gradient_flows_through_the_margin_loss():
    logits = LOGITS.clone().requires_grad_(True)
    margin_cross_entropy(logits, TARGET, torch.ones(3, 3)).backward()
    assert logits.grad is not None and logits.grad[0, 0] < 0


def test_partial_label_loss():
    # uniform over 4 classes, 2 candidates: −log(0.5)
    assert partial_label_loss(torch.zeros(1, 4), torch.tensor([[1, 1, 0, 0]])).item() == pytest.approx(math.log(2))
    # one candidate = cross-entropy
    assert partial_label_loss(LOGITS, torch.tensor([[1, 0, 0]])).item() == pytest.approx(
        margin_cross_entropy(LOGITS, TARGET).item())


def test_one_hot_candidates_train_with_cross_entropy_equal_to_the_partial_label_loss():
    """The baselines' fast path: one-hot candidate rows become labels, and cross-entropy on them has
    the partial-label loss's value and gradient."""
    assert single_labels(torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])).tolist() == [1, 0]
    assert single_labels(torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])) is None  # a row with two candidates
    assert single_labels(torch.tensor([[0.0, 0.5, 0.5]])) is None  # soft candidates
    # by hand: logits (0, ln 3) and label 1: −log(3 / 4)
    two = torch.tensor([[0.0, math.log(3.0)]])
    assert F.cross_entropy(two, torch.tensor([1])).item() == pytest.approx(-math.log(0.75))
    torch.manual_seed(0)
    candidates = F.one_hot(torch.randint(0, 20, (64,)), 20).float()
    # logit gaps of CLIP's scale (100 × cosine gaps of a few tenths); past a gap of 69 the partial-label
    # loss's 1e-30 floor on non-candidates caps it, where cross-entropy stays exact
    logits = (torch.randn(64, 20) * 8).requires_grad_()
    fast = logits.detach().clone().requires_grad_()
    partial_label_loss(logits, candidates).backward()
    F.cross_entropy(fast, single_labels(candidates)).backward()
    torch.testing.assert_close(F.cross_entropy(fast, single_labels(candidates)), partial_label_loss(logits, candidates))
    torch.testing.assert_close(fast.grad, logits.grad, rtol=1e-5, atol=1e-7)


def test_logsumexp_leaves_out_only_terms_that_underflow():
    # by hand: log(e^0 + e^−1 + e^−100) = log(1 + e^−1) in float32 (e^−100 is below the float32 range)
    x = torch.tensor([[0.0, -1.0, -100.0]])
    assert logsumexp(x, 1).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-7)
    torch.manual_seed(0)
    rows = torch.cat([torch.randn(64, 200) * 40, torch.randn(64, 200) * 40 - 69 * (torch.rand(64, 200) < 0.9)])
    rows.requires_grad_()
    ours = logsumexp(rows, 1)
    reference = torch.logsumexp(rows.double(), 1)
    torch.testing.assert_close(ours.double(), reference, rtol=1e-6, atol=1e-6)
    (grad,) = torch.autograd.grad(ours.sum(), rows)
    torch.testing.assert_close(grad.double(), torch.softmax(rows.double(), 1), rtol=1e-5, atol=1e-30)


SIM = torch.tensor([[1.0, 0.5, 0.5], [0.5, 1.0, 0.5], [0.5, 0.5, 1.0]])


def test_confusion_margin_code_variant():
    # r = [1, .5, 0]; δ = (1−r)/(1+r) = [0, 1/3, 1]; Δ = 1; M[y, j] = 12·Δ·δ_y·0.5
    m = confusion_margin(SIM, torch.tensor([10.0, 5.0, 0.0]), scale=12.0, delta="code")
    expected = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 2.0], [6.0, 6.0, 0.0]])
    torch.testing.assert_close(m, expected)


def test_confusion_margin_paper_variant():
    # δ = 1 − r = [0, .5, 1]
    m = confusion_margin(SIM, torch.tensor([10.0, 5.0, 0.0]), scale=12.0, delta="paper")
    expected = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 3.0], [6.0, 6.0, 0.0]])
    torch.testing.assert_close(m, expected)


def test_confusion_margin_imbalance_factor_and_edge_cases():
    # counts [8, 4]: r = [1, .5], Δ = .5, δ_1 = 1/3 -> M[1,0] = 12 · .5 · 1/3 · .5 = 1
    m = confusion_margin(SIM[:2, :2], torch.tensor([8.0, 4.0]))
    torch.testing.assert_close(m, torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    # balanced counts: Δ = 0; all-zero counts: zero margin, never NaN
    assert confusion_margin(SIM, torch.tensor([4.0, 4.0, 4.0])).abs().sum() == 0
    zero = confusion_margin(SIM, torch.zeros(3))
    assert not zero.isnan().any() and zero.abs().sum() == 0
    with pytest.raises(UnknownNameError, match="code, paper"):
        confusion_margin(SIM, torch.ones(3), delta="wrong")


def test_class_similarity_takes_the_max_of_text_and_image():
    text = torch.eye(2)
    prototypes = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    expected = torch.tensor([[1.0, 0.6], [0.6, 1.0]])
    torch.testing.assert_close(class_similarity(text, prototypes, rescale=True), expected)
    torch.testing.assert_close(class_similarity(text, prototypes, rescale=False), expected)


def test_official_rescale_is_a_no_op_when_the_diagonal_is_one():
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)
    protos = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)
    torch.testing.assert_close(class_similarity(text, protos, True), class_similarity(text, protos, False))


def test_class_prototypes_with_an_empty_class():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    fallback = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(class_prototypes(features, labels, fallback),
                               torch.tensor([[s, s], [1.0, 0.0], [0.0, 1.0]]))


def test_largest_margin_entries_skip_the_diagonal():
    margin = torch.tensor([[9.0, 1.0, 3.0], [2.0, 9.0, 0.5], [4.0, 0.0, 9.0]])
    assert largest_entries(margin, n=3) == [[2, 0, 4.0], [0, 2, 3.0], [1, 0, 2.0]]
    assert len(largest_entries(margin, n=10)) == 6, "at most the off-diagonal entries"


def test_official_prototypes_count_each_image_once():
    # Entries (image, class): (7, 0), (8, 0), (7, 1), (9, 1). Walked in the order 2, 0, 1, 3, image 7
    # is met first as class 1's entry, so class 0's entry of image 7 is not counted.
    keep = first_entry_per_image([7, 8, 7, 9], order=[2, 0, 1, 3])
    assert keep.tolist() == [False, True, True, True]
    assert first_entry_per_image([7, 8, 7, 9], order=[0, 1, 2, 3]).tolist() == [True, True, False, True]
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # every entry: class 0 = mean of (1,0) and (0,1); official order above: class 0 = (0,1) alone
    every = class_prototypes(features, labels, torch.eye(2))
    once = class_prototypes(features[torch.as_tensor(keep)], labels[torch.as_tensor(keep)], torch.eye(2))
    assert every[0].tolist() == pytest.approx([math.sqrt(0.5), math.sqrt(0.5)])
    assert once[0].tolist() == pytest.approx([0.0, 1.0])
