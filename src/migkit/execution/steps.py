"""The steps of one apply or restore on each GPU: the run's context, mode changes, instance
changes in parallel threads, rollback of a GPU changed part-way, and verification.

:mod:`migkit.execution.orchestrate` decides which steps run, in what order, under the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from migkit.errors import MigkitError, NvmlError, ResetFailed
from migkit.execution.actions import (
    CreatedKey,
    GpuTarget,
    clear_actions,
    gi_signature,
    matches,
)
from migkit.execution.host import reset_gpus
from migkit.execution.interrupts import StopFlag
from migkit.execution.report import (
    ApplyReport,
    GpuOutcome,
    Progress,
    describe_gpu,
    gpu_list,
)
from migkit.execution.transaction import StepFailed, execute_gpu, restore_gpu
from migkit.models import MIG_DISABLED, MIG_ENABLED, GpuState, Outcome
from migkit.nvml.node import MigModeRequest, NodeLike
from migkit.planning.plan import GpuPlan

if TYPE_CHECKING:
    pass

UNCHANGED = Outcome.UNCHANGED
APPLIED = Outcome.APPLIED
RESTORED = Outcome.RESTORED
FAILED = Outcome.FAILED
NOT_ATTEMPTED = Outcome.NOT_ATTEMPTED
PENDING = Outcome.PENDING


def _step(run: Run, outcome: GpuOutcome, text: str) -> None:
    if run.progress is not None:
        run.progress.step(outcome.index, text)


def headline(
    verb: str, what: str, targets: Sequence[GpuTarget], *, mode_only: bool
) -> tuple[str, list[int]]:
    """``Applying config all-balanced to 8 GPUs: 6 change, 2 already match`` and the GPUs
    that change."""
    covered = [t for t in targets if t.desired_mode is not None]
    changing = [t.gpu.index for t in covered if not matches(t, mode_only=mode_only)[0]]
    parts = [f"{len(changing)} change", f"{len(covered) - len(changing)} already match"]
    left = len(targets) - len(covered)
    if left:
        parts.append(f"{left} left alone")
    scope = "the MIG mode of " if mode_only else ""
    count = f"{len(targets)} GPU" + ("" if len(targets) == 1 else "s")
    return f"{verb} {scope}{what} to {count}: " + ", ".join(parts), changing


@attrs.define
class Run:
    """One apply or restore in progress: the node, the stop flag, and per GPU what it was
    before this run (what rollback brings back) and whether its mode was changed."""

    node: NodeLike
    stop: StopFlag
    report: ApplyReport
    progress: Progress | None
    parallel: bool
    skip_reset: bool
    before: dict[int, GpuState] = attrs.Factory(dict)
    mode_changed: set[int] = attrs.Factory(set)
    # per GPU, the instances this run may have created (rollback removes only those)
    created: dict[int, frozenset[CreatedKey]] = attrs.Factory(dict)

    def touch(self) -> None:
        self.report.touched = True

    def roll_back(self, gpu: GpuState, why: str, error: str | None = None) -> GpuOutcome:
        """Bring the GPU back to its state before this run (mode included), from a fresh read."""
        before = self.before.get(gpu.index, gpu)
        result = restore_gpu(
            self.node,
            before,
            allow_reset=not self.skip_reset,
            created=self.created.get(gpu.index, frozenset()),
        )
        self.mode_changed.discard(gpu.index)
        state = describe_gpu(result.state) if result.state is not None else ""
        if result.ok:
            return GpuOutcome(
                gpu.index, gpu.name, RESTORED, f"{why}; previous layout restored", error, state
            )
        now = result.state
        if now is not None and (now.mig_mode, now.pending_mig_mode) != (
            before.mig_mode,
            before.pending_mig_mode,
        ):
            self.mode_changed.add(gpu.index)
        problems = "; ".join(result.problems) or "it is not at its previous layout"
        return GpuOutcome(
            gpu.index,
            gpu.name,
            FAILED,
            f"{why}; could not restore the previous layout: {problems}",
            error,
            state,
            mode_changed=gpu.index in self.mode_changed,
        )


def fresh_snapshot(node: NodeLike, attempts: int = 3) -> tuple[GpuState, ...]:
    """A snapshot taken after changes: a failed or incomplete read is retried (the GPUs were
    just changed, and one failed read must not turn a done change into a lost one); the last
    error is raised, or the last incomplete snapshot returned, when every try fails."""
    error: MigkitError | None = None
    gpus: tuple[GpuState, ...] | None = None
    for _ in range(attempts):
        try:
            gpus = node.snapshot()
        except MigkitError as err:
            error = err
            continue
        if not any(g.unknown for g in gpus):
            return gpus
    if gpus is not None:
        return gpus
    assert error is not None
    raise error


class Unreadable(Exception):
    """The node could not be read before any change (the NVML error is the cause)."""


def read_before_change(node: NodeLike) -> tuple[GpuState, ...]:
    try:
        return node.snapshot()
    except NvmlError as err:
        raise Unreadable(str(err)) from err


def refused_report(report: ApplyReport, why: str) -> ApplyReport:
    report.refused = True
    report.error = f"refused: reading the node failed ({why}); nothing was changed"
    return report


def replan_after_change(
    node: NodeLike,
    replan: Callable[[Sequence[GpuState]], Sequence[GpuTarget]],
    attempts: int = 3,
) -> Sequence[GpuTarget]:
    """Read and plan the node again after a change. The config was valid on the read before
    the change, so an error now is most likely a bad read: it is retried from a fresh read,
    and the last error raised when every try fails."""
    error: MigkitError | None = None
    for _ in range(attempts):
        try:
            return replan(fresh_snapshot(node))
        except MigkitError as err:
            error = err
    assert error is not None
    raise error


def _mode_word(mode: int | None) -> str:
    return "enabled" if mode else "disabled"


def _change_mode(run: Run, t: GpuTarget) -> GpuOutcome:
    """Clear (when disabling) and set the MIG mode of one GPU; PENDING when a reset is due.

    A failure, or a stop request between the two steps, brings the GPU back to its state
    before the run: cleared instances are re-created, a changed mode is set back."""
    node, gpu = run.node, t.gpu
    if run.stop():
        return GpuOutcome(gpu.index, gpu.name, NOT_ATTEMPTED, "interrupted before it started")
    if t.desired_mode == MIG_DISABLED and gpu.mig_enabled and gpu.gpu_instances:
        run.touch()
        try:
            execute_gpu(node, gpu, clear_actions(gpu), stop=run.stop)
        except StepFailed as failure:
            return run.roll_back(gpu, f"failed {failure.what}", _error_text(failure))
        if run.stop():
            return run.roll_back(gpu, "interrupted before setting the MIG mode")
    now: int | None
    if gpu.pending_mig_mode == t.desired_mode:
        now = gpu.mig_mode
    else:
        run.touch()
        (result,) = node.set_mig_mode([MigModeRequest(gpu.index, int(t.desired_mode or 0))])
        if not result.ok:
            return run.roll_back(gpu, "failed setting the MIG mode", str(result.error))
        run.mode_changed.add(gpu.index)
        now = result.mig_mode
    word = _mode_word(t.desired_mode)
    if now != t.desired_mode:
        return GpuOutcome(
            gpu.index, gpu.name, PENDING, f"MIG mode {word} after a GPU reset", mode_changed=True
        )
    return GpuOutcome(gpu.index, gpu.name, APPLIED, f"MIG mode {word}", mode_changed=True)


def _error_text(failure: StepFailed) -> str | None:
    return None if failure.error is None else str(failure.error)


def mode_phase(run: Run, targets: Sequence[GpuTarget]) -> dict[int, GpuOutcome]:
    """Change the MIG mode of exactly the GPUs whose mode differs, in parallel; then reset the
    ones left pending (unless ``skip_reset``). Returns the outcomes of the GPUs that are
    done with (failed, restored, not attempted); the others go on to the config phase."""
    changing = [t for t in targets if not t.mode_matches]
    outcomes = run_parallel(lambda t: _change_mode(run, t), changing, run, mode_phase=True)
    finished = {o.index: o for o in outcomes if o.status not in (APPLIED, PENDING)}
    pending = [t.gpu for t, o in zip(changing, outcomes, strict=True) if o.status == PENDING]
    if pending and not run.skip_reset and not run.stop():
        if run.progress is not None:
            run.progress.note("resetting " + gpu_list(g.index for g in pending))
        run.touch()
        try:
            reset_gpus(run.node, pending)
        except ResetFailed as err:
            for gpu in pending:
                finished[gpu.index] = run.roll_back(gpu, "the GPU reset failed", str(err))
        else:
            run.mode_changed.update(g.index for g in pending)
    return finished


def apply_gpu(run: Run, target: GpuTarget) -> GpuOutcome:
    gpu = target.gpu
    if run.stop():
        if gpu.index in run.mode_changed:
            return run.roll_back(gpu, "interrupted after its MIG mode was changed")
        return GpuOutcome(gpu.index, gpu.name, NOT_ATTEMPTED, "interrupted before it started")
    actions = target.actions()
    if actions.empty:
        return GpuOutcome(gpu.index, gpu.name, UNCHANGED)
    kept = len(gpu.gpu_instances) - len(actions.destroy_gis) if gpu.mig_enabled else 0
    detail = (
        f"GPU instances: {kept} kept, {len(actions.destroy_gis)} destroyed, {len(actions.create_gis)} created; "
        f"compute instances: {len(actions.destroy_cis)} destroyed, {len(actions.create_cis)} created"
    )
    run.touch()
    try:
        execute_gpu(run.node, gpu, actions, stop=run.stop)
    except StepFailed as failure:
        run.created[gpu.index] = frozenset(failure.journal.maybe_created)
        why = failure.what if failure.interrupted else f"failed {failure.what}"
        return run.roll_back(gpu, why, _error_text(failure))
    except MigkitError as err:
        return run.roll_back(gpu, "could not change the GPU", str(err))
    return GpuOutcome(gpu.index, gpu.name, APPLIED, detail)


def run_parallel(
    func: Callable[[GpuTarget], GpuOutcome],
    targets: Sequence[GpuTarget],
    run: Run,
    *,
    mode_phase: bool = False,
) -> list[GpuOutcome]:
    """One worker thread per GPU; returns when every worker has finished (never earlier:
    the node lock and NVML must outlive every change)."""
    outcomes: dict[int, GpuOutcome] = {}
    lock = threading.Lock()

    def work(t: GpuTarget) -> None:
        try:
            outcome = func(t)
        except Exception as err:  # a thread must always report its GPU, whatever went wrong
            outcome = GpuOutcome(t.gpu.index, t.gpu.name, FAILED, "could not change the GPU", str(err))
        with lock:
            outcomes[t.gpu.index] = outcome
            if mode_phase and outcome.status in (APPLIED, PENDING):
                _step(run, outcome, outcome.detail)
            elif outcome.status != UNCHANGED:
                # The error itself comes once at the end, merged with the other GPUs'.
                _step(run, outcome, outcome.text(error=False))

    if run.parallel and len(targets) > 1:
        threads = [
            threading.Thread(target=work, args=(t,), name=f"migkit-gpu{t.gpu.index}")
            for t in targets
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    else:
        for t in targets:
            work(t)
    return [outcomes[t.gpu.index] for t in targets]


def _planned_signature(plan: GpuPlan) -> list[tuple[Any, ...]] | None:
    if plan.layout is None:
        return None
    return sorted(
        gi_signature(gi.profile_id, gi.start, gi.size, gi.compute_instances)
        for gi in plan.layout.instances
    )


def _gpu_signature(gpu: GpuState) -> list[tuple[Any, ...]]:
    return sorted(
        gi_signature(gi.profile_id, gi.start, gi.size, gi.compute_instances)
        for gi in gpu.gpu_instances
    )


def verify(
    targets: Sequence[GpuTarget],
    after: Sequence[GpuState],
    outcomes: list[GpuOutcome],
    *,
    mode_only: bool,
) -> None:
    """Re-read state must equal the plan; a mismatch turns the GPU's outcome into a failure."""
    by_index = {g.index: g for g in after}
    for outcome, target in zip(outcomes, targets, strict=True):
        gpu = by_index.get(target.gpu.index)
        if gpu is None:
            outcome.status, outcome.error = FAILED, "the GPU is gone after the change"
            continue
        outcome.state = describe_gpu(gpu)
        if target.desired_mode is None or outcome.status in (
            FAILED,
            RESTORED,
            NOT_ATTEMPTED,
            PENDING,
        ):
            continue
        ok, why = matches(attrs.evolve(target, gpu=gpu), mode_only=mode_only, check_plan=False)
        if (
            ok
            and not mode_only
            and target.plan is not None
            and target.desired_mode == MIG_ENABLED
            and outcome.status == APPLIED
            and _gpu_signature(gpu) != _planned_signature(target.plan)
        ):
            ok, why = False, "instances are not at the planned placements"
        if not ok:
            outcome.status, outcome.error = FAILED, f"verification failed: {why}"


def finish_mode_changed(run: Run, targets: Sequence[GpuTarget], outcomes: list[GpuOutcome]) -> None:
    """A GPU whose mode this run changed counts as changed: an UNCHANGED config phase on it
    is reported APPLIED with the mode change, and an APPLIED one names the mode too."""
    for outcome, t in zip(outcomes, targets, strict=True):
        if t.gpu.index not in run.mode_changed or outcome.status not in (UNCHANGED, APPLIED):
            continue
        mode = f"MIG mode {_mode_word(t.gpu.mig_mode)}"
        outcome.mode_changed = True
        outcome.detail = mode if outcome.status == UNCHANGED else f"{mode}; {outcome.detail}"
        outcome.status = APPLIED
