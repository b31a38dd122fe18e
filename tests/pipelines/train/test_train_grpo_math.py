"""GRPO's arithmetic, pinned: group-normalized advantages, the clipped surrogate with the k3 KL, and rollout
collation. The loss is also checked against a direct per-sequence computation and its gradient by autograd."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.train.collate import IGNORE
from pipelines.train.grpo import collate_rollouts, group_advantages, grpo_loss


def test_group_advantages_normalize_within_each_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    adv = group_advantages(rewards, 4)
    std = torch.tensor([1.0, 0.0, 0.0, 1.0]).std()  # unbiased, as GRPO and TRL use
    assert torch.allclose(adv[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std + 1e-4))
    assert torch.equal(adv[4:], torch.zeros(4))  # equal rewards: nothing to learn from the group
    assert torch.allclose(group_advantages(rewards, 4, scale=False)[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]))
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(rewards, 3)


def test_on_policy_loss_is_the_mean_of_token_means_and_its_gradient_is_the_policy_gradient():
    # Two completions of 2 and 3 tokens; ratio 1 (old = current), no KL.
    logp = torch.tensor([-1.0, -2.0, -0.5, -0.25, -3.0], requires_grad=True)
    rows = torch.tensor([0, 0, 1, 1, 1])
    adv = torch.tensor([2.0, -1.0])
    out = grpo_loss(logp, logp.detach(), None, rows, adv, clip_eps=0.2, kl_beta=0.0)
    # Value: -(mean over completions of mean over its tokens of ratio * A) = -((2 + 2) / 2 + (-1 - 1 - 1) / 3) / 2
    assert out.loss.item() == pytest.approx(-(2.0 + -1.0) / 2)
    out.loss.backward()
    # d/dlogp of -ratio*A/len/R with ratio = exp(logp - old): -A / len / R at ratio 1.
    assert torch.allclose(logp.grad, torch.tensor([-2 / 2 / 2, -2 / 2 / 2, 1 / 3 / 2, 1 / 3 / 2, 1 / 3 / 2]))
    assert out.kl.item() == 0.0 and out.clipped.item() == 0.0


def test_clipping_and_the_k3_kl_match_a_direct_computation():
    logp = torch.tensor([-0.5, -1.0, -2.0])
    old = torch.tensor([-1.0, -1.0, -1.0])  # ratios e^0.5, 1, e^-1
    ref = torch.tensor([-0.7, -1.2, -1.5])
    rows = torch.tensor([0, 0, 1])
    adv = torch.tensor([1.0, -1.0])
    out = grpo_loss(logp, old, ref, rows, adv, clip_eps=0.2, kl_beta=0.1)
    ratio = [math.exp(0.5), 1.0, math.exp(-1.0)]
    a = [1.0, 1.0, -1.0]
    surrogate = [-min(r * x, min(max(r, 0.8), 1.2) * x) for r, x in zip(ratio, a)]
    kl = [math.exp(rf - lp) - (rf - lp) - 1 for rf, lp in zip(ref.tolist(), logp.tolist())]
    token = [s + 0.1 * k for s, k in zip(surrogate, kl)]
    assert out.loss.item() == pytest.approx(((token[0] + token[1]) / 2 + token[2]) / 2, rel=1e-6)
    assert out.kl.item() == pytest.approx(sum(kl) / 3, rel=1e-6)
    assert out.clipped.item() == pytest.approx(2 / 3)  # e^0.5 clipped at 1.2 (A > 0), e^-1 at 0.8 (A < 0)
    assert all(k >= 0 for k in kl)


def test_collate_rollouts_supervises_only_the_completion():
    mb = collate_rollouts([[5, 6, 7], [5]], [[8, 9], [10, 11, 12]], pad_id=0, keys=["a#0", "b#0"])
    assert mb.input_ids.tolist() == [[5, 6, 7, 8, 9], [5, 10, 11, 12, 0]]
    assert mb.labels.tolist() == [[IGNORE, IGNORE, IGNORE, 8, 9], [IGNORE, 10, 11, 12, IGNORE]]
    assert mb.loss_tokens == 5 and mb.rows == 2 and mb.keys == ["a#0", "b#0"]
    with pytest.raises(ValueError, match="rollout b#0: empty completion"):
        collate_rollouts([[1], [2]], [[3], []], pad_id=0, keys=["a#0", "b#0"])
