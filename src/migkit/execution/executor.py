"""Make a node match a configuration: validate, plan, act, verify.

The pipeline (mig-parted-facts §3.9): snapshot -> effective spec per GPU -> validate and plan
every covered GPU (unknown profile, infeasible layout: an error before any NVML mutation) ->
hooks in upstream's order -> mode changes (only GPUs whose mode differs; resets only of those)
-> per-GPU changes in parallel threads (destroy CIs, destroy GIs, create GIs at their planned
placements, create CIs) -> a fresh snapshot to verify.

A failure on a GPU restores that GPU's previous geometry at its previous placements where
possible; the report says, per GPU, what state it ended in.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

import attrs

from migkit.config import MigConfigFile
from migkit.errors import (
    ApplyError,
    ConfigError,
    MigkitError,
    NvmlError,
)
from migkit.models import (
    MIG_DISABLED,
    MIG_ENABLED,
    GpuInstance,
    GpuState,
    Placement,
)
from migkit.names import ProfileCounts
from migkit.planning.plan import GpuPlan, plan_node

# Outcomes reported per GPU.
UNCHANGED = "unchanged"
APPLIED = "applied"
RESTORED = "restored"
FAILED = "failed"
NOT_ATTEMPTED = "not attempted"
NOT_COVERED = "not covered"
SKIPPED = "skipped"
PENDING = "pending reset"


# --------------------------------------------------------------------------- reading state


def current_counts(gpu: GpuState) -> ProfileCounts:
    """Compute-instance counts by canonical name, as a config's ``mig-devices`` says them."""
    return ProfileCounts((ci.profile, 1) for gi in gpu.gpu_instances for ci in gi.compute_instances)


def orphan_instances(gpu: GpuState) -> tuple[GpuInstance, ...]:
    """GPU instances without compute instances (invisible to upstream, pitfall P12)."""
    return tuple(gi for gi in gpu.gpu_instances if not gi.compute_instances)


def _gi_text(gi: Any) -> str:
    return f"{gi.profile}@{gi.start}:{gi.size}"


def describe_gpu(gpu: GpuState) -> str:
    """``MIG enabled: 3g.40gb@0:4 [3g.40gb], 1g.10gb@6:1 [1g.10gb]`` — state in one line."""
    if not gpu.mig_capable:
        return "MIG not supported"
    mode = "MIG enabled" if gpu.mig_enabled else "MIG disabled"
    if gpu.mode_change_pending:
        mode += f" (pending {'enable' if gpu.pending_mig_mode else 'disable'})"
    if not gpu.gpu_instances:
        return mode + ", no instances" if gpu.mig_enabled else mode
    parts = []
    for gi in sorted(gpu.gpu_instances, key=lambda g: g.start):
        cis = ", ".join(ci.profile for ci in gi.compute_instances) or "no CIs"
        parts.append(f"{_gi_text(gi)} [{cis}]")
    return f"{mode}: " + ", ".join(parts)


# --------------------------------------------------------------------------- planning


@attrs.frozen
class GpuActions:
    """What to do on one GPU, in this order: destroy CIs, destroy GIs, create GIs, create CIs.

    Compute instances to create name their GPU instance by its placement, because a new GI's
    id is only known once it exists.
    """

    destroy_cis: tuple[tuple[int, int], ...] = ()  # (GI id, CI id)
    destroy_gis: tuple[int, ...] = ()  # GI ids
    create_gis: tuple[tuple[int, Placement], ...] = ()  # (GI profile id, placement)
    create_cis: tuple[
        tuple[Placement, int, Placement], ...
    ] = ()  # (GI placement, CI profile id, CI placement)

    @property
    def empty(self) -> bool:
        return not (self.destroy_cis or self.destroy_gis or self.create_gis or self.create_cis)



@attrs.frozen
class GpuTarget:
    """What one GPU should become: its MIG mode and how its instances change.

    ``mode`` is None for a GPU that is left alone (not covered, or not MIG-capable). ``plan``
    is the planner's plan for a config (apply); ``exact`` lists GPU instances to have at
    exactly these placements (restore).
    """

    gpu: GpuState
    coverage: str  # "covered", "not covered" or "skipped"
    mode: int | None = None
    plan: GpuPlan | None = None
    exact: tuple[Any, ...] | None = None  # checkpoint.SavedGpuInstance items

    @property
    def covered(self) -> bool:
        return self.coverage == "covered"

    @property
    def desired_mode(self) -> int | None:
        return self.mode if self.gpu.mig_capable else None

    @property
    def mode_matches(self) -> bool:
        want = self.desired_mode
        return want is None or (self.gpu.mig_mode == want and self.gpu.pending_mig_mode == want)

    def actions(self) -> GpuActions:
        """The instance changes this GPU needs once its mode is right."""
        if self.desired_mode is None:
            return GpuActions()
        if self.exact is not None:
            return exact_actions(self.gpu, self.exact)
        if self.plan is not None:
            return plan_actions(self.plan)
        return clear_actions(self.gpu)


def plan_actions(plan: GpuPlan) -> GpuActions:
    """The planner's steps for one GPU as bulk-call items."""
    create_cis = [
        (gi.placement, ci.profile_id, ci.placement)
        for gi in plan.create_gpu_instances
        for ci in gi.compute_instances
    ]
    kept = {gi.existing_id: gi.placement for gi in plan.kept}
    create_cis.extend(
        (kept[add.gpu_instance_id], add.compute.profile_id, add.compute.placement)
        for add in plan.add_compute_instances
    )
    return GpuActions(
        destroy_cis=tuple(
            (d.gpu_instance_id, d.compute_instance_id) for d in plan.destroy_compute_instances
        ),
        destroy_gis=tuple(d.gpu_instance_id for d in plan.destroy_gpu_instances),
        create_gis=tuple((gi.profile_id, gi.placement) for gi in plan.create_gpu_instances),
        create_cis=tuple(create_cis),
    )


def _gi_signature(profile_id: int, start: int, size: int, cis: Any) -> tuple[Any, ...]:
    return (profile_id, start, size, tuple(sorted((c.profile_id, c.start, c.size) for c in cis)))


def exact_actions(gpu: GpuState, wanted: Sequence[Any]) -> GpuActions:
    """Reach exactly ``wanted`` GPU instances (with their CIs), keeping identical ones."""
    current = gpu.gpu_instances if gpu.mig_enabled else ()
    remaining = [_gi_signature(w.profile_id, w.start, w.size, w.compute_instances) for w in wanted]
    destroy_cis: list[tuple[int, int]] = []
    destroy_gis: list[int] = []
    for gi in current:
        sig = _gi_signature(gi.profile_id, gi.start, gi.size, gi.compute_instances)
        if sig in remaining:
            remaining.remove(sig)
            continue
        destroy_cis.extend((gi.id, ci.id) for ci in gi.compute_instances)
        destroy_gis.append(gi.id)
    create_gis = tuple((pid, Placement(start, size)) for pid, start, size, _ in remaining)
    create_cis = tuple(
        (Placement(start, size), cpid, Placement(cstart, csize))
        for _, start, size, cis in remaining
        for cpid, cstart, csize in cis
    )
    return GpuActions(tuple(destroy_cis), tuple(destroy_gis), create_gis, create_cis)


def clear_actions(gpu: GpuState) -> GpuActions:
    """Destroy every instance of ``gpu``."""
    return GpuActions(
        destroy_cis=tuple(
            (gi.id, ci.id) for gi in gpu.gpu_instances for ci in gi.compute_instances
        ),
        destroy_gis=tuple(gi.id for gi in gpu.gpu_instances),
    )


def plan_targets(
    config: MigConfigFile,
    selected: str | None,
    gpus: Sequence[GpuState],
    *,
    strict_coverage: bool = False,
) -> tuple[tuple[GpuTarget, ...], tuple[str, ...]]:
    """Validate and plan every covered GPU; raise before anything is changed.

    Raises :class:`~migkit.errors.UnknownProfileError` for a profile a GPU does not offer (with
    the file position of the profile and the GPU) and :class:`InfeasibleError` listing every
    GPU whose counts cannot be placed.
    """
    node_plan = plan_node(config, selected, gpus, strict_coverage=strict_coverage)
    node_plan.raise_for_errors()
    targets = []
    for gpu, gpu_plan in zip(gpus, node_plan.gpus, strict=True):
        mode = None
        if gpu_plan.covered and gpu_plan.desired_mig_enabled is not None:
            mode = MIG_ENABLED if gpu_plan.desired_mig_enabled else MIG_DISABLED
        coverage = "covered" if gpu_plan.covered else gpu_plan.status
        targets.append(GpuTarget(gpu, coverage, mode, gpu_plan))
    return tuple(targets), node_plan.warnings


def matches(
    target: GpuTarget, *, mode_only: bool = False, check_plan: bool = True
) -> tuple[bool, str]:
    """Whether the GPU already is what its spec asks; the reason when not."""
    gpu = target.gpu
    want = target.desired_mode
    if want is None:
        return True, ""
    if gpu.mig_mode != want:
        word = "enabled" if want else "disabled"
        reason = f"MIG mode is {'enabled' if gpu.mig_mode else 'disabled'}, wanted {word}"
        if gpu.pending_mig_mode == want:
            reason += f" (the change to {word} is pending: reset the GPU or reboot)"
        return False, reason
    if gpu.pending_mig_mode != want:
        return False, "a MIG mode change is pending (reset or reboot required)"
    if mode_only or want == MIG_DISABLED:
        return True, ""
    if target.exact is not None:
        if exact_actions(gpu, target.exact).empty:
            return True, ""
        return False, "instances differ from the checkpoint"
    if target.plan is None:
        return True, ""
    have = current_counts(gpu)
    if have != target.plan.desired_counts:
        return False, f"has {_counts_text(have)}, wanted {_counts_text(target.plan.desired_counts)}"
    orphans = orphan_instances(gpu)
    if orphans:
        return False, "GPU instances without compute instances: " + ", ".join(
            _gi_text(gi) for gi in orphans
        )
    if check_plan and not plan_actions(target.plan).empty:
        return False, "its instances differ from the planned layout"
    return True, ""


def _counts_text(counts: ProfileCounts) -> str:
    return (
        "{" + ", ".join(f"{k}: {v}" for k, v in counts.items()) + "}"
        if counts
        else "no MIG devices"
    )


# --------------------------------------------------------------------------- acting on one GPU


class _StepFailed(Exception):
    def __init__(self, error: NvmlError | None, what: str) -> None:
        self.error = error
        self.what = what
        super().__init__(what)


@attrs.define
class _Journal:
    """What has been done to one GPU, so that it can be undone."""

    destroyed_cis: list[tuple[GpuInstance, Any]] = attrs.Factory(list)  # (GI, CI) as they were
    destroyed_gis: list[GpuInstance] = attrs.Factory(list)
    created_gis: list[tuple[int, Placement]] = attrs.Factory(list)  # (GI id, placement)
    created_cis: list[tuple[int, int]] = attrs.Factory(list)  # (GI id, CI id)


def _check(
    results: Sequence[Any], describe: Callable[[Any], str], on_ok: Callable[[Any], None]
) -> None:
    for result in results:
        if result.ok:
            on_ok(result)
        elif result.attempted:
            raise _StepFailed(result.error, describe(result))


def execute_gpu(node: Any, gpu: GpuState, actions: GpuActions) -> _Journal:
    """Carry out ``actions`` on ``gpu`` in four bulk calls; raise _StepFailed on the first error.

    The exception carries the journal of what was done before the failure."""
    journal = _Journal()
    try:
        return _execute(node, gpu, actions, journal)
    except _StepFailed as failure:
        failure.journal = journal  # type: ignore[attr-defined]
        raise


def _execute(node: Any, gpu: GpuState, actions: GpuActions, journal: _Journal) -> _Journal:
    from migkit.nvml._binding import (
        ComputeInstanceRef,
        ComputeInstanceRequest,
        GpuInstanceRef,
        GpuInstanceRequest,
    )

    gis = {gi.id: gi for gi in gpu.gpu_instances}
    cis = {(gi.id, ci.id): ci for gi in gpu.gpu_instances for ci in gi.compute_instances}
    g = gpu.index
    if actions.destroy_cis:
        results = node.destroy_compute_instances(
            [ComputeInstanceRef(g, gi, ci) for gi, ci in actions.destroy_cis], stop_on_error=True
        )
        _check(
            results,
            lambda r: (
                f"destroying compute instance {r.request.compute_instance} of GPU instance {r.request.gpu_instance}"
            ),
            lambda r: journal.destroyed_cis.append(
                (
                    gis[r.request.gpu_instance],
                    cis[(r.request.gpu_instance, r.request.compute_instance)],
                )
            ),
        )
    if actions.destroy_gis:
        results = node.destroy_gpu_instances(
            [GpuInstanceRef(g, gi) for gi in actions.destroy_gis], stop_on_error=True
        )
        _check(
            results,
            lambda r: f"destroying GPU instance {_gi_text(gis[r.request.gpu_instance])}",
            lambda r: journal.destroyed_gis.append(gis[r.request.gpu_instance]),
        )
    new_ids: dict[Placement, int] = {}
    if actions.create_gis:
        names = {p.id: p.name for p in gpu.profiles}
        results = node.create_gpu_instances(
            [GpuInstanceRequest(g, pid, placement) for pid, placement in actions.create_gis],
            stop_on_error=True,
        )

        def created(r: Any) -> None:
            new_ids[r.request.placement] = r.gpu_instance
            journal.created_gis.append((r.gpu_instance, r.request.placement))

        _check(
            results,
            lambda r: (
                f"creating GPU instance {names.get(r.request.profile_id, r.request.profile_id)} "
                f"at {r.request.placement}"
            ),
            created,
        )
    if actions.create_cis:
        placement_ids = {
            gi.placement: gi.id for gi in gpu.gpu_instances if gi.id not in actions.destroy_gis
        }
        placement_ids.update(new_ids)
        results = node.create_compute_instances(
            [
                ComputeInstanceRequest(g, placement_ids[gi_pl], pid, ci_pl)
                for gi_pl, pid, ci_pl in actions.create_cis
            ],
            stop_on_error=True,
        )
        _check(
            results,
            lambda r: (
                f"creating compute instance (profile {r.request.profile_id}) at {r.request.placement} "
                f"in GPU instance {r.request.gpu_instance}"
            ),
            lambda r: journal.created_cis.append((r.request.gpu_instance, r.compute_instance)),
        )
    return journal


def rollback_gpu(node: Any, gpu: GpuState, journal: _Journal) -> list[str]:
    """Undo a journal: the GPU's previous instances come back at their previous placements.

    Returns the problems met (empty when the previous geometry is back)."""
    from migkit.nvml._binding import (
        ComputeInstanceRef,
        ComputeInstanceRequest,
        GpuInstanceRef,
        GpuInstanceRequest,
    )

    problems: list[str] = []
    g = gpu.index

    def note(results: Sequence[Any], what: str) -> None:
        problems.extend(f"{what}: {r.error}" for r in results if not r.ok)

    if journal.created_cis:
        note(
            node.destroy_compute_instances(
                [ComputeInstanceRef(g, gi, ci) for gi, ci in reversed(journal.created_cis)]
            ),
            "removing a new compute instance",
        )
    if journal.created_gis:
        note(
            node.destroy_gpu_instances(
                [GpuInstanceRef(g, gi) for gi, _ in reversed(journal.created_gis)]
            ),
            "removing a new GPU instance",
        )
    ids: dict[int, int] = {}  # old GI id -> GI id now
    if journal.destroyed_gis:
        results = node.create_gpu_instances(
            [GpuInstanceRequest(g, gi.profile_id, gi.placement) for gi in journal.destroyed_gis]
        )
        for gi, r in zip(journal.destroyed_gis, results, strict=True):
            if r.ok:
                ids[gi.id] = r.gpu_instance
        note(results, "re-creating a GPU instance")
    if journal.destroyed_cis:
        requests = []
        for gi, ci in journal.destroyed_cis:
            now = ids.get(gi.id, gi.id if gi not in journal.destroyed_gis else None)
            if now is not None:
                requests.append(ComputeInstanceRequest(g, now, ci.profile_id, ci.placement))
        note(node.create_compute_instances(requests), "re-creating a compute instance")
    return problems


# --------------------------------------------------------------------------- reports


@attrs.define
class GpuOutcome:
    index: int
    name: str
    status: str
    detail: str = ""
    error: str | None = None
    state: str = ""  # the GPU's state at the end, in one line

    def line(self) -> str:
        text = f"GPU {self.index}: {self.status}"
        if self.detail:
            text += f" - {self.detail}"
        if self.error:
            text += f" ({self.error})"
        return text


@attrs.define
class ApplyReport:
    outcomes: list[GpuOutcome] = attrs.Factory(list)
    warnings: list[str] = attrs.Factory(list)
    error: str | None = None
    plan_text: str = ""
    dry_run: bool = False
    streamed: bool = False  # changes were already printed one line per GPU as they happened
    plan_json: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and all(
            o.status not in (FAILED, RESTORED, NOT_ATTEMPTED) for o in self.outcomes
        )

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def summary(self) -> str:
        lines = [f"warning: {w}" for w in self.warnings]
        if self.dry_run:
            lines.append(self.plan_text)
            return "\n".join(lines)
        for o in self.outcomes:
            if not self.streamed or o.status not in (APPLIED, UNCHANGED, NOT_COVERED, SKIPPED):
                lines.append(o.line())
        if self.streamed:
            changed = sum(o.status == APPLIED for o in self.outcomes)
            lines.append(f"{changed} GPU(s) changed, {sum(o.status == UNCHANGED for o in self.outcomes)} unchanged")
        if self.error:
            lines.append(f"error: {self.error}")
        lines.append("MIG configuration applied" if self.ok else "MIG configuration NOT applied")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {
                "ok": self.ok,
                "error": self.error,
                "warnings": self.warnings,
                "dry_run": self.dry_run,
                "plan": json.loads(self.plan_json) if self.dry_run and self.plan_json else None,
                "gpus": [attrs.asdict(o) for o in self.outcomes],
            },
            indent=2,
        )


@attrs.frozen
class AssertResult:
    ok: bool
    lines: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    valid_only: bool = False

    def summary(self) -> str:
        head = [f"warning: {w}" for w in self.warnings]
        if self.valid_only:
            tail = ["Selected MIG configuration is valid"]
        else:
            tail = [
                "Selected MIG configuration currently applied"
                if self.ok
                else "Assertion failure: selected configuration not currently applied"
            ]
        return "\n".join([*head, *self.lines, *tail])

    def to_json(self) -> str:
        return json.dumps(
            {"ok": self.ok, "gpus": list(self.lines), "warnings": list(self.warnings)}, indent=2
        )


@attrs.frozen
class ApplyOptions:
    selected_config: str | None = None
    config_file: str = ""
    hooks_file: str | None = None
    skip_reset: bool = False
    mode_only: bool = False
    dry_run: bool = False
    strict_coverage: bool = False
    debug: bool = False
    inherit_env: bool = False
    parallel: bool = True


# --------------------------------------------------------------------------- node-level steps


def lock_path(node: Any) -> str:
    """One lock per node: beside a simulated node's state file, else in /run/lock."""
    if getattr(node, "state_file", None):
        return f"{node.state_file}.apply.lock"
    for directory in ("/run/lock", "/var/lock", "/tmp"):
        if os.path.isdir(directory) and os.access(directory, os.W_OK):
            return os.path.join(directory, "migkit-apply.lock")
    return "migkit-apply.lock"


@contextlib.contextmanager
def node_lock(path: str) -> Iterator[None]:
    """Exclusive apply lock; a second apply on the node fails at once with a clear message."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ApplyError(
                f"another migkit apply is running on this node (lock {path} held by pid {holder}); "
                f"nothing was changed"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def reset_blockers(proc: str = "/proc") -> list[str]:
    """Known reasons a GPU reset fails on a real node (mig-parted-facts P19), found up front.

    The ``nvidia_drm`` module and ``nvidia-persistenced`` keep the GPUs open, so
    ``nvidia-smi -r`` fails with "in use". Returns one sentence per blocker found.
    """
    found: list[str] = []
    try:
        with open(os.path.join(proc, "modules"), encoding="utf-8") as modules:
            if any(line.split(" ", 1)[0] == "nvidia_drm" for line in modules):
                found.append("the nvidia_drm kernel module is loaded (it holds the GPUs; unload it first)")
    except OSError:
        pass
    try:
        entries = os.listdir(proc)
    except OSError:
        entries = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "comm"), encoding="utf-8") as comm:
                name = comm.read().strip()
        except OSError:
            continue
        if name.startswith("nvidia-persiste"):
            found.append(f"nvidia-persistenced is running (pid {entry}; stop it first)")
    return found


def reset_gpus(node: Any, gpus: Sequence[GpuState]) -> None:
    """Reset exactly these GPUs so that a pending MIG mode takes effect."""
    if not gpus:
        return
    if getattr(node, "is_simulated", False) and node.state_file:
        from migkit import simulator

        try:
            simulator.reset_gpus(node.state_file, [g.index for g in gpus])
        except simulator.SimulatorError as err:
            raise ApplyError(f"GPU reset failed: {err}") from None
        return
    blockers = reset_blockers()
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise ApplyError(
            "a MIG mode change is pending and nvidia-smi (needed to reset "
            + ", ".join(f"GPU {g.index}" for g in gpus)
            + ") was not found; reset or reboot"
        )
    proc = subprocess.run(
        [smi, "-r", "-i", ",".join(g.bus_id for g in gpus)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()
        hint = ("; likely blockers: " + "; ".join(blockers)) if blockers else ""
        raise ApplyError(f"nvidia-smi -r failed (exit {proc.returncode}): {output}{hint}")


def _emit(progress: TextIO | None, text: str) -> None:
    if progress is not None:
        progress.write(text + "\n")
        progress.flush()


def _change_mode(node: Any, t: GpuTarget) -> GpuOutcome:
    """Clear (when disabling) and set the MIG mode of one GPU; PENDING when a reset is due."""
    from migkit.nvml._binding import MigModeRequest

    gpu = t.gpu
    if t.desired_mode == MIG_DISABLED and gpu.mig_enabled and gpu.gpu_instances:
        try:
            execute_gpu(node, gpu, clear_actions(gpu))
        except _StepFailed as failure:
            problems = rollback_gpu(node, gpu, _journal_of(failure))
            status = RESTORED if not problems else FAILED
            return GpuOutcome(
                gpu.index, gpu.name, status, f"failed {failure.what}", str(failure.error)
            )
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
    node: Any,
    targets: Sequence[GpuTarget],
    options: ApplyOptions,
    report: ApplyReport,
    progress: TextIO | None,
) -> bool:
    """Change the MIG mode of exactly the GPUs whose mode differs, in parallel; then reset the
    ones left pending (unless ``skip_reset``). Returns False when a GPU failed."""
    changing = [t for t in targets if not t.mode_matches]
    outcomes = _run_parallel(lambda t: _change_mode(node, t), changing, options.parallel, progress)
    failed = [o for o in outcomes if o.status in (FAILED, RESTORED)]
    if failed:
        report.outcomes.extend(failed)
        return False
    pending = [t.gpu for t, o in zip(changing, outcomes, strict=True) if o.status == PENDING]
    if pending and not options.skip_reset:
        _emit(progress, "resetting " + ", ".join(f"GPU {g.index}" for g in pending))
        reset_gpus(node, pending)
    return True


def _apply_gpu(node: Any, target: GpuTarget) -> GpuOutcome:
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
    except _StepFailed as failure:
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


def _journal_of(failure: _StepFailed) -> _Journal:
    return getattr(failure, "journal", _Journal())


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
        _gi_signature(gi.profile_id, gi.start, gi.size, gi.compute_instances)
        for gi in plan.layout.instances
    )


def _gpu_signature(gpu: GpuState) -> list[tuple[Any, ...]]:
    return sorted(
        _gi_signature(gi.profile_id, gi.start, gi.size, gi.compute_instances)
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
) -> Any:
    from migkit.hooks import HookRunner, Hooks, load_hooks

    hooks = load_hooks(hooks_file) if hooks_file else Hooks()
    return HookRunner(hooks, flag_env, debug=options_debug, inherit_env=inherit)


def _converge(
    node: Any,
    targets: Sequence[GpuTarget],
    replan: Callable[[Sequence[GpuState]], Sequence[GpuTarget]],
    *,
    mode_only: bool,
    skip_reset: bool,
    parallel: bool,
    runner: Any,
    report: ApplyReport,
    progress: TextIO | None,
) -> None:
    """Mode phase, then config phase, then verification (hooks as upstream orders them)."""
    if not all(t.mode_matches for t in targets):
        runner.run("pre-apply-mode")
        if not _mode_phase(
            node, targets, ApplyOptions(skip_reset=skip_reset, parallel=parallel), report, progress
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
                            t.coverage if t.desired_mode is None else UNCHANGED,
                            state=describe_gpu(t.gpu),
                        )
                    )
            return
    if mode_only:
        after = node.snapshot()
        outcomes = [
            GpuOutcome(
                t.gpu.index, t.gpu.name, APPLIED if t.desired_mode is not None else t.coverage
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
            t.gpu.index, t.gpu.name, UNCHANGED if t.desired_mode is not None else t.coverage
        )
        for t in targets
    ]
    verify(targets, node.snapshot(), outcomes, mode_only=False)
    report.outcomes.extend(outcomes)


def _orchestrate(
    node: Any,
    targets: Sequence[GpuTarget],
    replan: Callable[[Sequence[GpuState]], Sequence[GpuTarget]],
    runner: Any,
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
    node: Any, config: MigConfigFile, options: ApplyOptions, progress: TextIO | None = None
) -> ApplyReport:
    """Make the node match the selected config. Raises ConfigError/InfeasibleError (nothing
    changed) for an invalid config; runtime failures are in the returned report."""
    from migkit.hooks import apply_flag_env

    report = ApplyReport(streamed=progress is not None)
    gpus = node.snapshot()
    if options.dry_run:
        node_plan = plan_node(
            config, options.selected_config, gpus, strict_coverage=options.strict_coverage
        )
        node_plan.raise_for_errors()  # an infeasible config is an error, dry run or not
        report.dry_run = True
        report.warnings.extend(node_plan.warnings)
        if not getattr(node, "is_simulated", False) and any(g.reset_required for g in node_plan.gpus):
            report.warnings.extend(f"a GPU reset is needed and may fail: {b}" for b in reset_blockers())
        report.plan_text = node_plan.to_text()
        report.plan_json = node_plan.to_json()
        return report
    targets, warnings = plan_targets(
        config, options.selected_config, gpus, strict_coverage=options.strict_coverage
    )
    report.warnings.extend(warnings)
    _refuse_if_read_only(targets)
    runner = _runner(
        options.hooks_file,
        apply_flag_env(
            options.config_file,
            options.selected_config,
            options.hooks_file,
            options.skip_reset,
            options.mode_only,
        ),
        options.debug,
        options.inherit_env,
    )

    def replan(now: Sequence[GpuState]) -> Sequence[GpuTarget]:
        return plan_targets(
            config, options.selected_config, now, strict_coverage=options.strict_coverage
        )[0]

    return _orchestrate(
        node,
        targets,
        replan,
        runner,
        mode_only=options.mode_only,
        skip_reset=options.skip_reset,
        parallel=options.parallel,
        report=report,
        progress=progress,
    )


def assert_config(
    node: Any,
    config: MigConfigFile,
    selected_name: str | None,
    *,
    mode_only: bool = False,
    strict_coverage: bool = False,
    valid_only: bool = False,
) -> AssertResult:
    """Whether the node already matches; with ``valid_only``, whether the config can be applied here."""
    gpus = node.snapshot()
    targets, warnings = plan_targets(config, selected_name, gpus, strict_coverage=strict_coverage)
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
    node: Any,
    saved: Any,
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
