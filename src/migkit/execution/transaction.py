"""The per-GPU transaction: carry out a GPU's actions in four bulk calls, journaling each
success, and undo the journal when a step fails (the previous instances come back at their
previous placements)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from migkit.errors import NvmlError
from migkit.execution.actions import GpuActions
from migkit.execution.report import gi_text
from migkit.models import GpuInstance, GpuState, Placement
from migkit.nvml.node import (
    ComputeInstanceRef,
    ComputeInstanceRequest,
    GpuInstanceRef,
    GpuInstanceRequest,
    NodeLike,
)

__all__ = ["Journal", "StepFailed", "execute_gpu", "rollback_gpu"]


class StepFailed(Exception):
    def __init__(self, error: NvmlError | None, what: str) -> None:
        self.error = error
        self.what = what
        super().__init__(what)


@attrs.define
class Journal:
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
            raise StepFailed(result.error, describe(result))


def execute_gpu(node: NodeLike, gpu: GpuState, actions: GpuActions) -> Journal:
    """Carry out ``actions`` on ``gpu`` in four bulk calls; raise StepFailed on the first error.

    The exception carries the journal of what was done before the failure."""
    journal = Journal()
    try:
        return _execute(node, gpu, actions, journal)
    except StepFailed as failure:
        failure.journal = journal  # type: ignore[attr-defined]
        raise


def _execute(node: NodeLike, gpu: GpuState, actions: GpuActions, journal: Journal) -> Journal:
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
            lambda r: f"destroying GPU instance {gi_text(gis[r.request.gpu_instance])}",
            lambda r: journal.destroyed_gis.append(gis[r.request.gpu_instance]),
        )
    new_ids: dict[Placement, int] = {}
    if actions.create_gis:
        names = {p.id: p.name for p in gpu.profiles}
        gi_results = node.create_gpu_instances(
            [GpuInstanceRequest(g, pid, placement) for pid, placement in actions.create_gis],
            stop_on_error=True,
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
        _check(
            ci_results,
            lambda r: (
                f"creating compute instance (profile {r.request.profile_id}) at {r.request.placement} "
                f"in GPU instance {r.request.gpu_instance}"
            ),
            lambda r: journal.created_cis.append((r.request.gpu_instance, r.compute_instance)),
        )
    return journal


def rollback_gpu(node: NodeLike, gpu: GpuState, journal: Journal) -> list[str]:
    """Undo a journal: the GPU's previous instances come back at their previous placements.

    Returns the problems met (empty when the previous geometry is back)."""
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
        recreated = node.create_gpu_instances(
            [GpuInstanceRequest(g, gi.profile_id, gi.placement) for gi in journal.destroyed_gis]
        )
        for gi, r in zip(journal.destroyed_gis, recreated, strict=True):
            if r.ok and r.gpu_instance is not None:
                ids[gi.id] = r.gpu_instance
        note(recreated, "re-creating a GPU instance")
    if journal.destroyed_cis:
        requests = []
        for gi, ci in journal.destroyed_cis:
            now = ids.get(gi.id, gi.id if gi not in journal.destroyed_gis else None)
            if now is not None:
                requests.append(ComputeInstanceRequest(g, now, ci.profile_id, ci.placement))
        note(node.create_compute_instances(requests), "re-creating a compute instance")
    return problems
