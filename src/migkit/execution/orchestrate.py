"""Make a node match a configuration or a checkpoint: validate, plan, act, verify.

The pipeline: snapshot -> effective spec per GPU -> validate and plan every covered GPU
(unknown profile, infeasible layout: an error before any NVML mutation) -> hooks in
nvidia-mig-parted's order (apply-start, pre-apply-mode, pre-apply-config, apply-exit) -> mode
changes (only GPUs whose mode differs; resets only of those) -> per-GPU changes in parallel
threads (destroy CIs, destroy GIs, create GIs at their planned placements, create CIs) -> a
fresh snapshot to verify.

A failure on a GPU restores that GPU's previous geometry at its previous placements where
possible; the report says, per GPU, what state it ended in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from migkit.config import MigConfigFile
from migkit.errors import ApplyError, ConfigError, MigkitError, NvmlError, ResetFailed
from migkit.execution.actions import (
    CreatedKey,
    GpuTarget,
    clear_actions,
    gi_signature,
    matches,
    plan_targets,
)
from migkit.execution.host import lock_path, node_lock, reset_blockers, reset_gpus
from migkit.execution.interrupts import StopFlag, deferred_interrupts
from migkit.execution.report import (
    ApplyReport,
    AssertResult,
    GpuOutcome,
    Progress,
    describe_gpu,
    gpu_list,
)
from migkit.execution.trace import log_decisions, phase, traced
from migkit.execution.transaction import StepFailed, execute_gpu, restore_gpu
from migkit.models import MIG_DISABLED, MIG_ENABLED, GpuState, Outcome
from migkit.nvml.node import MigModeRequest, NodeLike
from migkit.planning.plan import GpuPlan, plan_node

if TYPE_CHECKING:
    from migkit.checkpoint import Checkpoint
    from migkit.hooks import HookRunner

__all__ = ["apply", "assert_config", "restore", "verify"]

UNCHANGED = Outcome.UNCHANGED
APPLIED = Outcome.APPLIED
RESTORED = Outcome.RESTORED
FAILED = Outcome.FAILED
NOT_ATTEMPTED = Outcome.NOT_ATTEMPTED
PENDING = Outcome.PENDING


def _step(run: _Run, outcome: GpuOutcome, text: str) -> None:
    if run.progress is not None:
        run.progress.step(outcome.index, text)


def _headline(
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
class _Run:
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


def _fresh_snapshot(node: NodeLike, attempts: int = 3) -> tuple[GpuState, ...]:
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


class _Unreadable(Exception):
    """The node could not be read before any change (the NVML error is the cause)."""


def _read_before_change(node: NodeLike) -> tuple[GpuState, ...]:
    try:
        return node.snapshot()
    except NvmlError as err:
        raise _Unreadable(str(err)) from err


def _refused_report(report: ApplyReport, why: str) -> ApplyReport:
    report.refused = True
    report.error = f"refused: reading the node failed ({why}); nothing was changed"
    return report


def _replan_after_change(
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
            return replan(_fresh_snapshot(node))
        except MigkitError as err:
            error = err
    assert error is not None
    raise error


def _mode_word(mode: int | None) -> str:
    return "enabled" if mode else "disabled"


def _change_mode(run: _Run, t: GpuTarget) -> GpuOutcome:
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


def _mode_phase(run: _Run, targets: Sequence[GpuTarget]) -> dict[int, GpuOutcome]:
    """Change the MIG mode of exactly the GPUs whose mode differs, in parallel; then reset the
    ones left pending (unless ``skip_reset``). Returns the outcomes of the GPUs that are
    done with (failed, restored, not attempted); the others go on to the config phase."""
    changing = [t for t in targets if not t.mode_matches]
    outcomes = _run_parallel(lambda t: _change_mode(run, t), changing, run, mode_phase=True)
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


def _apply_gpu(run: _Run, target: GpuTarget) -> GpuOutcome:
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


def _run_parallel(
    func: Callable[[GpuTarget], GpuOutcome],
    targets: Sequence[GpuTarget],
    run: _Run,
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


def _refuse_if_read_only(targets: Sequence[GpuTarget]) -> None:
    """Under MIGKIT_READ_ONLY, a change is refused before anything runs (hooks included)."""
    from migkit.nvml._binding import read_only

    changing = [t.gpu.index for t in targets if not matches(t)[0]]
    if changing and read_only():
        gpus = ", ".join(str(i) for i in changing)
        raise ApplyError(f"MIGKIT_READ_ONLY is set and GPU {gpus} would have to change; nothing was changed")


def _unreadable(targets: Sequence[GpuTarget]) -> list[GpuTarget]:
    """GPUs the run would be about (covered or skipped) whose snapshot has a failed read."""
    return [t for t in targets if t.gpu.unknown and t.coverage != "not covered"]


def _refuse_unreadable(
    report: ApplyReport, targets: Sequence[GpuTarget], unreadable: Sequence[GpuTarget]
) -> None:
    """Refuse the whole run before any change: a GPU whose state is unknown is never changed,
    and validation before the first change covers every GPU."""
    bad = {t.gpu.index for t in unreadable}
    names = ", ".join(f"GPU {i}" for i in sorted(bad))
    report.refused = True
    report.error = (
        f"refused: a read failed on {names}, so its state is unknown; nothing was changed"
    )
    for t in targets:
        gpu = t.gpu
        if gpu.index in bad:
            report.outcomes.append(
                GpuOutcome(
                    gpu.index,
                    gpu.name,
                    NOT_ATTEMPTED,
                    "refused: its state is unknown",
                    "; ".join(gpu.unknown),
                )
            )
        else:
            report.outcomes.append(
                GpuOutcome(gpu.index, gpu.name, NOT_ATTEMPTED, f"not started ({names} unreadable)")
            )


def _runner(
    hooks_file: str | None, flag_env: dict[str, str], options_debug: bool, inherit: bool
) -> HookRunner:
    from migkit.hooks import HookRunner, Hooks, load_hooks

    hooks = load_hooks(hooks_file) if hooks_file else Hooks()
    return HookRunner(hooks, flag_env, debug=options_debug, inherit_env=inherit)


def _finish_mode_changed(run: _Run, targets: Sequence[GpuTarget], outcomes: list[GpuOutcome]) -> None:
    """A GPU whose mode this run changed counts as changed: an UNCHANGED config phase on it
    is reported APPLIED with the mode change, and an APPLIED one names the mode too."""
    for outcome, t in zip(outcomes, targets, strict=True):
        if t.gpu.index not in run.mode_changed or outcome.status not in (UNCHANGED, APPLIED):
            continue
        mode = f"MIG mode {_mode_word(t.gpu.mig_mode)}"
        outcome.mode_changed = True
        outcome.detail = mode if outcome.status == UNCHANGED else f"{mode}; {outcome.detail}"
        outcome.status = APPLIED


def _converge(
    run: _Run,
    targets: Sequence[GpuTarget],
    replan: Callable[[Sequence[GpuState]], Sequence[GpuTarget]],
    *,
    mode_only: bool,
    runner: HookRunner,
) -> None:
    """Mode phase, then config phase, then verification (hooks as upstream orders them)."""
    node, report = run.node, run.report
    finished: dict[int, GpuOutcome] = {}
    if not all(t.mode_matches for t in targets):
        runner.run("pre-apply-mode")
        with phase("mode change"):
            finished = _mode_phase(run, targets)
        try:
            targets = _replan_after_change(node, replan)
        except MigkitError as err:
            # Nothing can be planned from here: bring back every GPU whose mode changed.
            why = "the node could not be read or planned again after the mode change"
            for t in targets:
                if t.gpu.index in finished:
                    continue
                finished[t.gpu.index] = (
                    run.roll_back(t.gpu, why, str(err))
                    if t.gpu.index in run.mode_changed
                    else GpuOutcome(t.gpu.index, t.gpu.name, NOT_ATTEMPTED, why)
                )
            report.outcomes.extend(finished[t.gpu.index] for t in targets)
            report.error = f"{why}: {err}"
            return
        unreadable = [t for t in _unreadable(targets) if t.gpu.index not in finished]
        for t in unreadable:
            finished[t.gpu.index] = (
                run.roll_back(t.gpu, "a read failed after its MIG mode was changed", "; ".join(t.gpu.unknown))
                if t.gpu.index in run.mode_changed
                else GpuOutcome(
                    t.gpu.index, t.gpu.name, NOT_ATTEMPTED, "refused: its state is unknown",
                    "; ".join(t.gpu.unknown),
                )
            )
        still = [t for t in targets if not t.mode_matches and t.gpu.index not in finished]
        if still and not run.stop():
            expected = run.skip_reset and mode_only
            for t in still:
                finished[t.gpu.index] = GpuOutcome(
                    t.gpu.index,
                    t.gpu.name,
                    PENDING if expected else FAILED,
                    "MIG mode change pending; reset the GPU or reboot"
                    + (" (--skip-reset)" if run.skip_reset else ""),
                    None if expected else "the mode change did not take effect",
                    describe_gpu(t.gpu),
                    mode_changed=t.gpu.index in run.mode_changed,
                )
    active = [t for t in targets if t.gpu.index not in finished]
    if mode_only:
        outcomes = [
            GpuOutcome(
                t.gpu.index,
                t.gpu.name,
                (UNCHANGED if t.desired_mode is not None else Outcome(t.coverage)),
            )
            for t in active
        ]
    else:
        todo = [t for t in active if t.desired_mode is not None and not matches(t)[0]]
        if todo and not run.stop():
            runner.run("pre-apply-config")
        with phase("instance changes"):
            changed = _run_parallel(lambda t: _apply_gpu(run, t), todo, run)
        results = {o.index: o for o in changed}
        outcomes = [
            results.get(t.gpu.index)
            or GpuOutcome(
                t.gpu.index, t.gpu.name, UNCHANGED if t.desired_mode is not None else Outcome(t.coverage)
            )
            for t in active
        ]
    if run.stop():
        # Interrupted after the mode phase: a GPU whose mode changed but whose config phase
        # never ran is half-done; bring it back.
        for i, (o, t) in enumerate(zip(outcomes, active, strict=True)):
            if t.gpu.index in run.mode_changed and o.status == UNCHANGED and not matches(t)[0]:
                outcomes[i] = run.roll_back(t.gpu, "interrupted after its MIG mode was changed")
    _finish_mode_changed(run, active, outcomes)
    with phase("verification"):
        try:
            after = _fresh_snapshot(node)
        except MigkitError as err:
            for o, t in zip(outcomes, active, strict=True):
                if t.desired_mode is not None and o.status in (APPLIED, UNCHANGED):
                    o.status, o.error = FAILED, f"could not read it back: {err}"
        else:
            verify(active, after, outcomes, mode_only=mode_only)
    done = {o.index: o for o in outcomes}
    done.update(finished)
    report.outcomes.extend(done[t.gpu.index] for t in targets)


def _orchestrate(
    node: NodeLike,
    targets: Sequence[GpuTarget],
    replan: Callable[[Sequence[GpuState]], Sequence[GpuTarget]],
    runner: HookRunner,
    *,
    mode_only: bool,
    skip_reset: bool,
    parallel: bool,
    report: ApplyReport,
    progress: Progress | None,
) -> ApplyReport:
    from migkit.hooks import HookError

    # Signals first, lock second: the lock is released before the handlers are restored, so
    # no signal can end the process while it holds the lock with a GPU half-changed.
    with deferred_interrupts() as stop, node_lock(
        lock_path(node), private_directory=node.state_file is None
    ):
        run = _Run(node, stop, report, progress, parallel, skip_reset)
        try:
            with phase("total, under the node lock"):
                _locked(run, replan, runner, mode_only=mode_only)
        except HookError as err:
            report.error = str(err)
        finally:
            report.interrupted = stop.signum
    return report


def _locked(
    run: _Run,
    replan: Callable[[Sequence[GpuState]], Sequence[GpuTarget]],
    runner: HookRunner,
    *,
    mode_only: bool,
) -> None:
    from migkit.hooks import HookError

    report = run.report
    # Plan again now that this apply holds the node: another one may have finished
    # between the first look and taking the lock.
    with phase("read and plan"):
        try:
            gpus = _read_before_change(run.node)
        except _Unreadable as err:
            _refused_report(report, str(err))
            return
        targets = replan(gpus)
    unreadable = _unreadable(targets)
    if unreadable:
        _refuse_unreadable(report, targets, unreadable)
        return
    log_decisions(targets, mode_only=mode_only)
    run.before = {g.index: g for g in gpus}
    if run.stop():
        return
    runner.run("apply-start")
    try:
        _converge(run, targets, replan, mode_only=mode_only, runner=runner)
    except HookError as err:
        report.error = str(err)
    except (ApplyError, NvmlError) as err:
        report.error = str(err)
    finally:
        try:
            runner.run("apply-exit")
        except HookError as err:
            if report.error is None:
                report.error = str(err)
            else:
                report.warnings.append(str(err))


def apply(
    node: NodeLike,
    config: MigConfigFile,
    name: str | None = None,
    *,
    dry_run: bool = False,
    mode_only: bool = False,
    skip_reset: bool = False,
    hooks_file: str | None = None,
    strict_coverage: bool = False,
    progress: Progress | TextIO | None = None,
    debug: bool = False,
    inherit_env: bool = False,
    parallel: bool = True,
    config_file: str | None = None,
) -> ApplyReport:
    """Make the node match config ``name`` of ``config`` (the only one when ``name`` is None).

    Raises :class:`~migkit.errors.ConfigError` / :class:`~migkit.errors.InfeasibleError`
    (nothing changed) for a config that cannot be applied here, and
    :class:`~migkit.errors.ApplyError` when another apply holds the node; failures while
    changing GPUs are in the returned report (``report.ok``, ``report.exit_code``). With
    ``dry_run`` nothing is changed and the report carries the plan. ``progress`` (a
    :class:`~migkit.execution.report.Progress`, or a stream for plain lines) receives a first
    line saying what will happen, then each GPU step as it finishes. ``config_file`` is the path hooks see as
    ``MIG_PARTED_CONFIG_FILE`` (default: the file ``config`` was loaded from).
    """
    from migkit.hooks import apply_flag_env

    shown = Progress.of(progress)
    node = traced(node)
    report = ApplyReport(streamed=shown is not None)
    if dry_run:
        gpus = node.snapshot()
    else:
        try:
            gpus = _read_before_change(node)
        except _Unreadable as err:
            return _refused_report(report, str(err))
    if dry_run:
        node_plan = plan_node(config, name, gpus, strict_coverage=strict_coverage)
        node_plan.raise_for_errors()  # an infeasible config is an error, dry run or not
        report.dry_run = True
        report.warnings.extend(node_plan.warnings)
        if not node.is_simulated and any(g.reset_required for g in node_plan.gpus):
            report.warnings.extend(f"a GPU reset is needed and may fail: {b}" for b in reset_blockers())
        report.warnings.extend(
            f"GPU {g.index}: its state is unknown, the plan for it is not to be trusted: "
            + "; ".join(g.unknown)
            for g in gpus
            if g.unknown
        )
        report.plan_text = node_plan.to_text()
        report.plan_json = node_plan.to_json()
        return report
    try:
        targets, warnings = plan_targets(config, name, gpus, strict_coverage=strict_coverage)
    except MigkitError:
        if not any(g.unknown for g in gpus):
            raise
        # Planning from facts that could not be read: name the failed reads, not what
        # followed from them.
        targets, warnings = tuple(GpuTarget(g, "covered") for g in gpus), ()
    report.warnings.extend(warnings)
    unreadable = _unreadable(targets)
    if unreadable:
        _refuse_unreadable(report, targets, unreadable)
        return report
    _refuse_if_read_only(targets)
    runner = _runner(
        hooks_file,
        apply_flag_env(config_file or config.file or "", name, hooks_file, skip_reset, mode_only),
        debug,
        inherit_env,
    )

    def replan(now: Sequence[GpuState]) -> Sequence[GpuTarget]:
        return plan_targets(config, name, now, strict_coverage=strict_coverage)[0]

    if shown is not None:
        from migkit.config import select

        chosen = name if name is not None else select(config, None).name
        shown.begin(*_headline("Applying", f"config {chosen}", targets, mode_only=mode_only))
    return _orchestrate(
        node,
        targets,
        replan,
        runner,
        mode_only=mode_only,
        skip_reset=skip_reset,
        parallel=parallel,
        report=report,
        progress=shown,
    )


def assert_config(
    node: NodeLike,
    config: MigConfigFile,
    name: str | None = None,
    *,
    mode_only: bool = False,
    strict_coverage: bool = False,
    valid_only: bool = False,
) -> AssertResult:
    """Whether the node already matches; with ``valid_only``, whether the config can be applied here."""
    gpus = traced(node).snapshot()
    try:
        targets, warnings = plan_targets(config, name, gpus, strict_coverage=strict_coverage)
    except MigkitError:
        if not any(g.unknown for g in gpus):
            raise
        unknown = tuple(
            f"GPU {g.index}: its state is unknown: {'; '.join(g.unknown)}" for g in gpus if g.unknown
        )
        return AssertResult(False, unknown, warnings, valid_only=valid_only)
    log_decisions(targets, mode_only=mode_only)
    if valid_only:
        unknown = tuple(
            f"GPU {t.gpu.index}: its state is unknown: {'; '.join(t.gpu.unknown)}"
            for t in _unreadable(targets)
        )
        if unknown:
            return AssertResult(False, unknown, warnings, valid_only=True)
        return AssertResult(True, ("configuration is valid for this node",), warnings, valid_only=True)
    lines = []
    ok = True
    for t in targets:
        if t.desired_mode is None:
            lines.append(f"GPU {t.gpu.index}: {t.coverage} (not checked)")
            continue
        good, why = matches(t, mode_only=mode_only)
        ok = ok and good
        lines.append(f"GPU {t.gpu.index}: {'matches' if good else 'does not match: ' + why}")
    for t in _unreadable(targets):
        if t.desired_mode is None:  # skipped, so not compared above, yet not known to be fine
            ok = False
            lines.append(f"GPU {t.gpu.index}: its state is unknown: {'; '.join(t.gpu.unknown)}")
    if strict_coverage and any(t.coverage == "not covered" for t in targets):
        ok = False
    return AssertResult(ok, tuple(lines), warnings)


def restore(
    node: NodeLike,
    saved: Checkpoint,
    *,
    mode_only: bool = False,
    skip_reset: bool = False,
    hooks_file: str | None = None,
    checkpoint_file: str | None = None,
    progress: Progress | TextIO | None = None,
    debug: bool = False,
    parallel: bool = True,
) -> ApplyReport:
    """Make the node match a checkpoint exactly (placements included); GPUs not in it are untouched."""
    from migkit.hooks import restore_flag_env

    shown = Progress.of(progress)
    node = traced(node)
    try:
        gpus = _read_before_change(node)
    except _Unreadable as err:
        return _refused_report(
            ApplyReport(streamed=shown is not None, restore=True), str(err)
        )

    def targets_for(now: Sequence[GpuState]) -> Sequence[GpuTarget]:
        by_uuid = {g.uuid: g for g in saved.gpus}
        out = []
        for gpu in now:
            s = by_uuid.get(gpu.uuid)
            if s is None or not gpu.mig_capable:
                out.append(GpuTarget(gpu, "not covered"))
            else:
                out.append(
                    GpuTarget(
                        gpu,
                        "covered",
                        mode=MIG_ENABLED if s.mig_enabled else MIG_DISABLED,
                        exact=s.gpu_instances if s.mig_enabled else None,
                    )
                )
        return out

    known = {g.uuid for g in gpus}
    missing = [g.uuid for g in saved.gpus if g.uuid not in known]
    if missing:
        raise ConfigError(
            f"the checkpoint names GPUs this node does not have: {', '.join(missing)}",
            file=checkpoint_file,
        )
    report = ApplyReport(streamed=shown is not None, restore=True)
    unreadable = _unreadable(targets_for(gpus))
    if unreadable:
        _refuse_unreadable(report, targets_for(gpus), unreadable)
        return report
    _refuse_if_read_only(targets_for(gpus))
    runner = _runner(
        hooks_file, restore_flag_env(checkpoint_file, hooks_file, mode_only), debug, False
    )
    if shown is not None:
        what = f"checkpoint {checkpoint_file}" if checkpoint_file else "the checkpoint"
        shown.begin(*_headline("Restoring", what, targets_for(gpus), mode_only=mode_only))
    return _orchestrate(
        node,
        targets_for(gpus),
        targets_for,
        runner,
        mode_only=mode_only,
        skip_reset=skip_reset,
        parallel=parallel,
        report=report,
        progress=shown,
    )
