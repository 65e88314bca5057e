"""The per-GPU transaction: carry out a GPU's actions in four bulk calls, journaling each
success, and roll the GPU back to the state it had before the apply when a step fails or
the apply is interrupted.

Rollback works from a fresh snapshot, not from the journal: what is on the GPU now is
compared with what was there before (MIG mode included), and only the difference is undone.
An instance whose creation could not be confirmed (the create call made it, then reading
its id failed) is therefore removed like any other, and a GPU whose MIG mode was changed
gets its mode back before its instances are re-created.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from migkit.errors import MigkitError, NvmlError
from migkit.execution.actions import CreatedKey, GpuActions, foreign_instances, restore_actions
from migkit.execution.report import gi_text
from migkit.models import GpuInstance, GpuState, Placement
from migkit.nvml.node import (
    ComputeInstanceRef,
    ComputeInstanceRequest,
    GpuInstanceRef,
    GpuInstanceRequest,
    MigModeRequest,
    NodeLike,
)

__all__ = [
    "Journal",
    "Restoration",
    "StepFailed",
    "execute_gpu",
    "layout_key",
    "restore_gpu",
    "rollback_gpu",
]

StopRequested = Callable[[], bool]


def _never() -> bool:
    return False


class StepFailed(Exception):
    """A step of a GPU's transaction failed, or the apply was interrupted before the next one.

    ``error`` is the NVML error (None when interrupted), ``what`` the step in words,
    ``journal`` what had been done before.
    """

    def __init__(
        self, error: NvmlError | None, what: str, *, interrupted: bool = False
    ) -> None:
        self.error = error
        self.what = what
        self.interrupted = interrupted
        self.journal = Journal()
        super().__init__(what)


@attrs.define
class Journal:
    """What has been done to one GPU (for the report; rollback reads the GPU afresh)."""

    destroyed_cis: list[tuple[GpuInstance, Any]] = attrs.Factory(list)  # (GI, CI) as they were
    destroyed_gis: list[GpuInstance] = attrs.Factory(list)
    created_gis: list[tuple[int, Placement]] = attrs.Factory(list)  # (GI id, placement)
    created_cis: list[tuple[int, int]] = attrs.Factory(list)  # (GI id, CI id)
    # Instances that may exist because of this run: created, or whose create call went
    # through but whose reading back failed (so no id is known). Rollback may remove these.
    maybe_created: set[CreatedKey] = attrs.Factory(set)

    @property
    def empty(self) -> bool:
        return not (self.destroyed_cis or self.destroyed_gis or self.created_gis or self.created_cis)


def _may_exist(result: Any) -> bool:
    """A create result after which the instance exists: it succeeded, or NVML created it and
    reading it back failed (``created`` without an id)."""
    return bool(result.ok or result.created)


def _check(
    results: Sequence[Any], describe: Callable[[Any], str], on_ok: Callable[[Any], None]
) -> None:
    for result in results:
        if result.ok:
            on_ok(result)
        elif result.attempted:
            raise StepFailed(result.error, describe(result))


def execute_gpu(
    node: NodeLike, gpu: GpuState, actions: GpuActions, *, stop: StopRequested = _never
) -> Journal:
    """Carry out ``actions`` on ``gpu`` in four bulk calls; raise StepFailed on the first error.

    ``stop`` is asked before each bulk call: once it answers True no further call is
    started and StepFailed(interrupted=True) is raised. The exception carries the journal
    of what was done before."""
    journal = Journal()
    try:
        return _execute(node, gpu, actions, journal, stop)
    except StepFailed as failure:
        failure.journal = journal
        raise


def _execute(
    node: NodeLike, gpu: GpuState, actions: GpuActions, journal: Journal, stop: StopRequested
) -> Journal:
    def checkpoint(step: str) -> None:
        if stop():
            raise StepFailed(None, f"interrupted before {step}", interrupted=True)

    gis = {gi.id: gi for gi in gpu.gpu_instances}
    cis = {(gi.id, ci.id): ci for gi in gpu.gpu_instances for ci in gi.compute_instances}
    g = gpu.index
    if actions.destroy_cis:
        checkpoint("destroying compute instances")
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
        checkpoint("destroying GPU instances")
        results = node.destroy_gpu_instances(
            [GpuInstanceRef(g, gi) for gi in actions.destroy_gis], stop_on_error=True
        )
        _check(
            results,
            lambda r: f"destroying GPU instance {gi_text(gis[r.request.gpu_instance])}",
            lambda r: journal.destroyed_gis.append(gis[r.request.gpu_instance]),
        )
    new_ids: dict[Placement, int] = {}
    if actions.create_gis:
        checkpoint("creating GPU instances")
        names = {p.id: p.name for p in gpu.profiles}
        gi_results = node.create_gpu_instances(
            [GpuInstanceRequest(g, pid, placement) for pid, placement in actions.create_gis],
            stop_on_error=True,
        )
        journal.maybe_created.update(
            key for key, r in zip(actions.create_gis, gi_results, strict=True) if _may_exist(r)
        )

        def created(r: Any) -> None:
            new_ids[r.request.placement] = r.gpu_instance
            journal.created_gis.append((r.gpu_instance, r.request.placement))

        _check(
            gi_results,
            lambda r: (
                f"creating GPU instance {names.get(r.request.profile_id, r.request.profile_id)} "
                f"at {r.request.placement}"
            ),
            created,
        )
    if actions.create_cis:
        checkpoint("creating compute instances")
        placement_ids = {
            gi.placement: gi.id for gi in gpu.gpu_instances if gi.id not in actions.destroy_gis
        }
        placement_ids.update(new_ids)
        ci_results = node.create_compute_instances(
            [
                ComputeInstanceRequest(g, placement_ids[gi_pl], pid, ci_pl)
                for gi_pl, pid, ci_pl in actions.create_cis
            ],
            stop_on_error=True,
        )
        journal.maybe_created.update(
            key for key, r in zip(actions.create_cis, ci_results, strict=True) if _may_exist(r)
        )
        _check(
            ci_results,
            lambda r: (
                f"creating compute instance (profile {r.request.profile_id}) at {r.request.placement} "
                f"in GPU instance {r.request.gpu_instance}"
            ),
            lambda r: journal.created_cis.append((r.request.gpu_instance, r.compute_instance)),
        )
    return journal


# --------------------------------------------------------------------------- rollback


def layout_key(gpu: GpuState) -> tuple[Any, ...]:
    """What rollback must bring back: the MIG mode (current and pending) and every instance
    by profile and placement (ids may differ after a re-creation)."""
    instances = Counter(
        (
            gi.profile_id,
            gi.start,
            gi.size,
            tuple(sorted((ci.profile_id, ci.start, ci.size) for ci in gi.compute_instances)),
        )
        for gi in (gpu.gpu_instances if gpu.mig_enabled else ())
    )
    return (gpu.mig_mode, gpu.pending_mig_mode, sorted(instances.items()))


@attrs.frozen
class Restoration:
    """How a rollback ended: ``ok`` when a fresh read shows the GPU as it was before."""

    ok: bool
    problems: tuple[str, ...] = ()
    state: GpuState | None = None  # the GPU as last read (None when it could not be read)


def _read_gpu(node: NodeLike, index: int, problems: list[str]) -> GpuState | None:
    try:
        gpus = node.snapshot()
    except MigkitError as err:
        problems.append(f"reading the GPU: {err}")
        return None
    gpu = next((g for g in gpus if g.index == index), None)
    if gpu is None:
        problems.append("reading the GPU: it is gone")
        return None
    if gpu.unknown:
        problems.append("reading the GPU: " + "; ".join(gpu.unknown))
    return gpu


def _note(problems: list[str], results: Sequence[Any], what: str) -> None:
    problems.extend(f"{what}: {r.error}" for r in results if not r.ok and r.attempted)


def restore_gpu(
    node: NodeLike,
    before: GpuState,
    *,
    allow_reset: bool = True,
    attempts: int = 6,
    created: frozenset[CreatedKey] | None = None,
) -> Restoration:
    """Bring one GPU back to ``before`` (mode and instances at their placements).

    Each round reads the GPU afresh and does the next thing that differs: remove instances
    that were not there before, then set the MIG mode back (resetting the GPU when the
    change is pending and ``allow_reset``), then re-create what is missing. A read with an
    unknown fact is never acted on; the round is retried. With ``created`` (what the run may
    have created, :attr:`Journal.maybe_created`), an instance that ``before`` lacks is removed
    only if the run may have made it: anything else is left alone and reported, since
    ``before`` itself may have missed it. Returns ``ok`` only when a fresh read shows the GPU
    as it was."""
    problems: list[str] = []
    want = layout_key(before)
    for _ in range(attempts):
        now = _read_gpu(node, before.index, problems)
        if now is None or now.unknown:
            continue
        if layout_key(now) == want:
            return Restoration(True, tuple(problems), now)
        try:
            if now.mig_enabled and not before.mig_enabled and now.gpu_instances:
                # MIG was off before, so every instance now was made after that read.
                _apply_best_effort(node, now, restore_actions(now, None), problems)
            elif (now.mig_mode, now.pending_mig_mode) != (before.mig_mode, before.pending_mig_mode):
                (result,) = node.set_mig_mode([MigModeRequest(now.index, before.mig_mode)])
                if not result.ok:
                    problems.append(f"setting the MIG mode back: {result.error}")
                elif (
                    allow_reset
                    and result.mig_mode is not None
                    and result.mig_mode != before.mig_mode
                ):
                    node.reset_gpus([now])
            else:
                foreign = foreign_instances(now, before, created)
                _apply_best_effort(node, now, restore_actions(now, before, created), problems)
                if foreign:
                    problems.append(
                        "left alone, as this run did not create them: " + ", ".join(foreign)
                    )
                    break
        except MigkitError as err:
            problems.append(str(err))
    now = _read_gpu(node, before.index, problems)
    ok = now is not None and not now.unknown and layout_key(now) == want
    return Restoration(ok, tuple(dict.fromkeys(problems)), now)


def _apply_best_effort(
    node: NodeLike, gpu: GpuState, actions: GpuActions, problems: list[str]
) -> None:
    """The four bulk calls without stopping at a failure (each failure noted)."""
    g = gpu.index
    if actions.destroy_cis:
        _note(
            problems,
            node.destroy_compute_instances(
                [ComputeInstanceRef(g, gi, ci) for gi, ci in actions.destroy_cis]
            ),
            "removing a compute instance",
        )
    if actions.destroy_gis:
        _note(
            problems,
            node.destroy_gpu_instances([GpuInstanceRef(g, gi) for gi in actions.destroy_gis]),
            "removing a GPU instance",
        )
    ids = {gi.placement: gi.id for gi in gpu.gpu_instances if gi.id not in actions.destroy_gis}
    if actions.create_gis:
        results = node.create_gpu_instances(
            [GpuInstanceRequest(g, pid, placement) for pid, placement in actions.create_gis]
        )
        for r in results:
            if r.ok and r.gpu_instance is not None:
                ids[r.request.placement] = r.gpu_instance
        _note(problems, results, "re-creating a GPU instance")
    requests = [
        ComputeInstanceRequest(g, ids[gi_pl], pid, ci_pl)
        for gi_pl, pid, ci_pl in actions.create_cis
        if gi_pl in ids
    ]
    if requests:
        _note(problems, node.create_compute_instances(requests), "re-creating a compute instance")


def rollback_gpu(node: NodeLike, gpu: GpuState, journal: Journal | None = None) -> list[str]:
    """Bring ``gpu`` back to the state of its snapshot ``gpu``; the problems met (empty when a
    fresh read shows it as it was). The GPU is read afresh; ``journal`` (of the failed run)
    limits removals to what that run may have created."""
    created = None if journal is None else frozenset(journal.maybe_created)
    result = restore_gpu(node, gpu, created=created)
    if result.ok:
        return []
    return list(result.problems) or ["the GPU is not back at its previous layout"]
