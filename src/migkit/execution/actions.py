"""What to do to each GPU, worked out purely from its snapshot and its plan (or checkpoint).

No NVML here: these are values and pure functions, tested without a node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from migkit.config import MigConfigFile
from migkit.execution.report import gi_text
from migkit.models import MIG_DISABLED, MIG_ENABLED, GpuState, Placement
from migkit.names import ProfileCounts
from migkit.planning.plan import GpuPlan, plan_node

__all__ = [
    "CreatedKey",
    "GpuActions",
    "GpuTarget",
    "clear_actions",
    "exact_actions",
    "foreign_instances",
    "gi_signature",
    "matches",
    "plan_actions",
    "plan_targets",
    "restore_actions",
]


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


def gi_signature(profile_id: int, start: int, size: int, cis: Any) -> tuple[Any, ...]:
    return (profile_id, start, size, tuple(sorted((c.profile_id, c.start, c.size) for c in cis)))


def exact_actions(gpu: GpuState, wanted: Sequence[Any]) -> GpuActions:
    """Reach exactly ``wanted`` GPU instances (with their CIs), keeping identical ones."""
    current = gpu.gpu_instances if gpu.mig_enabled else ()
    remaining = [gi_signature(w.profile_id, w.start, w.size, w.compute_instances) for w in wanted]
    destroy_cis: list[tuple[int, int]] = []
    destroy_gis: list[int] = []
    for gi in current:
        sig = gi_signature(gi.profile_id, gi.start, gi.size, gi.compute_instances)
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


CreatedKey = tuple[Any, ...]
"""What a run may have created on a GPU: ``(GI profile id, GI placement)`` for a GPU
instance, ``(GI placement, CI profile id, CI placement)`` for a compute instance."""


def restore_actions(
    now: GpuState, before: GpuState | None, created: frozenset[CreatedKey] | None = None
) -> GpuActions:
    """The fewest changes that take ``now`` back to ``before``'s instances (None: no instances).

    GPU instances are matched by profile and placement, compute instances inside a matched
    GPU instance likewise: what ``before`` lacks is destroyed, what it has and ``now`` lacks
    is created at its placement. Ids are not compared (a re-created instance gets a new one).

    With ``created``, only instances whose key is in it are destroyed: a rollback removes
    what its run may have made, never something that was there and missing from the first
    read. :func:`foreign_instances` lists what is left alone.
    """
    wanted: dict[tuple[int, Placement], Any] = {}
    if before is not None and before.mig_enabled:
        wanted = {(gi.profile_id, gi.placement): gi for gi in before.gpu_instances}
    destroy_cis: list[tuple[int, int]] = []
    destroy_gis: list[int] = []
    create_gis: list[tuple[int, Placement]] = []
    create_cis: list[tuple[Placement, int, Placement]] = []
    matched: set[tuple[int, Placement]] = set()
    occupied: set[Placement] = set()
    for gi in now.gpu_instances:
        key = (gi.profile_id, gi.placement)
        want = wanted.get(key)
        if want is None or key in matched:
            if created is None or key in created:
                destroy_cis.extend((gi.id, ci.id) for ci in gi.compute_instances)
                destroy_gis.append(gi.id)
            else:
                occupied.add(gi.placement)
            continue
        matched.add(key)
        missing = [(ci.profile_id, ci.placement) for ci in want.compute_instances]
        for ci in gi.compute_instances:
            if (ci.profile_id, ci.placement) in missing:
                missing.remove((ci.profile_id, ci.placement))
            elif created is None or (gi.placement, ci.profile_id, ci.placement) in created:
                destroy_cis.append((gi.id, ci.id))
        create_cis.extend((gi.placement, pid, pl) for pid, pl in missing)
    for key, want in wanted.items():
        if key in matched or any(_overlap(want.placement, p) for p in occupied):
            continue
        create_gis.append(key)
        create_cis.extend(
            (want.placement, ci.profile_id, ci.placement) for ci in want.compute_instances
        )
    return GpuActions(tuple(destroy_cis), tuple(destroy_gis), tuple(create_gis), tuple(create_cis))


def foreign_instances(
    now: GpuState, before: GpuState, created: frozenset[CreatedKey] | None
) -> list[str]:
    """Instances on ``now`` that ``before`` lacks and that the run did not create: a rollback
    leaves them alone (the first read missed them, or someone else made them)."""
    if created is None:
        return []
    wanted = {(gi.profile_id, gi.placement): gi for gi in before.gpu_instances} if before.mig_enabled else {}
    found = []
    for gi in now.gpu_instances:
        want = wanted.get((gi.profile_id, gi.placement))
        if want is None:
            if (gi.profile_id, gi.placement) not in created:
                found.append(f"GPU instance {gi_text(gi)}")
            continue
        had = [(ci.profile_id, ci.placement) for ci in want.compute_instances]
        for ci in gi.compute_instances:
            if (ci.profile_id, ci.placement) in had:
                had.remove((ci.profile_id, ci.placement))
            elif (gi.placement, ci.profile_id, ci.placement) not in created:
                found.append(f"compute instance {ci.profile}@{ci.start}:{ci.size} in {gi_text(gi)}")
    return found


def _overlap(a: Placement, b: Placement) -> bool:
    return a.start < b.start + b.size and b.start < a.start + a.size


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
    if gpu.unknown:
        # A fact behind a failed read is unknown; an unknown never matches.
        return False, "its state is unknown: " + "; ".join(gpu.unknown)
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
    have = gpu.device_counts()
    if have != target.plan.desired_counts:
        return False, f"has {_counts_text(have)}, wanted {_counts_text(target.plan.desired_counts)}"
    orphans = gpu.orphan_instances()
    if orphans:
        return False, "GPU instances without compute instances: " + ", ".join(
            gi_text(gi) for gi in orphans
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
