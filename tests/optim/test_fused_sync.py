"""The fused one-pass CPU sync (``lookbench.optim._fused``): same trajectory as Algorithm 1 and
as the eager sync, taken only where it should be, and a clean fall-back where it cannot compile.

Each compile takes seconds, so these tests share a few tensor-size lists.
"""

from __future__ import annotations

import copy
import os
import shutil
import warnings

import pytest
import torch

from lookbench.optim import Lookahead, _fused
from lookbench.optim._tensor_ops import ChunkPlans, _plan
from tests.optim.test_algorithm1 import (
    _problem,
    reference_adam,
    reference_sgd,
    run_lookbench,
)

# Inductor's default C++ compiler; without one every test here still checks the results, which
# then come from the eager fall-back.
HAS_CXX = shutil.which(os.environ.get("CXX", "g++")) is not None


@pytest.fixture(autouse=True)
def _fresh_fused_state():
    _fused.reset_for_tests()
    yield
    _fused.reset_for_tests()


def _fused_lists(opt: Lookahead) -> list:
    plans: ChunkPlans = opt._chunk_plans
    return [fused for _, plan in plans._plans.values() for fused in plan.fused]


@pytest.mark.parametrize("policy", ["maintain", "reset", "interpolate"])
def test_fused_sync_follows_algorithm1_with_sgd(policy):
    x0, grad = _problem()
    k, alpha, steps = 3, 0.8, 14
    ref = reference_sgd(x0, grad, steps, lr=0.05, mu=0.9, k=k, alpha=alpha, policy=policy)
    ours = run_lookbench(x0, grad, steps, lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
                         k=k, alpha=alpha, inner_state=policy, fused=True)
    assert _fused._compiled or not HAS_CXX, "the fused kernel was never used"
    for t, ((theta_r, phi_r), (theta, phi)) in enumerate(zip(ref, ours), 1):
        torch.testing.assert_close(theta, theta_r, rtol=1e-12, atol=1e-12, msg=f"θ at step {t}")
        torch.testing.assert_close(phi, phi_r, rtol=1e-12, atol=1e-12, msg=f"φ at step {t}")


def test_fused_sync_follows_algorithm1_with_adam():
    x0, grad = _problem(seed=2)
    ref = reference_adam(x0, grad, 17, lr=0.05, k=4, alpha=0.3, policy="interpolate")
    ours = run_lookbench(x0, grad, 17, lambda ps: torch.optim.Adam(ps, lr=0.05),
                         k=4, alpha=0.3, inner_state="interpolate", fused=True)
    for t, ((theta_r, phi_r), (theta, phi)) in enumerate(zip(ref, ours), 1):
        torch.testing.assert_close(theta, theta_r, rtol=1e-10, atol=1e-12, msg=f"θ at step {t}")
        torch.testing.assert_close(phi, phi_r, rtol=1e-10, atol=1e-12, msg=f"φ at step {t}")


def _model(channels_last: bool = False) -> torch.nn.Module:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 5),
    )
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _train(model: torch.nn.Module, opt: Lookahead, steps: int, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(4, 3, 8, 8, generator=gen)
        y = torch.randint(0, 5, (4,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("alpha", [0.5, 0.8, "adaptive"])
def test_fused_and_eager_syncs_agree_on_a_float32_model(alpha):
    """Both paths on one model, channels-last conv weights included: the fused loop may round
    the last bit of φ differently from ``lerp_`` when α ≠ 0.5, nothing more. (SGD, not Adam:
    Adam's normalised step turns a one-ulp difference in a near-zero gradient into a whole
    step.)"""
    torch.manual_seed(3)
    eager_model = _model(channels_last=True)
    fused_model = _model(channels_last=True)
    fused_model.load_state_dict(eager_model.state_dict())
    opts = {
        name: Lookahead(torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9), k=3, alpha=alpha,
                        fused=flag)
        for name, m, flag in (("eager", eager_model, False), ("fused", fused_model, True))
    }
    _train(eager_model, opts["eager"], 7)
    _train(fused_model, opts["fused"], 7)
    assert _fused_lists(opts["fused"]) and not _fused_lists(opts["eager"])
    for a, b in zip(eager_model.parameters(), fused_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if alpha == 0.5:  # exact in binary: both formulas round alike
        assert all(torch.equal(a, b) for a, b in zip(eager_model.parameters(),
                                                     fused_model.parameters()))


def test_a_resumed_fused_run_is_bit_identical():
    torch.manual_seed(4)
    model = _model()
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), k=4, alpha=0.7,
                    fused=True)
    _train(model, opt, 6, seed=1)
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = copy.deepcopy(opt.state_dict())  # as saving it to disk would
    _train(model, opt, 7, seed=2)

    resumed = _model()
    resumed.load_state_dict(saved_model)
    opt2 = Lookahead(torch.optim.SGD(resumed.parameters(), lr=0.1, momentum=0.9), k=4, alpha=0.7,
                     fused=True)
    opt2.load_state_dict(saved_opt)
    _train(resumed, opt2, 7, seed=2)
    assert _fused_lists(opt2)
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_by_default_only_large_syncs_are_fused():
    small = [torch.zeros(1000), torch.zeros(5)]
    plan = _plan(small, [t.clone() for t in small], None)
    assert not plan.fused
    large = [torch.zeros(_fused.MIN_TOTAL), torch.zeros(5), torch.zeros(10, dtype=torch.float64)]
    plan = _plan(large, [t.clone() for t in large], None)
    assert [len(s) for s, _ in plan.fused] == [1]
    assert plan.fused[0][0][0].numel() == _fused.MIN_TOTAL
    assert sorted(t.numel() for chunk, _ in plan.chunks for t in chunk) == [5, 10]
    assert not _plan(large, [t.clone() for t in large], False).fused


def test_a_compiler_failure_falls_back_to_the_eager_sync_once():
    """A real compile failure (the C++ compiler is missing): one warning, the same result as
    the eager path, and no second attempt."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch({"cpp.cxx": (None, "no-such-c++-compiler"),
                                "fx_graph_cache": False}):
        _train_eager_and_fused_apart()


def _train_eager_and_fused_apart() -> None:
    torch.manual_seed(5)
    models = {name: _model() for name in ("eager", "fused")}
    models["fused"].load_state_dict(models["eager"].state_dict())
    opts = {name: Lookahead(torch.optim.SGD(m.parameters(), lr=0.1), k=2, alpha=0.6,
                            fused=name == "fused") for name, m in models.items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in opts:
            _train(models[name], opts[name], 6)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len([m for m in messages if "fused CPU sync could not be compiled" in m]) == 1
    assert not _fused.available()
    for a, b in zip(models["eager"].parameters(), models["fused"].parameters()):
        assert torch.equal(a, b)


def test_with_dynamo_disabled_the_sync_stays_eager_and_quiet(monkeypatch):
    monkeypatch.setenv("TORCHDYNAMO_DISABLE", "1")
    model = _model()
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=2, fused=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _train(model, opt, 4)
    assert not _fused._compiled and not _fused.available()
