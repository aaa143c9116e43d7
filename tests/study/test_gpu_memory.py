"""Several workers on one GPU start only as far as its measured memory holds them (the gate
is tested with a fake nvidia-smi reading and clock; no GPU here)."""

from __future__ import annotations

from lookbench.execution import gpu_memory
from lookbench.execution.gpu_memory import GpuMemoryGate


class FakeGpu:
    def __init__(self, free: int) -> None:
        self.free_mib = free
        self.now = 0.0

    def read(self, gpu: str) -> int:
        return self.free_mib

    def clock(self) -> float:
        return self.now


def _gate(gpu: FakeGpu) -> GpuMemoryGate:
    return GpuMemoryGate(free=gpu.read, clock=gpu.clock)


def test_a_further_worker_waits_for_the_first_ones_memory_to_settle_then_starts():
    gpu = FakeGpu(80_000)
    gate = _gate(gpu)
    gate.baseline("0")
    gate.started("0")
    assert gate.decide("0") == ("wait", None)  # nothing used yet
    gpu.free_mib = 70_000
    assert gate.decide("0")[0] == "wait"  # still growing...
    gpu.free_mib = 60_000
    assert gate.decide("0")[0] == "wait"
    assert gate.decide("0")[0] == "wait"
    assert gate.decide("0") == ("start", None)  # settled at 20 GB a worker; 60 GB left


def test_no_further_worker_when_what_is_left_does_not_hold_one():
    gpu = FakeGpu(80_000)
    gate = _gate(gpu)
    gate.baseline("0")
    gate.started("0")
    gpu.free_mib = 34_000  # one worker took 46 GB
    for _ in range(gpu_memory.SETTLE_POLLS - 1):
        assert gate.decide("0")[0] == "wait"
    decision, why = gate.decide("0")
    assert decision == "stop" and "GPU 0: 1 worker(s) started" in why and "44.9 GiB" in why


def test_a_worker_whose_memory_never_settles_is_judged_after_the_timeout():
    gpu = FakeGpu(80_000)
    gate = _gate(gpu)
    gate.baseline("0")
    gate.started("0")
    for i in range(5):
        gpu.free_mib -= 1000  # still growing
        assert gate.decide("0")[0] == "wait"
    gpu.now = gpu_memory.SETTLE_TIMEOUT_S + 1
    assert gate.decide("0") == ("start", None)


def test_without_nvidia_smi_every_worker_starts_as_asked(monkeypatch):
    monkeypatch.setattr(gpu_memory.shutil, "which", lambda name: None)
    assert gpu_memory.free_mib("0") is None
    gate = GpuMemoryGate()
    gate.baseline("0")
    gate.started("0")
    assert gate.decide("0") == ("start", None)
