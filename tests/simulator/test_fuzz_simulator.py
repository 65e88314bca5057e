"""Fuzzing the NVML simulator through migkit's shim with random bulk operations.

Random batches of GPU- and compute-instance creations (valid and invalid profile IDs and
placements), destructions (existing and made-up IDs), MIG mode changes, busy marks and
simulated resets run on small simulated nodes of mixed models. After every step:

- every per-item status is a known NVML return code or one of the shim's own;
- the snapshot is self-consistent: GPU instances sit at one of their profile's placements,
  never overlap and respect the instance caps; compute instances sit inside their GPU
  instance at one of their profile's placements without overlapping; IDs are unique;
- successful items are visible in the next snapshot, batches where nothing succeeded change
  nothing, and busy instances are never destroyed.

The same operations drive a Hypothesis state machine in-process and a seeded random fuzzer in
a subprocess (so that a crash in C fails one test with its seed instead of killing pytest).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from typing import Protocol, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from migkit import simulator
from migkit.errors import NVML_ERROR_NAMES, NvmlError
from migkit.models import ARCH_HOPPER, GpuState, Placement
from migkit.nvml.node import (
    STATUS_NOT_ATTEMPTED,
    STATUS_READ_ONLY,
    ComputeInstanceRef,
    ComputeInstanceRequest,
    GpuInstanceRef,
    GpuInstanceRequest,
    MigModeRequest,
    Node,
    open_node,
)
from strategies import SIM_MODELS

KNOWN_STATUSES = frozenset(NVML_ERROR_NAMES) | {STATUS_READ_ONLY, STATUS_NOT_ATTEMPTED}
U32 = 2**32 - 1
TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

T = TypeVar("T")


class Chooser(Protocol):
    """Where the fuzzer's random choices come from (a seeded Random, or Hypothesis)."""

    def integer(self, low: int, high: int) -> int: ...

    def pick(self, items: Sequence[T]) -> T: ...


class RandomChooser:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def pick(self, items: Sequence[T]) -> T:
        return items[self.rng.randrange(len(items))]


class DataChooser:
    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def pick(self, items: Sequence[T]) -> T:
        return self.data.draw(st.sampled_from(items))


# ---------------------------------------------------------------------- consistency


def _mask(start: int, size: int) -> int:
    return ((1 << size) - 1) << start


def check_snapshot(gpus: Sequence[GpuState]) -> None:
    """The snapshot obeys the MIG placement rules its own profile tables state."""
    assert sorted(g.index for g in gpus) == list(range(len(gpus))), "NVML indices"
    for gpu in gpus:
        where = f"GPU {gpu.index}"
        assert gpu.mig_mode in (0, 1) and gpu.pending_mig_mode in (0, 1), where
        if not gpu.mig_capable:
            assert not gpu.profiles and not gpu.gpu_instances, where
            assert gpu.mig_mode == 0, where
            continue
        if gpu.mig_mode == 0:
            assert not gpu.gpu_instances, f"{where}: instances while MIG is disabled"
        profiles = {p.id: p for p in gpu.profiles}
        assert len(profiles) == len(gpu.profiles), f"{where}: duplicate profile IDs"
        gi_ids = [gi.id for gi in gpu.gpu_instances]
        assert len(set(gi_ids)) == len(gi_ids), f"{where}: duplicate GPU instance IDs {gi_ids}"
        used = 0
        per_profile: Counter[int] = Counter()
        for gi in gpu.gpu_instances:
            gwhere = f"{where} GI {gi.id} ({gi.profile} at {gi.start}:{gi.size})"
            profile = profiles.get(gi.profile_id)
            assert profile is not None, f"{gwhere}: unknown profile ID {gi.profile_id}"
            assert Placement(gi.start, gi.size) in profile.placements, gwhere
            mask = _mask(gi.start, gi.size)
            assert not mask & used, f"{gwhere} overlaps another GPU instance"
            used |= mask
            per_profile[profile.id] += 1
            assert per_profile[profile.id] <= profile.instance_count, f"{gwhere}: over the cap"
            compute = {cp.id: cp for cp in profile.compute_profiles}
            ci_ids = [ci.id for ci in gi.compute_instances]
            assert len(set(ci_ids)) == len(ci_ids), f"{gwhere}: duplicate CI IDs {ci_ids}"
            ci_used = 0
            per_ci: Counter[int] = Counter()
            for ci in gi.compute_instances:
                cwhere = f"{gwhere} CI {ci.id} ({ci.profile_id} at {ci.start}:{ci.size})"
                cp = compute.get(ci.profile_id)
                assert cp is not None, f"{cwhere}: unknown CI profile"
                assert Placement(ci.start, ci.size) in cp.placements, cwhere
                assert ci.start + ci.size <= profile.slice_count, f"{cwhere}: outside the GI"
                ci_mask = _mask(ci.start, ci.size)
                assert not ci_mask & ci_used, f"{cwhere} overlaps another compute instance"
                ci_used |= ci_mask
                per_ci[cp.id] += 1
                assert per_ci[cp.id] <= cp.instance_count, f"{cwhere}: over the CI cap"
        all_me = [gi for gi in gpu.gpu_instances if profiles[gi.profile_id].all_me]
        if all_me:
            assert len(all_me) == 1, f"{where}: two +me.all instances"
            others = [gi for gi in gpu.gpu_instances if gi is not all_me[0]]
            assert all(profiles[gi.profile_id].no_me for gi in others), (
                f"{where}: a +me.all instance beside one with media engines"
            )


class ItemResult(Protocol):
    """One item's outcome in a bulk operation's results."""

    @property
    def status(self) -> int: ...

    @property
    def error(self) -> NvmlError | None: ...

    @property
    def ok(self) -> bool: ...


def check_statuses(results: Sequence[ItemResult], stop_on_error: bool) -> None:
    """Statuses are known codes; errors match them; stop_on_error skips everything after."""
    failed = False
    for result in results:
        status = result.status
        assert status in KNOWN_STATUSES, f"unknown status {status}"
        assert status != STATUS_READ_ONLY
        assert (status == 0) == result.ok
        assert (result.error is not None) == (status > 0), (status, result.error)
        if result.error is not None:
            assert result.error.code == status
        skipped = status == STATUS_NOT_ATTEMPTED
        assert skipped == (failed and stop_on_error), (status, failed, stop_on_error)
        failed = failed or status != 0


def _layout(gpus: Sequence[GpuState]) -> tuple[object, ...]:
    """What a failed batch must not change: modes and every instance with its placement."""
    return tuple(
        (
            g.mig_mode,
            g.pending_mig_mode,
            tuple(
                (
                    gi.id,
                    gi.profile_id,
                    gi.start,
                    gi.size,
                    tuple((ci.id, ci.profile_id, ci.start, ci.size) for ci in gi.compute_instances),
                )
                for gi in g.gpu_instances
            ),
        )
        for g in gpus
    )


# ---------------------------------------------------------------------- the fuzzer


def by_index(gpus: Sequence[GpuState]) -> tuple[GpuState, ...]:
    """The snapshot in NVML index order (snapshots list GPUs in PCI order), so that position
    ``i`` is the GPU that requests name with ``gpu=i``."""
    return tuple(sorted(gpus, key=lambda g: g.index))


class Fuzzer:
    """Random bulk operations on one open simulated node, checked after every step."""

    def __init__(self, node: Node, state_file: str) -> None:
        self.node = node
        self.state_file = state_file
        self.gpus = by_index(node.snapshot())
        self.busy: set[tuple[int, int, int | None]] = set()
        self.log: list[str] = []
        check_snapshot(self.gpus)

    # -- choosing arguments: mostly plausible values, sometimes anything -------------------

    def gpu_index(self, ch: Chooser) -> int:
        if ch.integer(0, 19) == 19:
            return ch.pick([len(self.gpus), 63, 64, 2**31, U32])
        return ch.integer(0, len(self.gpus) - 1)

    def gi_id(self, ch: Chooser, gpu: int) -> int:
        existing = [gi.id for gi in self.gpus[gpu].gpu_instances] if gpu < len(self.gpus) else []
        if existing and ch.integer(0, 7):
            return ch.pick(existing)
        return ch.pick([0, 1, 2, 7, 8, 31, 32, 1000, U32])

    def placement(self, ch: Chooser, valid: Sequence[Placement]) -> Placement:
        if valid and ch.integer(0, 5):
            return ch.pick(valid)
        start = ch.pick([0, 1, 2, 3, 4, 6, 7, 8, 16, 2**31 - 1, 2**31, U32 - 1, U32])
        size = ch.pick([1, 2, 3, 4, 7, 8, 9, 2**31, U32])
        return Placement(start, size)

    # -- operations -------------------------------------------------------------------------

    def create_gpu_instances(self, ch: Chooser) -> None:
        requests = []
        for _ in range(ch.integer(1, 4)):
            gpu = self.gpu_index(ch)
            profiles = self.gpus[gpu].profiles if gpu < len(self.gpus) else ()
            if profiles and ch.integer(0, 7):
                profile = ch.pick(profiles)
                profile_id, valid = profile.id, profile.placements
            else:
                profile_id, valid = ch.pick([0, 5, 9, 14, 19, 31, 32, 48, 100, U32]), ()
            requests.append(GpuInstanceRequest(gpu, profile_id, self.placement(ch, valid)))
        stop = ch.integer(0, 3) == 3
        self.log.append(f"create_gpu_instances({requests}, stop_on_error={stop})")
        results = self.node.create_gpu_instances(requests, stop_on_error=stop)
        check_statuses(results, stop)
        after = self.refresh(any(r.ok for r in results))
        for r in results:
            if r.ok:
                assert r.gpu_instance is not None and r.placement == r.request.placement
                gi = {g.id: g for g in after[r.request.gpu].gpu_instances}.get(r.gpu_instance)
                assert gi is not None, f"created GI {r.gpu_instance} is missing"
                assert (gi.profile_id, gi.placement) == (r.request.profile_id, r.placement)

    def create_compute_instances(self, ch: Chooser) -> None:
        requests = []
        for _ in range(ch.integer(1, 4)):
            gpu = self.gpu_index(ch)
            gi_id = self.gi_id(ch, gpu)
            gis = {gi.id: gi for gi in self.gpus[gpu].gpu_instances} if gpu < len(self.gpus) else {}
            profile_id: int = ch.pick([0, 1, 2, 3, 4, 7, 8, 9, U32])
            valid: Sequence[Placement] = ()
            if gi_id in gis and ch.integer(0, 7):
                gi_profile = self.gpus[gpu].profile(gis[gi_id].profile_id)
                if gi_profile.compute_profiles:
                    cp = ch.pick(gi_profile.compute_profiles)
                    profile_id, valid = cp.id, cp.placements
            placement = None if ch.integer(0, 2) == 0 else self.placement(ch, valid)
            requests.append(ComputeInstanceRequest(gpu, gi_id, profile_id, placement))
        stop = ch.integer(0, 3) == 3
        self.log.append(f"create_compute_instances({requests}, stop_on_error={stop})")
        results = self.node.create_compute_instances(requests, stop_on_error=stop)
        check_statuses(results, stop)
        after = self.refresh(any(r.ok for r in results))
        for r in results:
            if r.ok:
                gi = {g.id: g for g in after[r.request.gpu].gpu_instances}[r.request.gpu_instance]
                assert r.compute_instance is not None
                ci = {c.id: c for c in gi.compute_instances}.get(r.compute_instance)
                assert ci is not None, f"created CI {r.compute_instance} is missing"
                assert ci.profile_id == r.request.profile_id
                if r.request.placement is not None:
                    assert ci.placement == r.request.placement

    def destroy_compute_instances(self, ch: Chooser) -> None:
        refs = []
        for _ in range(ch.integer(1, 4)):
            gpu = self.gpu_index(ch)
            gi_id = self.gi_id(ch, gpu)
            gis = {gi.id: gi for gi in self.gpus[gpu].gpu_instances} if gpu < len(self.gpus) else {}
            cis = [ci.id for ci in gis[gi_id].compute_instances] if gi_id in gis else []
            ci_id = ch.pick(cis) if cis and ch.integer(0, 7) else ch.pick([0, 1, 5, 8, U32])
            refs.append(ComputeInstanceRef(gpu, gi_id, ci_id))
        stop = ch.integer(0, 3) == 3
        self.log.append(f"destroy_compute_instances({refs}, stop_on_error={stop})")
        results = self.node.destroy_compute_instances(refs, stop_on_error=stop)
        check_statuses(results, stop)
        after = self.refresh(any(r.ok for r in results))
        for r in results:
            ref = r.request
            assert isinstance(ref, ComputeInstanceRef)
            if r.ok:
                assert (ref.gpu, ref.gpu_instance, ref.compute_instance) not in self.busy
                gis = {g.id: g for g in after[ref.gpu].gpu_instances}
                if ref.gpu_instance in gis:
                    ids = [c.id for c in gis[ref.gpu_instance].compute_instances]
                    assert ref.compute_instance not in ids, "destroyed CI still there"

    def destroy_gpu_instances(self, ch: Chooser) -> None:
        refs = []
        for _ in range(ch.integer(1, 4)):
            gpu = self.gpu_index(ch)
            refs.append(GpuInstanceRef(gpu, self.gi_id(ch, gpu)))
        stop = ch.integer(0, 3) == 3
        self.log.append(f"destroy_gpu_instances({refs}, stop_on_error={stop})")
        results = self.node.destroy_gpu_instances(refs, stop_on_error=stop)
        check_statuses(results, stop)
        after = self.refresh(any(r.ok for r in results))
        for r in results:
            ref = r.request
            if r.ok:
                assert not any(b[:2] == (ref.gpu, ref.gpu_instance) for b in self.busy)
                ids = [g.id for g in after[ref.gpu].gpu_instances]
                assert ref.gpu_instance not in ids, "destroyed GI still there"

    def set_mig_mode(self, ch: Chooser) -> None:
        requests = [
            MigModeRequest(self.gpu_index(ch), ch.pick([1, 1, 1, 0, 0, 2, U32])) for _ in range(ch.integer(1, 3))
        ]
        stop = ch.integer(0, 3) == 3
        self.log.append(f"set_mig_mode({requests}, stop_on_error={stop})")
        results = self.node.set_mig_mode(requests, stop_on_error=stop)
        check_statuses(results, stop)
        after = self.refresh(any(r.ok for r in results))
        for r in results:
            if r.ok:
                gpu = after[r.request.gpu]
                assert r.request.mode in (0, 1), f"mode {r.request.mode} accepted"
                assert r.activation_status in KNOWN_STATUSES
                if gpu.architecture >= ARCH_HOPPER and r.activation_status == 0:
                    assert r.mig_mode == r.request.mode, r
                assert r.pending_mig_mode == r.request.mode, r

    def mark_busy(self, ch: Chooser) -> None:
        gpu = ch.integer(0, len(self.gpus))
        gi_id = self.gi_id(ch, min(gpu, len(self.gpus) - 1))
        gis = {g.id: g for g in self.gpus[gpu].gpu_instances} if gpu < len(self.gpus) else {}
        ci_id: int | None = None
        if gi_id in gis and gis[gi_id].compute_instances and ch.integer(0, 1):
            ci_id = ch.pick([c.id for c in gis[gi_id].compute_instances])
        pid = ch.pick([None, 0])
        self.log.append(f"mark_busy({gpu}, {gi_id}, {ci_id}, pid={pid})")
        try:
            simulator.mark_busy(self.state_file, gpu, gi_id, ci_id, pid)
        except simulator.SimulatorError:
            assert gpu >= len(self.gpus) or gi_id not in gis, self.log[-1]
            return
        assert gpu < len(self.gpus) and gi_id in gis, f"{self.log[-1]} marked a missing instance"
        key = (gpu, gi_id, ci_id)
        if pid == 0:
            self.busy.discard(key)
        else:
            self.busy.add(key)
        self.refresh(True)

    def reset(self, ch: Chooser) -> None:
        gpus: list[int] | None = None
        if ch.integer(0, 2):
            gpus = sorted({ch.integer(0, len(self.gpus)) for _ in range(ch.integer(1, 2))})
        self.log.append(f"reset_gpus({gpus})")
        try:
            reset = simulator.reset_gpus(self.state_file, gpus)
        except simulator.SimulatorError:
            targets = range(len(self.gpus)) if gpus is None else gpus
            assert any(i >= len(self.gpus) for i in targets) or any(b[0] in targets for b in self.busy)
            return
        after = self.refresh(True)
        for index in reset:
            gpu = after[index]
            assert not gpu.gpu_instances, f"GPU {index} kept instances over a reset"
            assert gpu.mig_mode == gpu.pending_mig_mode
        self.busy = {b for b in self.busy if b[0] not in reset}

    OPERATIONS = (
        "create_gpu_instances",
        "create_gpu_instances",
        "create_compute_instances",
        "create_compute_instances",
        "destroy_compute_instances",
        "destroy_gpu_instances",
        "set_mig_mode",
        "mark_busy",
        "reset",
    )

    def enable_all(self) -> None:
        """Enable MIG on every capable GPU and reset, so that instance operations can work."""
        capable = [g.index for g in self.gpus if g.mig_capable]
        results = self.node.set_mig_mode([MigModeRequest(i, 1) for i in capable])
        assert all(r.ok for r in results), results
        simulator.reset_gpus(self.state_file, capable)
        self.refresh(True)
        assert all(self.gpus[i].mig_enabled for i in capable)

    def step(self, ch: Chooser) -> None:
        getattr(self, ch.pick(self.OPERATIONS))(ch)

    # -- checking -----------------------------------------------------------------------------

    def refresh(self, changed: bool) -> tuple[GpuState, ...]:
        """Snapshot, check it, and when nothing succeeded check that nothing changed."""
        before = self.gpus
        self.gpus = by_index(self.node.snapshot())
        check_snapshot(self.gpus)
        if not changed:
            assert _layout(self.gpus) == _layout(before), "a failed batch changed the node"
        return self.gpus


def random_spec(ch: Chooser) -> str:
    """A small node of 1-3 GPUs drawn from the fuzzed models."""
    return ",".join(ch.pick(SIM_MODELS) for _ in range(ch.integer(1, 3)))


def fuzz_main(seed: int, sequences: int, steps: int, workdir: str) -> None:
    """Run ``sequences`` random operation sequences of ``steps`` steps from ``seed``."""
    rng = random.Random(seed)
    ch = RandomChooser(rng)
    for number in range(sequences):
        spec = random_spec(ch)
        state = os.path.join(workdir, f"fuzz-{seed}-{number}.state")
        simulator.write_state(state, spec)
        print(f"seed {seed} sequence {number}: {spec}", file=sys.stderr, flush=True)
        with open_node(sim_state=state) as node:
            fuzzer = Fuzzer(node, state)
            if ch.integer(0, 3):
                fuzzer.enable_all()
            for _ in range(steps):
                try:
                    fuzzer.step(ch)
                except AssertionError:
                    print("\n".join(fuzzer.log[-8:]), file=sys.stderr)
                    raise
        for suffix in ("", ".lock"):
            os.unlink(state + suffix)


# ---------------------------------------------------------------------- tests


def test_random_operation_sequences_never_crash_the_process(tmp_path: object) -> None:
    """Seeded random sequences run in a subprocess exit cleanly (a crash names its seed)."""
    sequences = int(os.environ.get("MIGKIT_FUZZ_SEQUENCES", "8"))
    seeds = [int(s) for s in os.environ.get("MIGKIT_FUZZ_SEEDS", "1,2,3").split(",")]
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/simulator']; import test_fuzz_simulator as t\n"
        "for seed in sys.argv[4].split(','):\n"
        "    t.fuzz_main(int(seed), int(sys.argv[2]), int(sys.argv[3]), sys.argv[5])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIGKIT_", "MIG_PARTED_"))}
    proc = subprocess.run(
        [sys.executable, "-c", code, TESTS_DIR, str(sequences), "40", ",".join(map(str, seeds)), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    tail = "\n".join(proc.stderr.splitlines()[-30:])
    assert proc.returncode == 0, f"fuzzer exited {proc.returncode}:\n{tail}"


def test_a_reset_is_visible_to_the_next_snapshot() -> None:
    """After a simulated reset, the very next snapshot shows the new MIG mode."""
    with tempfile.TemporaryDirectory() as tmp:
        state = os.path.join(tmp, "node.state")
        simulator.write_state(state, "1xa30-24gb")
        with open_node(sim_state=state) as node:
            stale = 0
            for i in range(40):
                want = (i + 1) % 2
                (result,) = node.set_mig_mode([MigModeRequest(0, want)])
                assert result.ok and result.pending_mig_mode == want
                simulator.reset_gpus(state, [0])
                try:
                    stale += node.snapshot()[0].mig_mode != want
                except Exception:  # a snapshot torn between the old and the new state
                    stale += 1
            assert stale == 0, f"{stale} of 40 snapshots right after a reset were stale"


class SimulatorMachine(RuleBasedStateMachine):
    """Random operations on a small simulated node, with the snapshot checked after each."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="migkit-fuzz-")
        self.fuzzer: Fuzzer | None = None

    @initialize(data=st.data())
    def open(self, data: st.DataObject) -> None:
        state = os.path.join(self.tmp, "node.state")
        simulator.write_state(state, random_spec(DataChooser(data)))
        node = open_node(sim_state=state)
        self.fuzzer = Fuzzer(node, state)
        if data.draw(st.integers(0, 3)) < 3:
            self.fuzzer.enable_all()

    def _run(self, operation: str, data: st.DataObject) -> None:
        assert self.fuzzer is not None
        getattr(self.fuzzer, operation)(DataChooser(data))

    @rule(data=st.data())
    def create_gpu_instances(self, data: st.DataObject) -> None:
        self._run("create_gpu_instances", data)

    @rule(data=st.data())
    def create_compute_instances(self, data: st.DataObject) -> None:
        self._run("create_compute_instances", data)

    @rule(data=st.data())
    def destroy_compute_instances(self, data: st.DataObject) -> None:
        self._run("destroy_compute_instances", data)

    @rule(data=st.data())
    def destroy_gpu_instances(self, data: st.DataObject) -> None:
        self._run("destroy_gpu_instances", data)

    @rule(data=st.data())
    def set_mig_mode(self, data: st.DataObject) -> None:
        self._run("set_mig_mode", data)

    @rule(data=st.data())
    def mark_busy(self, data: st.DataObject) -> None:
        self._run("mark_busy", data)

    @rule(data=st.data())
    def reset(self, data: st.DataObject) -> None:
        self._run("reset", data)

    @invariant()
    def snapshot_is_consistent(self) -> None:
        if self.fuzzer is not None:
            check_snapshot(self.fuzzer.gpus)

    def teardown(self) -> None:
        if self.fuzzer is not None:
            self.fuzzer.node.close()
        for name in os.listdir(self.tmp):
            os.unlink(os.path.join(self.tmp, name))
        os.rmdir(self.tmp)


SimulatorMachine.TestCase.settings = settings(
    max_examples=min(settings().max_examples, 40),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_random_operations_keep_the_simulated_node_consistent = SimulatorMachine.TestCase
test_random_operations_keep_the_simulated_node_consistent.__doc__ = (
    "Random bulk operations in-process keep every snapshot consistent with the MIG rules."
)
