"""Lookahead as a complete torch optimizer: checkpoints, schedulers, AMP, closures, hooks,
pickling, param groups, evaluation on the slow weights, and clear errors for bad arguments."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

from lookbench.optim import Lookahead, evaluation_weights, use_evaluation_weights

INNERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "nesterov": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda ps: torch.optim.Adam(ps, lr=3e-3),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=3e-3, weight_decay=0.1),
}


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 3))


def batches(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(32, 8, generator=gen), torch.randint(0, 3, (32,), generator=gen))
            for _ in range(n)]


def train(model, opt, data, sched=None):
    for x, y in data:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()


def flat_state(opt) -> list[torch.Tensor]:
    """Every tensor the optimizer holds (its own and the inner's), in a fixed order."""
    out = []
    for state in (opt.state, opt.inner.state):
        for group in opt.param_groups:
            for p in group["params"]:
                for key in sorted(state.get(p, {})):
                    if isinstance(state[p][key], torch.Tensor):
                        out.append(state[p][key])
    return out


def assert_same(model_a, opt_a, model_b, opt_b):
    for pa, pb in zip(model_a.state_dict().values(), model_b.state_dict().values()):
        assert torch.equal(pa, pb)
    sa, sb = flat_state(opt_a), flat_state(opt_b)
    assert len(sa) == len(sb) and len(sa) > 0
    for ta, tb in zip(sa, sb):
        assert torch.equal(ta, tb)
    assert [g["lookahead_step"] for g in opt_a.param_groups] == [
        g["lookahead_step"] for g in opt_b.param_groups
    ]


@pytest.mark.parametrize("inner", list(INNERS))
@pytest.mark.parametrize("policy", ["maintain", "reset", "interpolate"])
@pytest.mark.parametrize("save_at", [1, 4, 5, 7])
@pytest.mark.parametrize("optimizer_first", [True, False])
def test_checkpoint_resume_is_bit_identical(inner, policy, save_at, optimizer_first):
    data = batches(13)

    def build(seed):
        model = make_model(seed)
        opt = Lookahead(INNERS[inner](model.parameters()), k=5, alpha=0.6, inner_state=policy)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3, 9], gamma=0.2)
        return model, opt, sched

    model_a, opt_a, sched_a = build(seed=0)
    train(model_a, opt_a, data, sched_a)

    model_b, opt_b, sched_b = build(seed=0)
    train(model_b, opt_b, data[:save_at], sched_b)
    buf = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "opt": opt_b.state_dict(),
                "sched": sched_b.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)  # plain tensors and numbers only

    model_c, opt_c, sched_c = build(seed=99)  # a fresh model with other weights
    if optimizer_first:
        opt_c.load_state_dict(ckpt["opt"])
        model_c.load_state_dict(ckpt["model"])
    else:
        model_c.load_state_dict(ckpt["model"])
        opt_c.load_state_dict(ckpt["opt"])
    sched_c.load_state_dict(ckpt["sched"])
    assert opt_c.param_groups is opt_c.inner.param_groups
    train(model_c, opt_c, data[save_at:], sched_c)
    assert_same(model_a, opt_a, model_c, opt_c)


@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_checkpoint_resume_with_adaptive_alpha(inner):
    data = batches(12)
    model_a = make_model(0)
    opt_a = Lookahead(INNERS[inner](model_a.parameters()), k=3, alpha="adaptive", alpha_low=0.2)
    train(model_a, opt_a, data)
    model_b = make_model(0)
    opt_b = Lookahead(INNERS[inner](model_b.parameters()), k=3, alpha="adaptive", alpha_low=0.2)
    train(model_b, opt_b, data[:4])
    sd_model, sd_opt = copy.deepcopy(model_b.state_dict()), copy.deepcopy(opt_b.state_dict())
    model_c = make_model(5)
    opt_c = Lookahead(INNERS[inner](model_c.parameters()), k=3, alpha="adaptive", alpha_low=0.2)
    opt_c.load_state_dict(sd_opt)
    model_c.load_state_dict(sd_model)
    train(model_c, opt_c, data[4:])
    assert_same(model_a, opt_a, model_c, opt_c)
    assert opt_c.param_groups[0]["lookahead_last_alpha"] == opt_a.param_groups[0][
        "lookahead_last_alpha"]


def test_loading_a_bare_inner_state_dict_is_refused_clearly():
    model = make_model(0)
    bare = torch.optim.SGD(model.parameters(), lr=0.1)
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="inner_state"):
        opt.load_state_dict(bare.state_dict())


def test_scheduler_on_the_wrapper_drives_the_inner_learning_rate():
    model = make_model(0)
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), k=5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    train(model, opt, batches(4), sched)
    assert opt.inner.param_groups[0]["lr"] == pytest.approx(0.025)
    # ... and still after a load_state_dict (kozistr#237: stale param_groups)
    opt.load_state_dict(opt.state_dict())
    sched.step()
    sched.step()
    assert opt.inner.param_groups[0]["lr"] == pytest.approx(0.0125)
    assert opt.param_groups is opt.inner.param_groups


def test_schedulers_on_wrapper_or_inner_give_the_same_trajectory():
    data = batches(11)
    finals = []
    for on_wrapper in (True, False):
        model = make_model(0)
        inner = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
        opt = Lookahead(inner, k=4, alpha=0.5)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt if on_wrapper else inner, max_lr=0.3,
                                                    total_steps=len(data))
        train(model, opt, data, sched)
        finals.append(model.state_dict())
    for a, b in zip(finals[0].values(), finals[1].values()):
        assert torch.equal(a, b)


def test_grad_scaler_steps_and_skips_like_the_bare_optimizer():
    data = batches(6)
    model_ref = make_model(0)
    opt_ref = Lookahead(torch.optim.SGD(model_ref.parameters(), lr=0.1, momentum=0.9), k=3)
    train(model_ref, opt_ref, data)

    model = make_model(0)
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), k=3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for x, y in data:
        opt.zero_grad()
        scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
        scaler.step(opt)
        scaler.update()
    for a, b in zip(model_ref.state_dict().values(), model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)

    # A step with an overflowing gradient is skipped entirely, the cycle counter included.
    before = [p.detach().clone() for p in model.parameters()]
    step_before = opt.param_groups[0]["lookahead_step"]
    opt.zero_grad()
    scaler.scale(nn.functional.cross_entropy(model(data[0][0]), data[0][1])).backward()
    next(model.parameters()).grad[0, 0] = float("inf")
    scaler.step(opt)
    scaler.update()
    assert opt.param_groups[0]["lookahead_step"] == step_before
    for a, b in zip(before, model.parameters()):
        assert torch.equal(a, b.detach())


def test_closures_are_passed_to_the_inner_optimizer():
    model = make_model(0)
    x, y = batches(1)[0]
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=2)
    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and calls == [1]
    # LBFGS needs the closure and calls it several times per step.
    opt = Lookahead(torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4), k=2)
    first = float(opt.step(closure).detach())
    for _ in range(3):
        last = float(opt.step(closure).detach())
    assert last < first and len(calls) > 5


def test_step_hooks_and_zero_grad():
    model = make_model(0)
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=2)
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: seen.append("post"))
    train(model, opt, batches(2))
    assert seen == ["pre", "post", "pre", "post"]
    nn.functional.cross_entropy(model(batches(1)[0][0]), batches(1)[0][1]).backward()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_deepcopy_and_pickle_keep_everything_and_break_nothing():
    data = batches(9)
    model = make_model(0)
    opt = Lookahead(torch.optim.Adam(model.parameters(), lr=1e-2), k=4, alpha=0.7,
                    inner_state="interpolate")
    train(model, opt, data[:3])
    model2, opt2 = pickle.loads(pickle.dumps((model, opt)))
    model3, opt3 = copy.deepcopy((model, opt))
    for m, o in ((model2, opt2), (model3, opt3)):
        assert o.param_groups is o.inner.param_groups
        assert o.inner_state == "interpolate" and o.k == 4 and o.alpha == 0.7
        assert o.param_groups[0]["params"][0] is next(m.parameters())
    train(model, opt, data[3:])
    for m, o in ((model2, opt2), (model3, opt3)):
        train(m, o, data[3:])
        assert_same(model, opt, m, o)
    # Copying must not have patched the class: a brand-new instance still works.
    fresh_model = make_model(1)
    fresh = Lookahead(torch.optim.SGD(fresh_model.parameters(), lr=0.1), k=2)
    train(fresh_model, fresh, data[:3])
    assert fresh.param_groups[0]["lookahead_step"] == 3


def test_add_param_group_gets_slow_weights_and_its_own_cycle():
    model = make_model(0)
    head = nn.Linear(3, 2)
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=3, alpha=0.5)
    train(model, opt, batches(2))
    opt.add_param_group({"params": head.parameters(), "lr": 0.05})
    assert opt.inner.param_groups[-1] is opt.param_groups[-1]
    new = opt.param_groups[-1]
    assert new["lookahead_k"] == 3 and new["lookahead_alpha"] == 0.5
    assert new["lookahead_step"] == 0 and new["lr"] == 0.05
    start = head.weight.detach().clone()
    fast = []
    for x, y in batches(3, seed=1):
        opt.zero_grad()
        logits = head(model(x))
        nn.functional.cross_entropy(logits, y % 2).backward()
        if len(fast) == 2:
            fast.append(head.weight.detach() - 0.05 * head.weight.grad)  # θ3 before the sync
        opt.step()
        if len(fast) < 2:
            fast.append(head.weight.detach().clone())
    torch.testing.assert_close(opt.state[head.weight]["slow_param"], start + 0.5 * (fast[2] - start))
    torch.testing.assert_close(head.weight.detach(), opt.state[head.weight]["slow_param"])


def test_evaluation_weights_swap_in_and_back_exactly():
    model = make_model(0)
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), k=5)
    train(model, opt, batches(7))  # mid-cycle: fast ≠ slow
    fast = {n: p.detach().clone() for n, p in model.named_parameters()}
    slow = {n: opt.state[p]["slow_param"].clone() for n, p in model.named_parameters()}
    assert any(not torch.equal(fast[n], slow[n]) for n in fast)
    with evaluation_weights(opt):
        for n, p in model.named_parameters():
            assert torch.equal(p.detach(), slow[n])
        with pytest.raises(RuntimeError, match="evaluation_weights"):
            opt.step()
        with pytest.raises(RuntimeError, match="evaluation_weights"):
            opt.state_dict()
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), fast[n])
        assert torch.equal(opt.state[p]["slow_param"], slow[n])
    # Evaluating does not change the trajectory.
    model_ref = make_model(0)
    opt_ref = Lookahead(torch.optim.SGD(model_ref.parameters(), lr=0.1, momentum=0.9), k=5)
    train(model_ref, opt_ref, batches(7))
    train(model, opt, batches(4, seed=5))
    train(model_ref, opt_ref, batches(4, seed=5))
    assert_same(model, opt, model_ref, opt_ref)
    use_evaluation_weights(opt)
    for p in model.parameters():
        assert torch.equal(p.detach(), opt.state[p]["slow_param"])


def test_evaluation_weights_of_a_plain_optimizer_is_a_no_op():
    model = make_model(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    with evaluation_weights(opt):
        pass
    use_evaluation_weights(opt)
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))


def test_adaptive_alpha_uses_adams_second_moment_and_the_last_gradient():
    model = make_model(0)
    inner = torch.optim.Adam(model.parameters(), lr=0.05)
    opt = Lookahead(inner, k=3, alpha="adaptive", alpha_low=0.05)
    snapshot = {}

    def before_sync(optimizer, args, kwargs):  # runs after the inner step, before the sync
        if opt.param_groups[0]["lookahead_step"] == 2:
            snapshot["fast"] = [p.detach().clone() for p in model.parameters()]
            snapshot["grad"] = [p.grad.clone() for p in model.parameters()]
            snapshot["v_hat"] = [
                inner.state[p]["exp_avg_sq"] / (1 - 0.999 ** float(inner.state[p]["step"]))
                for p in model.parameters()
            ]

    inner.register_step_post_hook(before_sync)
    phi0 = [p.detach().clone() for p in model.parameters()]
    train(model, opt, batches(3))
    num = sum(float((g * (s - f)).sum()) for g, s, f in
              zip(snapshot["grad"], phi0, snapshot["fast"]))
    den = sum(float((v * (s - f) ** 2).sum()) for v, s, f in
              zip(snapshot["v_hat"], phi0, snapshot["fast"]))
    expected = min(1.0, max(0.05, 1 + num / den))
    got = opt.param_groups[0]["lookahead_last_alpha"]
    assert got == pytest.approx(expected, rel=1e-9)
    for p, s, f in zip(model.parameters(), phi0, snapshot["fast"]):
        torch.testing.assert_close(p.detach(), s + got * (f - s))


def test_adaptive_alpha_with_sgd_keeps_its_own_second_moment():
    model = make_model(0)
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=2, alpha="adaptive",
                    beta2=0.9)
    grads = []
    for x, y in batches(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        opt.step()
    for i, p in enumerate(model.parameters()):
        expected = 0.9 * 0.1 * grads[0][i] ** 2 + 0.1 * grads[1][i] ** 2
        torch.testing.assert_close(opt.state[p]["lookahead_sq_avg"], expected)
    assert 0.5 <= opt.param_groups[0]["lookahead_last_alpha"] <= 1.0


def test_plain_lookahead_keeps_no_extra_state_but_the_slow_weights():
    model = make_model(0)
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), k=2)
    train(model, opt, batches(3))
    for p in model.parameters():
        assert set(opt.state[p]) == {"slow_param"}


class _CustomOptimizer(torch.optim.Optimizer):
    def __init__(self, params):
        super().__init__(params, {"lr": 0.1})

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.state[p]["velocity"] = p.grad.clone()
                    p.data.add_(p.grad, alpha=-group["lr"])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ValueError, "k must be an integer >= 1"),
        ({"k": 2.5}, ValueError, "k must be an integer >= 1"),
        ({"k": True}, ValueError, "k must be an integer >= 1"),
        ({"alpha": 0.0}, ValueError, r"alpha must be a number in \(0, 1\]"),
        ({"alpha": 1.5}, ValueError, r"alpha must be a number in \(0, 1\]"),
        ({"alpha": -0.1}, ValueError, r"alpha must be a number in \(0, 1\]"),
        ({"alpha": "fast"}, ValueError, r"alpha must be a number in \(0, 1\]"),
        ({"alpha": "adaptive", "alpha_low": 0}, ValueError, "alpha_low"),
        ({"inner_state": "pullback"}, ValueError, "inner_state must be one of"),
    ],
)
def test_bad_arguments_say_what_is_wrong(kwargs, error, match):
    model = make_model(0)
    with pytest.raises(error, match=match):
        Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)


def test_bad_inner_optimizers_say_what_is_wrong():
    model = make_model(0)
    with pytest.raises(TypeError, match="got the class SGD"):
        Lookahead(torch.optim.SGD)
    with pytest.raises(TypeError, match="wraps a torch.optim.Optimizer instance, got list"):
        Lookahead(list(model.parameters()))
    with pytest.raises(ValueError, match="momentum_keys"):
        Lookahead(_CustomOptimizer(model.parameters()), inner_state="reset")
    # ... and naming the keys makes it work.
    opt = Lookahead(_CustomOptimizer(model.parameters()), k=2, inner_state="reset",
                    momentum_keys=("velocity",))
    train(model, opt, batches(2))
    assert all(not opt.inner.state[p]["velocity"].any() for p in model.parameters())


def test_bad_per_group_settings_are_refused_too():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        Lookahead(torch.optim.SGD([{"params": [a], "lookahead_k": 0}], lr=0.1))
    opt = Lookahead(torch.optim.SGD([a], lr=0.1))
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\]"):
        opt.add_param_group({"params": [b], "lookahead_alpha": 2.0})
    assert len(opt.param_groups) == 1 and len(opt.inner.param_groups) == 1


def test_alpha_one_is_accepted_as_the_lookahead_off_control():
    model = make_model(0)
    assert Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), alpha=1.0).alpha == 1.0


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_works_with_a_torch_compiled_model(backend):
    data = batches(6)
    model_ref = make_model(0)
    opt_ref = Lookahead(torch.optim.SGD(model_ref.parameters(), lr=0.1, momentum=0.9), k=3)
    train(model_ref, opt_ref, data)
    model = make_model(0)
    compiled = torch.compile(model, backend=backend)
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), k=3)
    train(compiled, opt, data)
    for a, b in zip(model_ref.state_dict().values(), model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_works_with_an_inductor_compiled_model():
    data = batches(6)
    model_ref = make_model(0)
    opt_ref = Lookahead(torch.optim.Adam(model_ref.parameters(), lr=1e-2), k=3)
    train(model_ref, opt_ref, data)
    model = make_model(0)
    compiled = torch.compile(model)
    opt = Lookahead(torch.optim.Adam(model.parameters(), lr=1e-2), k=3)
    train(compiled, opt, data)
    with evaluation_weights(opt):
        compiled.eval()
        compiled(data[0][0])
    for a, b in zip(model_ref.state_dict().values(), model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_cuda_matches_cpu_and_checkpoints_across_devices(inner):
    data = batches(8)
    model_cpu = make_model(0).double()
    opt_cpu = Lookahead(INNERS[inner](model_cpu.parameters()), k=3, inner_state="interpolate")
    train(model_cpu, opt_cpu, [(x.double(), y) for x, y in data])
    model = make_model(0).double().cuda()
    opt = Lookahead(INNERS[inner](model.parameters()), k=3, inner_state="interpolate")
    train(model, opt, [(x.double().cuda(), y.cuda()) for x, y in data[:4]])
    sd = opt.state_dict()
    model2 = make_model(1).double().cuda()
    opt2 = Lookahead(INNERS[inner](model2.parameters()), k=3, inner_state="interpolate")
    opt2.load_state_dict(sd)
    model2.load_state_dict(model.state_dict())
    train(model2, opt2, [(x.double().cuda(), y.cuda()) for x, y in data[4:]])
    for a, b in zip(model_cpu.state_dict().values(), model2.state_dict().values()):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-9, atol=1e-10)
    assert opt2.state[next(model2.parameters())]["slow_param"].is_cuda
