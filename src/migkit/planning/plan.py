"""Per-GPU and per-node plans: what has to change to make a selected config true.

A :class:`GpuPlan` says, for one GPU, the mode change (and whether it needs a GPU reset), the
compute and GPU instances to destroy, the GPU and compute instances to create (each at the
placement the solver chose) and the instances kept. A :class:`NodePlan` collects them for a
node, with GPUs no entry covers listed as not covered. Planning is pure: no NVML, no I/O.

- :func:`plan_node` plans from a snapshot (``GpuState`` per GPU, in PCI order).
- :func:`plan_offline` plans for bundled models, treating each GPU as fresh (MIG disabled,
  no instances) at indices 0..n-1.

Errors: a profile a covered GPU does not offer raises
:class:`~migkit.errors.UnknownProfileError` (naming the file position, GPU and profile); a bad
selection or an explicit non-MIG GPU raises :class:`~migkit.errors.ConfigError`. A request that
does not fit does **not** raise: that GPU's plan carries ``error`` and ``NodePlan.feasible`` is
False (``NodePlan.raise_for_errors()`` turns it into :class:`~migkit.errors.InfeasibleError`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import attrs

from migkit.config import ConfigEntry, MigConfigFile, select
from migkit.errors import InfeasibleError, UnknownProfileError
from migkit.hardware import planning_model
from migkit.models import ARCH_HOPPER, MIG_ENABLED, GpuInstance, GpuModel, GpuState, device_counts
from migkit.names import ProfileCounts, canonical_from_nvml
from migkit.planning.coverage import Coverage, GpuCoverage, effective_specs
from migkit.planning.profiles import resolve
from migkit.planning.solver import (
    Layout,
    PlacedCompute,
    PlacedInstance,
    in_use_by,
    slices_phrase,
    solve,
)

__all__ = [
    "AddCompute",
    "DestroyCompute",
    "DestroyGpuInstance",
    "GpuPlan",
    "NodePlan",
    "plan_gpu",
    "plan_node",
    "plan_offline",
    "render_plan",
]

GpuStatus = Literal["not covered", "skipped", "unchanged", "change", "infeasible"]


@attrs.frozen
class DestroyCompute:
    """A compute instance to destroy (before its GPU instance, if that goes too)."""

    gpu_instance_id: int
    gpu_instance_profile: str
    compute_instance_id: int
    profile: str
    start: int
    size: int


@attrs.frozen
class DestroyGpuInstance:
    """A GPU instance to destroy, after its compute instances."""

    gpu_instance_id: int
    profile: str
    profile_id: int
    start: int
    size: int

    @property
    def mask(self) -> int:
        return ((1 << self.size) - 1) << self.start


@attrs.frozen
class AddCompute:
    """A compute instance to create inside a kept GPU instance."""

    gpu_instance_id: int
    gpu_instance_profile: str
    compute: PlacedCompute


@attrs.frozen
class GpuPlan:
    """What happens to one GPU.

    Steps run in this order: mode change (then a reset where ``reset_required``), destroy
    ``destroy_compute_instances`` then ``destroy_gpu_instances``, create
    ``create_gpu_instances`` (each with its compute instances), then ``add_compute_instances``
    into kept GPU instances. ``kept`` GPU instances stay where they are.
    """

    index: int
    model: str
    product_name: str
    pci_device_id: int
    pci_subsystem_id: int
    status: GpuStatus
    entry_index: int | None = None
    desired_mig_enabled: bool | None = None
    desired_counts: ProfileCounts = attrs.field(factory=ProfileCounts)
    current_mig_enabled: bool = False
    current_counts: ProfileCounts = attrs.field(factory=ProfileCounts)
    mode_change: Literal["enable", "disable"] | None = None
    reset_required: bool = False
    destroy_compute_instances: tuple[DestroyCompute, ...] = ()
    destroy_gpu_instances: tuple[DestroyGpuInstance, ...] = ()
    create_gpu_instances: tuple[PlacedInstance, ...] = ()
    add_compute_instances: tuple[AddCompute, ...] = ()
    kept: tuple[PlacedInstance, ...] = ()
    layout: Layout | None = None
    error: str = ""
    notes: tuple[str, ...] = ()
    bus_id: str = ""
    uuid: str = ""

    @property
    def covered(self) -> bool:
        return self.status not in ("not covered", "skipped")

    @property
    def feasible(self) -> bool:
        return not self.error

    @property
    def changes_anything(self) -> bool:
        return bool(
            self.mode_change
            or self.destroy_compute_instances
            or self.destroy_gpu_instances
            or self.create_gpu_instances
            or self.add_compute_instances
        )

    @property
    def label(self) -> str:
        return f"GPU {self.index} ({self.model}, 0x{self.pci_device_id:08X})"


@attrs.frozen
class NodePlan:
    """Plans for every GPU of a node, in index order, plus warnings."""

    config: str
    gpus: tuple[GpuPlan, ...]
    warnings: tuple[str, ...] = ()

    @property
    def feasible(self) -> bool:
        return all(g.feasible for g in self.gpus)

    @property
    def changes_anything(self) -> bool:
        return any(g.changes_anything for g in self.gpus)

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(f"{g.label}: {g.error}" for g in self.gpus if g.error)

    def raise_for_errors(self) -> None:
        """Raise :class:`InfeasibleError` listing every GPU whose request does not fit."""
        if self.errors:
            raise InfeasibleError("\n".join(self.errors))

    def to_text(self) -> str:
        return _render_text(self)

    def to_json(self) -> str:
        return json.dumps(_node_json(self), indent=2) + "\n"


# ----------------------------------------------------------------------------- planning


def _check_profiles(entry: ConfigEntry, model: GpuModel, label: str) -> list[str]:
    problems = []
    for name in sorted(entry.mig_devices, key=lambda n: entry.profile_location(n)[1] or 0):
        try:
            resolve(model, name)
        except UnknownProfileError as err:
            file, line, column = entry.profile_location(name)
            where = ":".join(str(p) for p in (file, line, column) if p is not None)
            problems.append(f"{where + ': ' if where else ''}{label}: {err}")
    return problems


def plan_gpu(
    model: GpuModel,
    coverage: GpuCoverage,
    *,
    mig_enabled: bool = False,
    pending_mig_enabled: bool | None = None,
    instances: Sequence[GpuInstance] = (),
    bus_id: str = "",
    uuid: str = "",
) -> GpuPlan:
    """Plan one GPU of ``model`` whose current state is the given mode and instances.

    Raises :class:`UnknownProfileError` when the effective spec names a profile the GPU does not
    offer; a request that does not fit gives a plan with ``error`` set.
    """
    pending = mig_enabled if pending_mig_enabled is None else pending_mig_enabled
    current_counts = device_counts(instances) if mig_enabled else ProfileCounts()
    base = GpuPlan(
        index=coverage.index,
        model=model.name,
        product_name=model.product_name,
        pci_device_id=model.pci_device_id,
        pci_subsystem_id=model.pci_subsystem_id,
        status="not covered",
        current_mig_enabled=mig_enabled,
        current_counts=current_counts,
        bus_id=bus_id,
        uuid=uuid,
    )
    if coverage.status == "not covered":
        return attrs.evolve(base, notes=("not covered by the selected config; left untouched",))
    entry = coverage.entry
    assert entry is not None
    base = attrs.evolve(
        base,
        entry_index=coverage.entry_index,
        desired_mig_enabled=entry.mig_enabled,
        desired_counts=entry.mig_devices,
    )
    if coverage.status == "skipped":
        return attrs.evolve(
            base,
            status="skipped",
            notes=("does not support MIG; skipped (covered only through devices: all)",),
        )
    if not model.mig_capable:
        return attrs.evolve(
            base, status="unchanged", notes=("does not support MIG; mig-enabled: false holds",)
        )
    problems = _check_profiles(entry, model, base.label)
    if problems:
        raise UnknownProfileError("\n".join(problems))

    desired = entry.mig_enabled
    mode_change: Literal["enable", "disable"] | None = None
    if desired != mig_enabled or desired != pending:
        mode_change = "enable" if desired else "disable"
    reset_required = desired != mig_enabled and model.architecture < ARCH_HOPPER
    base = attrs.evolve(base, mode_change=mode_change, reset_required=reset_required)
    existing = tuple(instances) if mig_enabled else ()

    if not desired:
        busy = [gi for gi in existing if gi.in_use]
        if busy:
            names = "; ".join(f"{_gi_label(gi)} is in use{in_use_by(gi)}" for gi in busy)
            return attrs.evolve(
                base,
                status="infeasible",
                error=f"cannot disable MIG, which destroys every GPU instance: {names}",
            )
        plan = attrs.evolve(base, **_destroy_fields(existing))
        return attrs.evolve(plan, status="change" if plan.changes_anything else "unchanged")

    try:
        layout = solve(model, entry.mig_devices, existing)
    except InfeasibleError as err:
        return attrs.evolve(base, status="infeasible", error=str(err))
    adds = tuple(
        AddCompute(gi.existing_id if gi.existing_id is not None else -1, gi.profile, ci)
        for gi in layout.kept
        for ci in gi.new_compute_instances
    )
    notes: list[str] = []
    if existing and not layout.kept:
        notes.append(
            f"no layout keeps any of the {len(existing)} existing GPU instances; all are recreated"
        )
    elif layout.dropped:
        notes.append(
            f"keeps {len(layout.kept)} of {len(existing)} existing GPU instances "
            f"(the most any layout allows)"
        )
    plan = attrs.evolve(
        base,
        **_destroy_fields(layout.dropped),
        create_gpu_instances=layout.created,
        add_compute_instances=adds,
        kept=layout.kept,
        layout=layout,
        notes=tuple(notes),
    )
    return attrs.evolve(plan, status="change" if plan.changes_anything else "unchanged")


def _gi_label(gi: GpuInstance) -> str:
    return f"GPU instance {gi.id} ({gi.profile}, {slices_phrase(gi.placement.mask)})"


def _destroy_fields(dropped: Iterable[GpuInstance]) -> dict[str, Any]:
    gis = sorted(dropped, key=lambda gi: (gi.start, gi.id))
    return {
        "destroy_compute_instances": tuple(
            DestroyCompute(gi.id, gi.profile, ci.id, canonical_from_nvml(ci.profile), ci.start, ci.size)
            for gi in gis
            for ci in sorted(gi.compute_instances, key=lambda c: (c.start, c.id))
        ),
        "destroy_gpu_instances": tuple(
            DestroyGpuInstance(gi.id, gi.profile, gi.profile_id, gi.start, gi.size) for gi in gis
        ),
    }


def _coverage(
    config_file: MigConfigFile,
    selected: str | None,
    gpus: Sequence[GpuModel | GpuState],
    strict_coverage: bool,
) -> tuple[str, Coverage]:
    chosen = select(config_file, selected)
    return chosen.name, effective_specs(chosen.entries, gpus, strict_coverage=strict_coverage)


def _collect(
    name: str,
    config_file: MigConfigFile,
    coverage: Coverage,
    plans: Iterable[GpuPlan | UnknownProfileError],
) -> NodePlan:
    done: list[GpuPlan] = []
    unknown: list[str] = []
    for item in plans:
        if isinstance(item, UnknownProfileError):
            unknown.append(str(item))
        else:
            done.append(item)
    if unknown:
        raise UnknownProfileError("\n".join(unknown))
    warnings = tuple(str(w) for w in config_file.warnings) + coverage.warnings
    return NodePlan(name, tuple(done), warnings)


def _try(fn: Any, *args: Any, **kwargs: Any) -> GpuPlan | UnknownProfileError:
    try:
        result: GpuPlan = fn(*args, **kwargs)
    except UnknownProfileError as err:
        return err
    return result


def _plan_one(gpu: GpuState | GpuModel, coverage: GpuCoverage) -> GpuPlan | UnknownProfileError:
    if isinstance(gpu, GpuModel):
        return _try(plan_gpu, gpu, coverage)
    return _try(
        plan_gpu,
        planning_model(gpu),
        coverage,
        mig_enabled=gpu.mig_mode == MIG_ENABLED,
        pending_mig_enabled=gpu.pending_mig_mode == MIG_ENABLED,
        instances=gpu.gpu_instances,
        bus_id=gpu.bus_id,
        uuid=gpu.uuid,
    )


def plan_node(
    config_file: MigConfigFile,
    selected: str | None,
    gpus: Sequence[GpuState | GpuModel],
    *,
    strict_coverage: bool = False,
) -> NodePlan:
    """Plan the selected config for a node's GPUs (in PCI order: index = position).

    Each GPU is a snapshot (``GpuState``: planned from its current mode and instances) or a
    bundled model (``GpuModel``: a fresh GPU, MIG disabled, nothing on it), so the same call
    plans a live node and an offline one.
    """
    name, coverage = _coverage(config_file, selected, gpus, strict_coverage)
    plans = (_plan_one(gpu, cov) for gpu, cov in zip(gpus, coverage.gpus, strict=True))
    return _collect(name, config_file, coverage, plans)


plan_offline = plan_node
"""Plan for GPUs of the given models, fresh, at indices 0..n-1 (``plan_node`` with models)."""


# ----------------------------------------------------------------------------- rendering


def render_plan(node_plan: NodePlan, fmt: str = "text") -> str:
    """The plan as text for people (``"text"``) or JSON for tools (``"json"``)."""
    if fmt == "json":
        return node_plan.to_json()
    if fmt == "text":
        return node_plan.to_text()
    raise ValueError(f"unknown plan format {fmt!r} (use text or json)")


def _counts_text(counts: ProfileCounts) -> str:
    return ", ".join(f"{name} x{count}" for name, count in counts.items()) or "no instances"


def _mode_word(enabled: bool | None) -> str:
    return "enabled" if enabled else "disabled"


def _gi_text(gi: PlacedInstance) -> str:
    return (
        f"GPU instance {gi.profile} at {slices_phrase(gi.mask)} "
        f"(placement {gi.start}:{gi.size}, profile ID {gi.profile_id})"
    )


def _ci_text(ci: PlacedCompute) -> str:
    return (
        f"compute instance {ci.profile} at {slices_phrase(ci.placement.mask, 'compute')} "
        f"(placement {ci.start}:{ci.size}, profile ID {ci.profile_id})"
    )


def _render_text(node: NodePlan) -> str:
    count = len(node.gpus)
    lines = [f'Plan for config "{node.config}" ({count} GPU{"" if count == 1 else "s"})']
    for gpu in node.gpus:
        head = f"GPU {gpu.index}: {gpu.model} ({gpu.product_name}, 0x{gpu.pci_device_id:08X})"
        if gpu.status == "not covered":
            lines.append(f"{head}: not covered; left untouched")
            continue
        lines.append(f"{head}: entry {gpu.entry_index}, {gpu.status}")
        if gpu.status == "skipped":
            lines.extend(f"  {note}" for note in gpu.notes)
            continue
        target = (
            f"MIG enabled with {_counts_text(gpu.desired_counts)}"
            if gpu.desired_mig_enabled
            else "MIG disabled"
        )
        lines.append(f"  wants: {target}")
        if gpu.mode_change:
            reset = " (GPU reset required)" if gpu.reset_required else ""
            lines.append(
                f"  MIG mode: {_mode_word(gpu.current_mig_enabled)} -> "
                f"{_mode_word(gpu.mode_change == 'enable')}{reset}"
            )
        for dc in gpu.destroy_compute_instances:
            lines.append(
                f"  destroy compute instance {dc.compute_instance_id} ({dc.profile}) "
                f"of GPU instance {dc.gpu_instance_id}"
            )
        for dg in gpu.destroy_gpu_instances:
            lines.append(
                f"  destroy GPU instance {dg.gpu_instance_id} ({dg.profile}) at "
                f"{slices_phrase(dg.mask)}"
            )
        for gi in gpu.kept:
            cis = ", ".join(ci.profile for ci in gi.compute_instances if ci.kept) or "no CIs"
            lines.append(
                f"  keep GPU instance {gi.existing_id} ({gi.profile}) at "
                f"{slices_phrase(gi.mask)} with {cis}"
            )
        for gi in gpu.create_gpu_instances:
            lines.append(f"  create {_gi_text(gi)}")
            lines.extend(f"    create {_ci_text(ci)}" for ci in gi.compute_instances)
        for add in gpu.add_compute_instances:
            lines.append(
                f"  in GPU instance {add.gpu_instance_id} ({add.gpu_instance_profile}) "
                f"create {_ci_text(add.compute)}"
            )
        if gpu.error:
            lines.append(f"  does not fit: {gpu.error}")
        elif not gpu.changes_anything:
            lines.append("  already as wanted; nothing to do")
        lines.extend(f"  note: {note}" for note in gpu.notes)
    lines.extend(f"warning: {w}" for w in node.warnings)
    if not node.feasible:
        lines.append("result: does not fit")
    elif node.changes_anything:
        lines.append("result: fits")
    else:
        lines.append("result: fits; nothing to change")
    return "\n".join(lines) + "\n"


def _placement_json(start: int, size: int) -> dict[str, int]:
    return {"start": start, "size": size}


def _ci_json(ci: PlacedCompute | PlacedInstance) -> dict[str, Any]:
    return {
        "profile": ci.profile,
        "profile_id": ci.profile_id,
        "placement": _placement_json(ci.start, ci.size),
        "kept": ci.kept,
        "id": ci.existing_id,
    }


def _gi_json(gi: PlacedInstance) -> dict[str, Any]:
    return {
        **_ci_json(gi),
        "compute_instances": [_ci_json(ci) for ci in gi.compute_instances],
    }


def _gpu_json(gpu: GpuPlan) -> dict[str, Any]:
    return {
        "index": gpu.index,
        "model": gpu.model,
        "product_name": gpu.product_name,
        "pci_device_id": f"0x{gpu.pci_device_id:08X}",
        "pci_subsystem_id": f"0x{gpu.pci_subsystem_id:08X}",
        "bus_id": gpu.bus_id,
        "uuid": gpu.uuid,
        "status": gpu.status,
        "entry": gpu.entry_index,
        "feasible": gpu.feasible,
        "changes_anything": gpu.changes_anything,
        "mig_mode": {
            "current": _mode_word(gpu.current_mig_enabled),
            "desired": None
            if gpu.desired_mig_enabled is None
            else _mode_word(gpu.desired_mig_enabled),
            "change": gpu.mode_change,
            "reset_required": gpu.reset_required,
        },
        "current": dict(gpu.current_counts),
        "desired": dict(gpu.desired_counts),
        "destroy": {
            "compute_instances": [
                {
                    "gpu_instance": d.gpu_instance_id,
                    "id": d.compute_instance_id,
                    "profile": d.profile,
                    "placement": _placement_json(d.start, d.size),
                }
                for d in gpu.destroy_compute_instances
            ],
            "gpu_instances": [
                {
                    "id": d.gpu_instance_id,
                    "profile": d.profile,
                    "profile_id": d.profile_id,
                    "placement": _placement_json(d.start, d.size),
                }
                for d in gpu.destroy_gpu_instances
            ],
        },
        "create": {
            "gpu_instances": [_gi_json(gi) for gi in gpu.create_gpu_instances],
            "compute_instances": [
                {"gpu_instance": a.gpu_instance_id, **_ci_json(a.compute)}
                for a in gpu.add_compute_instances
            ],
        },
        "keep": [_gi_json(gi) for gi in gpu.kept],
        "error": gpu.error or None,
        "notes": list(gpu.notes),
    }


def _node_json(node: NodePlan) -> dict[str, Any]:
    return {
        "config": node.config,
        "feasible": node.feasible,
        "changes_anything": node.changes_anything,
        "warnings": list(node.warnings),
        "gpus": [_gpu_json(g) for g in node.gpus],
    }
