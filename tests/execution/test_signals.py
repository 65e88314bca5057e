"""SIGINT and SIGTERM during an apply: no new step starts, the steps in flight finish, the GPUs
changed part-way are rolled back, and the node lock is held until the last NVML change.

The CLI runs in a subprocess with ``MIGKIT_SIM_LATENCY_MS`` so that the signals land while
mutating calls are in flight. A watcher in the test takes the lock the moment it is free and
records the node's mutation counts then: any change after that moment was made without the
lock. ``MIGKIT_SIGNAL_SWEEP=N`` runs N trials per signal instead of the CI's few.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import migkit
from migkit import simulator

MUTATING = (
    "nvmlDeviceSetMigMode",
    "nvmlDeviceCreateGpuInstanceWithPlacement",
    "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
    "nvmlComputeInstanceDestroy",
    "nvmlGpuInstanceDestroy",
)
CONFIG = """\
version: v1
mig-configs:
  all-balanced:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
  five-1g-one-2g:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.10gb": 5, "2g.20gb": 1}
"""
LATENCY_MS = "80"  # a 2xH100 all-balanced apply then takes about 0.7 s after the lock


def _trials() -> int:
    return int(os.environ.get("MIGKIT_SIGNAL_SWEEP", "3"))


def _layouts(state: str) -> dict[int, tuple[object, ...]]:
    """Per GPU: MIG mode (current, pending) and instances by profile and placement."""
    with migkit.open_node(sim_state=state) as node:
        return {
            g.index: (
                g.mig_mode,
                g.pending_mig_mode,
                sorted(
                    (gi.profile_id, gi.start, gi.size, sorted((c.profile_id, c.start, c.size) for c in cis))
                    for gi in g.gpu_instances
                    for cis in [gi.compute_instances]
                ),
            )
            for g in node.snapshot()
        }


def _mutations(state: str) -> dict[str, int]:
    counts = simulator.stats(state)
    return {name: counts.get(name, 0) for name in MUTATING}


def _start(state: str, command: tuple[str, ...]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "migkit", "--sim-state", state, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MIGKIT_SIM_LATENCY_MS": LATENCY_MS},
    )


def _wait_for_lock(lock: Path, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lock.exists() and lock.read_text().strip() == str(proc.pid):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the apply ended before taking the lock: {proc.communicate()}")
        time.sleep(0.005)
    raise AssertionError("the apply never took the node lock")


def _take_lock_when_free(lock: Path, proc: subprocess.Popen[str], state: str) -> dict[str, int] | None:
    """Poll the lock until it is free; return the mutation counts at that moment (None if the
    process ended without freeing it first: the kernel freed it at exit)."""
    fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                assert err.errno in (errno.EWOULDBLOCK, errno.EACCES)
                time.sleep(0.002)
                continue
            counts = _mutations(state)
            proc.wait(timeout=120)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return counts
    finally:
        os.close(fd)


def _trial(
    tmp_path: Path,
    base: str,
    config: str,
    sig: int,
    delay: float,
    second: int | None = None,
    command: tuple[str, ...] | None = None,
) -> str:
    state = str(tmp_path / "t.state")
    Path(state).write_text(Path(base).read_text())
    for leftover in tmp_path.glob("t.state.*"):
        leftover.unlink()
    before = _layouts(state)
    proc = _start(state, command or ("apply", "-f", config, "-c", "all-balanced"))
    lock = Path(state + ".apply.lock")
    _wait_for_lock(lock, proc)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(sig)
        if second is not None:
            time.sleep(0.03)
            if proc.poll() is None:
                proc.send_signal(second)
    at_release = _take_lock_when_free(lock, proc, state)
    out, err = proc.communicate(timeout=120)
    after = _mutations(state)
    assert at_release is not None and at_release == after, (
        f"signal {sig} after {delay:.3f}s: NVML changes after the lock was freed: "
        f"{at_release} -> {after}\n{out}{err}"
    )
    layouts = _layouts(state)
    assert all(layouts[i] == before[i] or layouts[i] == TARGET[i] for i in layouts), (
        f"signal {sig} after {delay:.3f}s: a GPU is in neither layout\n{out}{err}"
    )
    if "MIG configuration applied" in out or "MIG configuration restored" in out:
        # The signal came after the run was over (during the report, or at exit).
        assert layouts == TARGET, out + err
        return "late"
    assert proc.returncode == 128 + sig, f"exit {proc.returncode}\n{out}{err}"
    if "MIG configuration" in err:
        # The failure verdict and the interrupt are on standard error.
        assert "MIG configuration NOT" in err and signal.Signals(sig).name in err
        return "interrupted"
    # The signal came between the end of the run and the report (the handlers were gone).
    assert layouts == TARGET, out + err
    return "late"


TARGET: dict[int, tuple[object, ...]] = {}


@pytest.fixture
def node(tmp_path: Path) -> tuple[str, str]:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    base = simulator.write_state(tmp_path / "base.state", "2xh100-80gb")
    reference = tmp_path / "ref.state"
    reference.write_text(Path(base).read_text())
    with migkit.open_node(sim_state=str(reference)) as sim:
        assert migkit.apply(sim, migkit.load_config(str(config)), "all-balanced").ok
    TARGET.clear()
    TARGET.update(_layouts(str(reference)))
    return base, str(config)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_sweep_keeps_the_lock_until_the_last_change(
    tmp_path: Path, node: tuple[str, str], sig: int
) -> None:
    """At random moments of an apply (mode phase and config phase), SIGINT/SIGTERM never free
    the lock before the last NVML change; every GPU ends at its previous layout or the target."""
    base, config = node
    rng = random.Random(f"signals/{sig}")
    seen = {"interrupted": 0, "late": 0}
    failures: list[str] = []
    for _ in range(_trials()):
        try:
            seen[_trial(tmp_path, base, config, sig, rng.uniform(0.0, 0.6))] += 1
        except AssertionError as failure:
            failures.append(str(failure).splitlines()[0])
    print(
        f"signal sweep {signal.Signals(sig).name}: {_trials()} trials, {len(failures)} failures "
        f"({seen['interrupted']} interrupted mid-apply, {seen['late']} after the run was over)"
    )
    assert not failures, f"{len(failures)}/{_trials()} trials failed:\n" + "\n".join(failures)
    assert seen["interrupted"] > 0, seen


def test_second_signal_does_not_skip_the_rollback(tmp_path: Path, node: tuple[str, str]) -> None:
    """SIGINT then SIGTERM in the middle of the config phase: the rollback still runs to its end."""
    base, config = node
    assert _trial(tmp_path, base, config, signal.SIGINT, 0.15, second=signal.SIGTERM) == "interrupted"


def test_interrupted_apply_is_completed_by_a_rerun(tmp_path: Path, node: tuple[str, str]) -> None:
    """After an interrupted apply, running it again converges."""
    base, config = node
    _trial(tmp_path, base, config, signal.SIGTERM, 0.1)
    state = str(tmp_path / "t.state")
    done = subprocess.run(
        [sys.executable, "-m", "migkit", "--sim-state", state, "apply", "-f", config, "-c", "all-balanced"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert _layouts(state) == TARGET


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_restore_keeps_the_lock_and_rolls_back(
    tmp_path: Path, node: tuple[str, str], sig: int
) -> None:
    """restore from a checkpoint is interrupted like apply: lock held to the last change, each
    GPU at its previous layout or at the checkpoint's."""
    base, config = node
    checkpoint = tmp_path / "saved.json"
    reference = str(tmp_path / "ref.state")
    done = subprocess.run(
        [sys.executable, "-m", "migkit", "--sim-state", reference, "checkpoint", "-f", str(checkpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rng = random.Random(f"restore/{sig}")
    outcomes = [
        _trial(tmp_path, base, config, sig, rng.uniform(0.02, 0.3), command=("restore", "-f", str(checkpoint)))
        for _ in range(2)
    ]
    assert "interrupted" in outcomes


def test_a_callers_own_handler_hears_the_signal_after_the_apply() -> None:
    """A service's own SIGTERM handler is not run mid-apply, and is called once the apply has
    stopped; Python's default SIGINT handler is not re-raised afterwards."""
    from migkit.execution.interrupts import deferred_interrupts

    heard: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: heard.append(signum))
    try:
        with deferred_interrupts() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 5
            while not (stop() and len(stop.received) == 2) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert stop() and stop.signum == signal.SIGTERM
            assert heard == []
        assert heard == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
