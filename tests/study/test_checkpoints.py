"""Checkpoint files: atomic, written in the background, isolated from training, errors surfaced."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from lookbench.execution import checkpoints
from lookbench.execution.checkpoints import (
    CheckpointWriter,
    load_checkpoint,
    save_checkpoint,
)
from lookbench.optim import build


def _model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = build("lookahead", model.parameters(), inner="sgd", lr=0.1, momentum=0.9, k=3)
    return model, opt


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    gen = torch.Generator().manual_seed(steps)
    for _ in range(steps):
        x = torch.randn(32, 8, generator=gen)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_background_write_holds_the_state_at_submit_time(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    trained_on = threading.Event()
    real_save = checkpoints.save_checkpoint

    def save_after_training(path: Path, state: dict) -> None:
        assert trained_on.wait(10)  # the write starts only once training has moved on
        real_save(path, state)

    monkeypatch.setattr(checkpoints, "save_checkpoint", save_after_training)
    model, opt = _model_and_optimizer()
    _train(model, opt, 4)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    expected_slow = [opt.state[p]["slow_param"].clone() for p in model.parameters()]
    path = tmp_path / "checkpoints" / "t.pt"
    with CheckpointWriter() as writer:
        writer.submit(path, {"trial": {"model": model.state_dict(),
                                       "optimizer": opt.state_dict()}})
        _train(model, opt, 5)  # training goes on while the file is written
        trained_on.set()
    state = load_checkpoint(path)
    for key, value in expected.items():
        assert torch.equal(state["trial"]["model"][key], value)
    saved_slow = [s["slow_param"] for s in state["trial"]["optimizer"]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(saved_slow, expected_slow))
    assert not torch.equal(state["trial"]["model"]["0.weight"], model.state_dict()["0.weight"])
    assert [p.name for p in path.parent.iterdir()] == ["t.pt"]  # no temporary left behind


def test_resume_from_a_background_checkpoint_is_bit_identical(tmp_path: Path) -> None:
    model, opt = _model_and_optimizer()
    _train(model, opt, 4)
    path = tmp_path / "t.pt"
    with CheckpointWriter() as writer:
        writer.submit(path, {"trial": {"model": model.state_dict(),
                                       "optimizer": opt.state_dict()}})
        _train(model, opt, 7)
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    state = load_checkpoint(path)["trial"]
    model2, opt2 = _model_and_optimizer()
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["optimizer"])
    _train(model2, opt2, 7)
    for key, value in reference.items():
        assert torch.equal(model2.state_dict()[key], value), key


def test_writes_land_in_order_and_one_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    in_flight = 0
    most = 0
    order: list[int] = []
    lock = threading.Lock()
    real_save = checkpoints.save_checkpoint

    def slow_save(path: Path, state: dict) -> None:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        threading.Event().wait(0.05)
        real_save(path, state)
        order.append(int(state["trial"]["epoch"].item()))
        with lock:
            in_flight -= 1

    monkeypatch.setattr(checkpoints, "save_checkpoint", slow_save)
    path = tmp_path / "t.pt"
    with CheckpointWriter() as writer:
        for epoch in range(5):
            writer.submit(path, {"trial": {"epoch": torch.tensor(epoch)}})
    assert order == [0, 1, 2, 3, 4]
    assert most == 1
    assert load_checkpoint(path)["trial"]["epoch"].item() == 4


def test_a_failed_write_is_raised_at_the_next_submit_and_keeps_the_old_file(tmp_path: Path
                                                                             ) -> None:
    path = tmp_path / "t.pt"
    save_checkpoint(path, {"trial": {"epoch": 1}})
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    writer = CheckpointWriter()
    writer.submit(blocker / "t.pt", {"trial": {"epoch": 2}})  # its parent is a file
    with pytest.raises(OSError):
        writer.submit(path, {"trial": {"epoch": 3}})
    writer.wait()  # the error was raised once; nothing else is pending
    assert load_checkpoint(path)["trial"]["epoch"] == 1


def test_a_failed_write_is_raised_on_leaving_the_block(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(OSError), CheckpointWriter() as writer:
        writer.submit(blocker / "t.pt", {"trial": {}})


def test_an_error_in_the_block_is_not_masked_and_the_last_write_still_lands(tmp_path: Path
                                                                             ) -> None:
    path = tmp_path / "t.pt"
    with pytest.raises(KeyboardInterrupt), CheckpointWriter() as writer:
        writer.submit(path, {"trial": {"epoch": torch.tensor(7)}})
        raise KeyboardInterrupt
    assert load_checkpoint(path)["trial"]["epoch"].item() == 7


def test_snapshot_copies_tensors_and_structure() -> None:
    t = torch.arange(4.0)
    state = {"a": [t, (t, 3)], "b": "x"}
    copy = checkpoints.snapshot(state)
    t.add_(1)
    assert torch.equal(copy["a"][0], torch.arange(4.0))
    assert torch.equal(copy["a"][1][0], torch.arange(4.0))
    assert copy["a"][1][1] == 3 and copy["b"] == "x"
    assert isinstance(copy["a"][1], tuple)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_snapshot_moves_cuda_tensors_to_the_cpu() -> None:
    t = torch.arange(4.0, device="cuda")
    copy = checkpoints.snapshot({"t": t})
    assert copy["t"].device.type == "cpu"
    assert torch.equal(copy["t"], t.cpu())


def test_checkpoints_of_recorded_trials_are_removed_and_others_kept(tmp_path: Path) -> None:
    d = tmp_path / "checkpoints"
    d.mkdir()
    for name in ("aaa.pt", ".aaa.pt.0f0f.tmp", "bbb.pt", ".bbb.pt.1e1e.tmp", "notes.txt"):
        (d / name).write_bytes(b"x")
    assert checkpoints.remove_recorded(d, {"aaa", "ccc"}) == 2
    assert sorted(p.name for p in d.iterdir()) == [".bbb.pt.1e1e.tmp", "bbb.pt", "notes.txt"]
    assert checkpoints.remove_recorded(tmp_path / "absent", {"aaa"}) == 0


def test_one_thread_writes_every_checkpoint_of_a_writer(tmp_path: Path) -> None:
    def writers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "lookbench-checkpoint"}

    before = writers()  # (other tests' writers left open on purpose)
    with CheckpointWriter() as writer:
        for i in range(5):
            writer.submit(tmp_path / "a.pt", {"i": i})
            assert len(writers() - before) == 1
    assert not writers() - before
    assert torch.load(tmp_path / "a.pt")["i"] == 4


@pytest.mark.parametrize(("every", "written"), [(None, 0), ("0", 2)])
def test_checkpoints_follow_elapsed_training_time(tmp_path: Path, monkeypatch, every, written):
    """By default (every 10 s) a trial of well under a second writes none; with 0, one after
    each epoch but the last (3 epochs: 2)."""
    from typer.testing import CliRunner

    from lookbench.cli import app

    if every is None:
        monkeypatch.delenv(checkpoints.INTERVAL_ENV, raising=False)
    else:
        monkeypatch.setenv(checkpoints.INTERVAL_ENV, every)
    saved = []
    real = checkpoints.save_checkpoint
    monkeypatch.setattr(checkpoints, "save_checkpoint",
                        lambda path, state: (saved.append(path), real(path, state)))
    result = CliRunner().invoke(app, ["run", "digits", "--lr", "0.1", "--k", "5", "--alpha",
                                      "0.5", "--epochs", "3", "--devices", "cpu", "--workers",
                                      "1", "--population", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(saved) == 2 * written  # two trials: Lookahead and SGD
