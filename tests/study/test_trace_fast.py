"""The paper's Figure 10 as data: with ``trace_fast``, every epoch also evaluates Lookahead's
fast weights at the end of its last inner loop (θ_{t,k}, just before the slow step) and an
averaging baseline's iterate, as ``fast_<m>`` in the curves table; training is unchanged."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from lookbench.execution.trial import Trial
from lookbench.optim import Lookahead, fast_weights
from lookbench.study.config import TrialConfig
from lookbench.study.spec import lookbench_id


def _config(optimizer: str = "lookahead", **extra) -> TrialConfig:
    hp = {"inner": "sgd", "k": 5, "alpha": 0.5} if optimizer == "lookahead" else (
        {"inner": "sgd"} if optimizer == "polyak" else {})
    return TrialConfig(task="quadratic", optimizer=optimizer, lr=0.05, momentum=0.9, epochs=3,
                       seed=0, **hp, **extra)


def test_lookahead_keeps_the_inner_loops_end() -> None:
    """θ_{t,k} is what the inner optimizer reached after k steps from the slow weights φ_t;
    the slow step then makes φ_{t+1} = φ_t + α(θ_{t,k} − φ_t)."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(6))
    opt = Lookahead(torch.optim.SGD([w], lr=0.1, momentum=0.9), k=3, alpha=0.5,
                    trace_fast=True)
    target = torch.randn(6)
    phi = w.detach().clone()
    for _ in range(2):
        for step in range(3):
            opt.zero_grad()
            ((w - target) ** 2).sum().backward()
            if step == 2:
                with torch.no_grad():  # the state just before the third inner step
                    buf = opt.inner.state[w]["momentum_buffer"].clone()
                    theta_k = w.detach() - 0.1 * (0.9 * buf + w.grad)
            opt.step()
        expected_phi = phi + 0.5 * (theta_k - phi)
        assert torch.allclose(w.detach(), expected_phi, atol=1e-6)
        with fast_weights(opt):
            assert torch.allclose(w.detach(), theta_k, atol=1e-6)
        assert torch.allclose(w.detach(), expected_phi, atol=1e-6)  # swapped back
        phi = expected_phi


def test_plain_optimizer_has_nothing_to_trace() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    assert fast_weights(torch.optim.SGD([w], lr=0.1)) is None


@pytest.mark.parametrize("optimizer", ["lookahead", "polyak"])
def test_trial_records_fast_metrics_and_trains_the_same(optimizer: str) -> None:
    plain = Trial(_config(optimizer), "cpu")
    traced = Trial(_config(optimizer, trace_fast=True), "cpu")
    a, b = list(plain.run()), list(traced.run())
    for ra, rb in zip(a, b):
        assert ra.test_loss == rb.test_loss  # evaluating the fast weights changes nothing
        assert "fast_test_loss" in rb.extra and "fast_test_loss" not in ra.extra
    # the fast weights are not the evaluated ones (a quadratic with momentum: they differ)
    assert any(r.extra["fast_test_loss"] != r.test_loss for r in b)


def test_fast_trace_resumes_exactly() -> None:
    config = _config(trace_fast=True)
    straight = list(Trial(config, "cpu").run())
    first = Trial(config, "cpu")
    first.run_epoch()
    state = first.state_dict()
    second = Trial(config, "cpu")
    second.load_state_dict(state)
    resumed = list(second.run())
    assert [r.extra for r in resumed] == [r.extra for r in straight[1:]]


def test_trace_leaves_existing_ids_alone() -> None:
    """A study without the trace keeps the trial ids it had before the field existed."""
    fields = _config().model_dump(mode="json")
    del fields["trace_fast"]
    fields = {k: v for k, v in fields.items() if v is not None or k in
              ("lr", "momentum", "weight_decay", "k", "alpha", "inner_state", "batch_size",
               "schedule", "inner")}
    before = hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":"))
                            .encode()).hexdigest()[:16]
    assert lookbench_id(_config()) == before
    assert lookbench_id(_config(trace_fast=True)) != before
