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
from migkit.errors import ApplyError, ConfigError, MigkitError, NvmlError
from migkit.execution.actions import (
    GpuTarget,
    clear_actions,
    gi_signature,
    matches,
    plan_targets,
)
from migkit.execution.host import lock_path, node_lock, reset_blockers, reset_gpus
from migkit.execution.report import ApplyReport, AssertResult, GpuOutcome, describe_gpu
from migkit.execution.transaction import Journal, StepFailed, execute_gpu, rollback_gpu
from migkit.models import MIG_DISABLED, MIG_ENABLED, GpuState, Outcome
from migkit.nvml.node import NodeLike
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


def _emit(progress: TextIO | None, text: str) -> None:
    if progress is not None:
        progress.write(text + "\n")
        progress.flush()


def _change_mode(node: NodeLike, t: GpuTarget) -> GpuOutcome:
    """Clear (when disabling) and set the MIG mode of one GPU; PENDING when a reset is due."""
    from migkit.nvml.node import MigModeRequest

    gpu = t.gpu
    if t.desired_mode == MIG_DISABLED and gpu.mig_enabled and gpu.gpu_instances:
        try:
            execute_gpu(node, gpu, clear_actions(gpu))
        except StepFailed as failure:
            problems = rollback_gpu(node, gpu, _journal_of(failure))
            status = RESTORED if not problems else FAILED
            return GpuOutcome(
                gpu.index, gpu.name, status, f"failed {failure.what}", str(failure.error)
            )
    now: int | None
    if gpu.pending_mig_mode == t.desired_mode:
        now = gpu.mig_mode
    else:
        (result,) = node.set_mig_mode([MigModeRequest(gpu.index, int(t.desired_mode or 0))])
        if not result.ok:
            return GpuOutcome(
                gpu.index, gpu.name, FAILED, "setting the MIG mode", str(result.error)
            )
        now = result.mig_mode
    word = "enabled" if t.desired_mode else "disabled"
    if now != t.desired_mode:
        return GpuOutcome(gpu.index, gpu.name, PENDING, f"MIG mode {word} after a GPU reset")
    return GpuOutcome(gpu.index, gpu.name, APPLIED, f"MIG mode {word}")


def _mode_phase(
    node: NodeLike,
    targets: Sequence[GpuTarget],
    *,
    skip_reset: bool,
    parallel: bool,
    report: ApplyReport,
    progress: TextIO | None,
) -> bool:
    """Change the MIG mode of exactly the GPUs whose mode differs, in parallel; then reset the
    ones left pending (unless ``skip_reset``). Returns False when a GPU failed."""
    changing = [t for t in targets if not t.mode_matches]
    outcomes = _run_parallel(lambda t: _change_mode(node, t), changing, parallel, progress)
    failed = [o for o in outcomes if o.status in (FAILED, RESTORED)]
    if failed:
        report.outcomes.extend(failed)
        return False
    pending = [t.gpu for t, o in zip(changing, outcomes, strict=True) if o.status == PENDING]
    if pending and not skip_reset:
        _emit(progress, "resetting " + ", ".join(f"GPU {g.index}" for g in pending))
        reset_gpus(node, pending)
    return True


def _apply_gpu(node: NodeLike, target: GpuTarget) -> GpuOutcome:
    gpu = target.gpu
    actions = target.actions()
    if actions.empty:
        return GpuOutcome(gpu.index, gpu.name, UNCHANGED)
    kept = len(gpu.gpu_instances) - len(actions.destroy_gis) if gpu.mig_enabled else 0
    detail = (
        f"GPU instances: {kept} kept, {len(actions.destroy_gis)} destroyed, {len(actions.create_gis)} created; "
        f"compute instances: {len(actions.destroy_cis)} destroyed, {len(actions.create_cis)} created"
    )
    try:
        execute_gpu(node, gpu, actions)
    except StepFailed as failure:
        problems = rollback_gpu(node, gpu, _journal_of(failure))
        status = RESTORED if not problems else FAILED
        extra = (
            "; previous layout restored"
            if not problems
            else "; could not restore: " + "; ".join(problems)
        )
        return GpuOutcome(
            gpu.index, gpu.name, status, f"failed {failure.what}{extra}", str(failure.error)
        )
    except MigkitError as err:
        return GpuOutcome(gpu.index, gpu.name, FAILED, "could not change the GPU", str(err))
    return GpuOutcome(gpu.index, gpu.name, APPLIED, detail)


def _journal_of(failure: StepFailed) -> Journal:
    return getattr(failure, "journal", Journal())


def _run_parallel(
    func: Callable[[GpuTarget], GpuOutcome],
    targets: Sequence[GpuTarget],
    parallel: bool,
    progress: TextIO | None,
) -> list[GpuOutcome]:
    outcomes: dict[int, GpuOutcome] = {}
    lock = threading.Lock()

    def work(t: GpuTarget) -> None:
        try:
            outcome = func(t)
        except Exception as err:  # a thread must always report its GPU, whatever went wrong
            outcome = GpuOutcome(t.gpu.index, t.gpu.name, FAILED, "could not change the GPU", str(err))
        with lock:
            outcomes[t.gpu.index] = outcome
            if outcome.status != UNCHANGED:
                _emit(progress, outcome.line())

    if parallel and len(targets) > 1:
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


def _runner(
    hooks_file: str | None, flag_env: dict[str, str], options_debug: bool, inherit: bool
) -> HookRunner:
    from migkit.hooks import HookRunner, Hooks, load_hooks

    hooks = load_hooks(hooks_file) if hooks_file else Hooks()
    return HookRunner(hooks, flag_env, debug=options_debug, inherit_env=inherit)


def _converge(
    node: NodeLike,
    targets: Sequence[GpuTarget],
    replan: Callable[[Sequence[GpuState]], Sequence[GpuTarget]],
    *,
    mode_only: bool,
    skip_reset: bool,
    parallel: bool,
    runner: HookRunner,
    report: ApplyReport,
    progress: TextIO | None,
) -> None:
    """Mode phase, then config phase, then verification (hooks as upstream orders them)."""
    if not all(t.mode_matches for t in targets):
        runner.run("pre-apply-mode")
        if not _mode_phase(
            node, targets, skip_reset=skip_reset, parallel=parallel, report=report, progress=progress
        ):
            return
        targets = replan(node.snapshot())
        still = [t for t in targets if not t.mode_matches]
        if still:
            for t in targets:
                if t in still:
                    expected = skip_reset and mode_only
                    report.outcomes.append(
                        GpuOutcome(
                            t.gpu.index,
                            t.gpu.name,
                            PENDING if expected else FAILED,
                            "MIG mode change pending; reset the GPU or reboot"
                            + (" (--skip-reset)" if skip_reset else ""),
                            None if expected else "the mode change did not take effect",
                            describe_gpu(t.gpu),
                        )
                    )
                else:
                    report.outcomes.append(
                        GpuOutcome(
                            t.gpu.index,
                            t.gpu.name,
                            Outcome(t.coverage) if t.desired_mode is None else UNCHANGED,
                            state=describe_gpu(t.gpu),
                        )
                    )
            return
    if mode_only:
        after = node.snapshot()
        outcomes = [
            GpuOutcome(
                t.gpu.index, t.gpu.name, APPLIED if t.desired_mode is not None else Outcome(t.coverage)
            )
            for t in targets
        ]
        verify(targets, after, outcomes, mode_only=True)
        report.outcomes.extend(outcomes)
        return
    todo = [t for t in targets if t.desired_mode is not None and not matches(t)[0]]
    if todo:
        runner.run("pre-apply-config")
    results = {
        o.index: o for o in _run_parallel(lambda t: _apply_gpu(node, t), todo, parallel, progress)
    }
    outcomes = [
        results.get(t.gpu.index)
        or GpuOutcome(
            t.gpu.index, t.gpu.name, UNCHANGED if t.desired_mode is not None else Outcome(t.coverage)
        )
        for t in targets
    ]
    verify(targets, node.snapshot(), outcomes, mode_only=False)
    report.outcomes.extend(outcomes)


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
    progress: TextIO | None,
) -> ApplyReport:
    from migkit.hooks import HookError

    with node_lock(lock_path(node)):
        # Plan again now that this apply holds the node: another one may have finished
        # between the first look and taking the lock.
        targets = replan(node.snapshot())
        try:
            runner.run("apply-start")
        except HookError as err:
            report.error = str(err)
            return report
        try:
            _converge(
                node,
                targets,
                replan,
                mode_only=mode_only,
                skip_reset=skip_reset,
                parallel=parallel,
                runner=runner,
                report=report,
                progress=progress,
            )
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
    return report


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
    progress: TextIO | None = None,
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
    ``dry_run`` nothing is changed and the report carries the plan. ``progress`` receives a
    line per GPU as each finishes. ``config_file`` is the path hooks see as
    ``MIG_PARTED_CONFIG_FILE`` (default: the file ``config`` was loaded from).
    """
    from migkit.hooks import apply_flag_env

    report = ApplyReport(streamed=progress is not None)
    gpus = node.snapshot()
    if dry_run:
        node_plan = plan_node(config, name, gpus, strict_coverage=strict_coverage)
        node_plan.raise_for_errors()  # an infeasible config is an error, dry run or not
        report.dry_run = True
        report.warnings.extend(node_plan.warnings)
        if not node.is_simulated and any(g.reset_required for g in node_plan.gpus):
            report.warnings.extend(f"a GPU reset is needed and may fail: {b}" for b in reset_blockers())
        report.plan_text = node_plan.to_text()
        report.plan_json = node_plan.to_json()
        return report
    targets, warnings = plan_targets(config, name, gpus, strict_coverage=strict_coverage)
    report.warnings.extend(warnings)
    _refuse_if_read_only(targets)
    runner = _runner(
        hooks_file,
        apply_flag_env(config_file or config.file or "", name, hooks_file, skip_reset, mode_only),
        debug,
        inherit_env,
    )

    def replan(now: Sequence[GpuState]) -> Sequence[GpuTarget]:
        return plan_targets(config, name, now, strict_coverage=strict_coverage)[0]

    return _orchestrate(
        node,
        targets,
        replan,
        runner,
        mode_only=mode_only,
        skip_reset=skip_reset,
        parallel=parallel,
        report=report,
        progress=progress,
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
    gpus = node.snapshot()
    targets, warnings = plan_targets(config, name, gpus, strict_coverage=strict_coverage)
    if valid_only:
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
    progress: TextIO | None = None,
    debug: bool = False,
    parallel: bool = True,
) -> ApplyReport:
    """Make the node match a checkpoint exactly (placements included); GPUs not in it are untouched."""
    from migkit.hooks import restore_flag_env

    gpus = node.snapshot()

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
    report = ApplyReport()
    _refuse_if_read_only(targets_for(gpus))
    runner = _runner(
        hooks_file, restore_flag_env(checkpoint_file, hooks_file, mode_only), debug, False
    )
    return _orchestrate(
        node,
        targets_for(gpus),
        targets_for,
        runner,
        mode_only=mode_only,
        skip_reset=skip_reset,
        parallel=parallel,
        report=report,
        progress=progress,
    )
