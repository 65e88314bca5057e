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

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO, cast

from migkit.config import MigConfigFile, select
from migkit.errors import ApplyError, ConfigError, MigkitError, NvmlError
from migkit.execution.actions import (
    GpuTarget,
    matches,
    plan_targets,
)
from migkit.execution.host import lock_path, node_lock, reset_blockers
from migkit.execution.interrupts import deferred_interrupts
from migkit.execution.report import (
    ApplyReport,
    AssertResult,
    GpuOutcome,
    Progress,
    describe_gpu,
)
from migkit.execution.trace import log_decisions, phase, traced
from migkit.models import MIG_DISABLED, MIG_ENABLED, GpuState, Outcome
from migkit.nvml.node import NodeLike
from migkit.planning.plan import plan_node

if TYPE_CHECKING:
    from migkit.checkpoint import Checkpoint
    from migkit.hooks import HookRunner

from migkit.execution.steps import (
    APPLIED,
    FAILED,
    NOT_ATTEMPTED,
    PENDING,
    UNCHANGED,
    Run,
    Unreadable,
    apply_gpu,
    finish_mode_changed,
    fresh_snapshot,
    headline,
    mode_phase,
    read_before_change,
    refused_report,
    replan_after_change,
    run_parallel,
    verify,
)

__all__ = ["apply", "assert_config", "restore", "verify"]


class _ModeReads:
    """A view of a node whose snapshots skip the profile tables of GPUs with MIG off.

    Enough when no GPU the config covers is to have MIG on (``all-disabled``): the plans then
    need each GPU's mode and, where MIG is on, its instances, which such a snapshot still
    reads in full. On real hardware the tables are most of what a snapshot costs.
    """

    def __init__(self, node: NodeLike) -> None:
        self._node = node

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)

    def snapshot(self, *, tables: bool = True) -> tuple[GpuState, ...]:
        return self._node.snapshot(tables=False)


def _wants_mig(config: MigConfigFile, name: str | None) -> bool:
    """Whether the selected config has an entry that enables MIG (or cannot be selected, which
    the full path then reports). When it has none, no GPU's profile tables are needed."""
    try:
        return any(entry.mig_enabled for entry in select(config, name).entries)
    except MigkitError:
        return True


def _reads_for(node: NodeLike, config: MigConfigFile, name: str | None) -> NodeLike:
    """``node``, or a view of it that reads only modes when the config enables MIG nowhere."""
    if _wants_mig(config, name):
        return node
    return cast("NodeLike", _ModeReads(node))  # forwards every member it does not override


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


def _converge(
    run: Run,
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
            finished = mode_phase(run, targets)
        try:
            targets = replan_after_change(node, replan)
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
            changed = run_parallel(lambda t: apply_gpu(run, t), todo, run)
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
    finish_mode_changed(run, active, outcomes)
    with phase("verification"):
        try:
            after = fresh_snapshot(node)
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
        run = Run(node, stop, report, progress, parallel, skip_reset)
        try:
            with phase("total, under the node lock"):
                _locked(run, replan, runner, mode_only=mode_only)
        except HookError as err:
            report.error = str(err)
        finally:
            report.interrupted = stop.signum
    return report


def _locked(
    run: Run,
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
            gpus = read_before_change(run.node)
        except Unreadable as err:
            refused_report(report, str(err))
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
        node = _reads_for(node, config, name)
        try:
            gpus = read_before_change(node)
        except Unreadable as err:
            return refused_report(report, str(err))
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
        shown.begin(*headline("Applying", f"config {chosen}", targets, mode_only=mode_only))
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
    gpus = _reads_for(traced(node), config, name).snapshot()
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
        gpus = read_before_change(node)
    except Unreadable as err:
        return refused_report(
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
        shown.begin(*headline("Restoring", what, targets_for(gpus), mode_only=mode_only))
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
