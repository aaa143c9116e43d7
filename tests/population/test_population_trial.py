"""A population's members against the same configurations trained alone: the same curves,
member by member, to float tolerance; a diverging member recorded as diverged without
disturbing the others; checkpoints that are single trials' and resume either way."""

from __future__ import annotations

import math

import pytest

from lookbench.execution.population.layers import NotPopulable
from lookbench.execution.population.trial import PopulationTrial, why_not
from lookbench.execution.trial import Trial
from lookbench.study.config import TrialConfig

# How close a member's metrics are to its single trial's: float32, three epochs. (Most members
# are bit-identical; a batched product may round differently in the last bit, and training
# carries that along.)
RTOL = 1e-4
ATOL = 1e-5


def digits(optimizer: str = "sgd", **kw) -> TrialConfig:
    base = {"task": "digits", "optimizer": optimizer, "lr": 0.1, "momentum": 0.9,
            "epochs": 3, "seed": 0}
    if optimizer == "lookahead":
        base.update(inner="sgd", k=5, alpha=0.5)
    return TrialConfig(**{**base, **kw})


MEMBERS = [
    digits(),
    digits(lr=0.3, seed=1, weight_decay=1e-3),
    digits(momentum=0.0, seed=2),
    digits("adam", lr=1e-3, momentum=0.9),
    digits("adamw", lr=3e-3, seed=1),
    digits("lookahead"),
    digits("lookahead", k=10, alpha=0.8, inner_state="interpolate", seed=1),
    digits("lookahead", inner_state="reset", seed=2),
    digits("lookahead", inner="adam", lr=3e-3, k=5, alpha=0.5, inner_state="interpolate"),
    digits(lr=40.0),  # diverges
]


def _values(records):
    return [(r.epoch, r.steps, r.diverged, r.train_loss, r.test_loss, r.test_acc,
             r.train_eval_loss, r.lr) for r in records]


def _same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            if isinstance(b, float) and math.isnan(b):
                assert a is not None and math.isnan(a)
            elif isinstance(b, float):
                assert a == pytest.approx(b, rel=RTOL, abs=ATOL)
            else:
                assert a == b


@pytest.fixture(scope="module")
def singles():
    return [list(Trial(c, "cpu").run()) for c in MEMBERS]


def test_each_member_trains_as_its_own_trial_would(singles):
    pop = PopulationTrial(MEMBERS, "cpu")
    list(pop.run())
    for m, want in enumerate(singles):
        _same(_values(pop.records[m]), _values(want))
    assert pop.records[-1][-1].diverged and len(pop.records[-1]) == 1  # masked out at once
    assert not any(r.diverged for member in pop.records[:-1] for r in member)


@pytest.mark.parametrize("cut_after", [1, 2])
def test_a_population_cut_off_resumes_to_the_same_result(singles, cut_after):
    first = PopulationTrial(MEMBERS, "cpu")
    for _ in range(cut_after):
        first.run_epoch()
    states = [first.member_state_dict(m) if not first.member_finished(m) else None
              for m in range(len(MEMBERS))]
    alive = [m for m, s in enumerate(states) if s is not None]
    # ... as a population of the members still training, in another order
    order = list(reversed(alive))
    again = PopulationTrial([MEMBERS[m] for m in order], "cpu")
    again.load_state_dicts([states[m] for m in order])
    list(again.run())
    for i, m in enumerate(order):
        _same(_values(again.records[i]), _values(singles[m]))
    # ... and member by member as single trials: a member's checkpoint is a single trial's
    for m in alive[:3]:
        alone = Trial(MEMBERS[m], "cpu")
        alone.load_state_dict(states[m])
        list(alone.run())
        _same(_values(alone.records), _values(singles[m]))


def test_a_single_trials_checkpoint_joins_a_population(singles):
    states = []
    for c in MEMBERS[:4]:
        t = Trial(c, "cpu")
        t.run_epoch()
        states.append(t.state_dict())
    pop = PopulationTrial(MEMBERS[:4], "cpu")
    pop.load_state_dicts(states)
    list(pop.run())
    for m in range(4):
        _same(_values(pop.records[m]), _values(singles[m]))


def test_checkpoints_of_other_trials_or_of_only_some_members_are_refused():
    a, b = Trial(MEMBERS[0], "cpu"), Trial(MEMBERS[1], "cpu")
    a.run_epoch()
    pop = PopulationTrial(MEMBERS[:2], "cpu")
    with pytest.raises(ValueError, match="every member or none"):
        pop.load_state_dicts([a.state_dict(), None])
    b.run_epoch()
    with pytest.raises(ValueError, match="different trial configuration"):
        pop.load_state_dicts([b.state_dict(), a.state_dict()])


def test_checkpoints_at_different_epochs_resume_to_the_same_bits():
    """A kill while a population's checkpoints are written leaves some members a save ahead:
    those wait for the others and the population goes on as if never cut."""
    members = MEMBERS[:6]
    straight = PopulationTrial(members, "cpu")
    straight.run_epoch()
    first = [straight.member_state_dict(m) for m in range(6)]
    straight.run_epoch()
    second = [straight.member_state_dict(m) for m in range(6)]
    list(straight.run())

    again = PopulationTrial(members, "cpu")
    again.load_state_dicts([second[m] if m % 2 else first[m] for m in range(6)])
    assert again.epoch == 1 and again.waiting(1) and not again.waiting(0)
    assert again.member_state_dict(1) is second[1]  # a waiting member's checkpoint is kept
    assert not again.member_finished(1) and not again.finished
    assert again.run_epoch() == [0, 2, 4]  # the members behind catch up ...
    assert not any(again.waiting(m) for m in range(6))
    list(again.run())  # ... then all go on together
    for m in range(6):
        assert _values(again.records[m]) == _values(straight.records[m])  # the same bits


def test_what_cannot_be_a_population_says_why():
    assert "adaptive" in why_not(digits("lookahead", alpha="adaptive"))
    assert why_not(digits("polyak", inner="sgd")) is not None
    assert "plateau" in why_not(digits(schedule="plateau"))
    with pytest.raises(ValueError, match="share task"):
        PopulationTrial([digits(), digits(epochs=4)], "cpu")
    with pytest.raises(NotPopulable, match="criterion|without training"):
        PopulationTrial([TrialConfig(task="nqm", optimizer="sgd", lr=0.1, momentum=0.0,
                                     epochs=2)] * 2, "cpu")
