"""An optimizer of your own: plain heavy-ball SGD written against torch.optim.Optimizer.

Use it as ``lookbench run digits --inner docs/examples/my_optimizer.py:HeavyBall``: lookbench
passes the learning rate, momentum and weight decay it sweeps to the constructor's arguments of
those names. Lookahead wraps it like any other; its momentum state is called
``momentum_buffer``, which lookbench does not know for a class of your own, so the ``reset`` and
``interpolate`` inner-state policies need ``MOMENTUM_KEYS`` (below) and ``maintain`` does not.
"""

import torch


class HeavyBall(torch.optim.Optimizer):
    MOMENTUM_KEYS = ("momentum_buffer",)

    def __init__(self, params, lr=0.1, momentum=0.9, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad.add(p, alpha=group["weight_decay"])
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(d)
                p.add_(buf, alpha=-group["lr"])
        return loss
