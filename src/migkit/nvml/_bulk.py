"""The bulk changes: each batch of requests is one call into the shim, one result per item.

The shim refuses every item before any NVML call when ``MIGKIT_READ_ONLY`` is set; this module
checks it first too, so that the refusal is a :class:`~migkit.errors.ReadOnlyError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import attrs

from migkit.errors import NvmlError, ReadOnlyError
from migkit.models import Placement
from migkit.nvml._decode import interned_placement
from migkit.nvml._library import (
    READ_ONLY_ENV,
    STATUS_NOT_ATTEMPTED,
    STATUS_READ_ONLY,
    UNKNOWN_MODE,
    ffi,
    lib,
    nvml_error,
    read_only,
)


@attrs.frozen
class GpuInstanceRequest:
    """Create a GPU instance of profile ``profile_id`` at ``placement`` on GPU ``gpu``."""

    gpu: int
    profile_id: int
    placement: Placement


@attrs.frozen
class ComputeInstanceRequest:
    """Create a compute instance in GPU instance ``gpu_instance`` (its id) of GPU ``gpu``.

    ``placement`` counts compute slices inside the GPU instance; ``None`` lets the driver
    choose (``nvmlGpuInstanceCreateComputeInstance``).
    """

    gpu: int
    gpu_instance: int
    profile_id: int
    placement: Placement | None = None


@attrs.frozen
class GpuInstanceRef:
    """GPU instance ``gpu_instance`` (its id) of GPU ``gpu``."""

    gpu: int
    gpu_instance: int


@attrs.frozen
class ComputeInstanceRef:
    """Compute instance ``compute_instance`` of GPU instance ``gpu_instance`` of GPU ``gpu``."""

    gpu: int
    gpu_instance: int
    compute_instance: int


@attrs.frozen
class MigModeRequest:
    """Set GPU ``gpu``'s MIG mode to ``mode`` (0 disabled, 1 enabled)."""

    gpu: int
    mode: int


@attrs.frozen(eq=False)
class _Result:
    status: int  # NVML return code; STATUS_NOT_ATTEMPTED when skipped after a failure
    error: NvmlError | None

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def attempted(self) -> bool:
        return self.status != STATUS_NOT_ATTEMPTED


@attrs.frozen(eq=False)
class _CreateResult(_Result):
    """What a create leaves: where the new instance sits, and whether it exists at all."""

    placement: Placement | None = attrs.field(default=None, kw_only=True)
    created: bool = attrs.field(default=False, kw_only=True)


@attrs.frozen(eq=False)
class GpuInstanceResult(_CreateResult):
    """Outcome of one :class:`GpuInstanceRequest`; ``gpu_instance`` is the new GI's id.

    ``created`` is true once NVML created the instance, also when reading it back failed
    afterwards (``ok`` false, ``gpu_instance`` unknown): it exists, so find it in a fresh
    snapshot rather than take it for never made.
    """

    request: GpuInstanceRequest
    gpu_instance: int | None = None


@attrs.frozen(eq=False)
class ComputeInstanceResult(_CreateResult):
    """Outcome of one :class:`ComputeInstanceRequest`; ``compute_instance`` is the new id.

    ``created`` as for :class:`GpuInstanceResult`: true once the compute instance exists,
    even when reading it back failed.
    """

    request: ComputeInstanceRequest
    compute_instance: int | None = None


@attrs.frozen(eq=False)
class DestroyResult(_Result):
    """Outcome of destroying one GPU or compute instance."""

    request: GpuInstanceRef | ComputeInstanceRef


@attrs.frozen(eq=False)
class MigModeResult(_Result):
    """Outcome of one :class:`MigModeRequest`.

    ``activation_status`` is NVML's separate activation status (0, or e.g. RESET_REQUIRED /
    IN_USE when the new mode is pending); ``mig_mode`` / ``pending_mig_mode`` are read back
    after the call (``None`` when they could not be read).
    """

    request: MigModeRequest
    activation_status: int = 0
    activation_error: NvmlError | None = None
    mig_mode: int | None = None
    pending_mig_mode: int | None = None


_R = TypeVar("_R")


def _refuse_if_read_only(call: str, n: int) -> None:
    if read_only():
        raise ReadOnlyError(f"{READ_ONLY_ENV} is set: refusing {n} {call} call{'s' if n != 1 else ''}")


@attrs.frozen
class _Batch:
    """One bulk operation of the shim: its C function, item type and the NVML call it makes."""

    fn: Any
    ctype: str
    call: str


_CREATE_GPU_INSTANCES = _Batch(
    lib.shim_create_gpu_instances, "shim_gi_create_t", "nvmlDeviceCreateGpuInstanceWithPlacement"
)
_CREATE_COMPUTE_INSTANCES = _Batch(
    lib.shim_create_compute_instances, "shim_ci_create_t", "nvmlGpuInstanceCreateComputeInstanceWithPlacement"
)
_DESTROY_COMPUTE_INSTANCES = _Batch(lib.shim_destroy_compute_instances, "shim_ci_ref_t", "nvmlComputeInstanceDestroy")
_DESTROY_GPU_INSTANCES = _Batch(lib.shim_destroy_gpu_instances, "shim_gi_ref_t", "nvmlGpuInstanceDestroy")
_SET_MIG_MODE = _Batch(lib.shim_set_mig_mode, "shim_mig_mode_t", "nvmlDeviceSetMigMode")


def _run_bulk(
    batch: _Batch,
    requests: Sequence[Any],
    stop_on_error: bool,
    fill: Callable[[Any, Any], None],
    result: Callable[[Any, Any, NvmlError | None], _R],
) -> tuple[_R, ...]:
    fn, ctype, call = batch.fn, batch.ctype, batch.call
    if not requests:
        return ()
    _refuse_if_read_only(call, len(requests))
    items = ffi.new(f"{ctype}[]", len(requests))
    for item, request in zip(items, requests, strict=True):
        fill(item, request)
    if fn(items, len(requests), 1 if stop_on_error else 0) == STATUS_READ_ONLY:
        _refuse_if_read_only(call, len(requests))
        raise ReadOnlyError(f"{READ_ONLY_ENV} is set: the shim refused {call}")
    out: list[_R] = []
    for item, request in zip(items, requests, strict=True):
        error = None
        if item.status > 0:
            failed = ffi.string(item.call).decode() if item.call != ffi.NULL else call
            error = nvml_error(item.status, failed, f"GPU {request.gpu}")
        out.append(result(item, request, error))
    return tuple(out)


def create_gpu_instances(
    requests: Iterable[GpuInstanceRequest], *, stop_on_error: bool = False
) -> tuple[GpuInstanceResult, ...]:
    """Create GPU instances at explicit placements, in order, in one C call."""

    def fill(item: Any, r: GpuInstanceRequest) -> None:
        item.device, item.profile_id = r.gpu, r.profile_id
        item.start, item.size = r.placement.start, r.placement.size

    def result(item: Any, r: GpuInstanceRequest, error: NvmlError | None) -> GpuInstanceResult:
        if item.status != 0:
            return GpuInstanceResult(item.status, error, r, created=bool(item.created))
        placement = interned_placement(item.start, item.size)
        return GpuInstanceResult(0, None, r, item.gi_id, placement=placement, created=True)

    return _run_bulk(_CREATE_GPU_INSTANCES, list(requests), stop_on_error, fill, result)


def create_compute_instances(
    requests: Iterable[ComputeInstanceRequest], *, stop_on_error: bool = False
) -> tuple[ComputeInstanceResult, ...]:
    """Create compute instances (by GI id), in order, in one C call."""

    def fill(item: Any, r: ComputeInstanceRequest) -> None:
        item.device, item.gi_id, item.profile_id = r.gpu, r.gpu_instance, r.profile_id
        if r.placement is not None:
            item.start, item.size = r.placement.start, r.placement.size

    def result(item: Any, r: ComputeInstanceRequest, error: NvmlError | None) -> ComputeInstanceResult:
        if item.status != 0:
            return ComputeInstanceResult(item.status, error, r, created=bool(item.created))
        placement = interned_placement(item.start, item.size) if item.size else None
        return ComputeInstanceResult(0, None, r, item.ci_id, placement=placement, created=True)

    return _run_bulk(_CREATE_COMPUTE_INSTANCES, list(requests), stop_on_error, fill, result)


def _destroyed(item: Any, request: ComputeInstanceRef | GpuInstanceRef, error: NvmlError | None) -> DestroyResult:
    return DestroyResult(item.status, error, request)


def destroy_compute_instances(
    refs: Iterable[ComputeInstanceRef], *, stop_on_error: bool = False
) -> tuple[DestroyResult, ...]:
    """Destroy compute instances, in order, in one C call."""

    def fill(item: Any, r: ComputeInstanceRef) -> None:
        item.device, item.gi_id, item.ci_id = r.gpu, r.gpu_instance, r.compute_instance

    return _run_bulk(_DESTROY_COMPUTE_INSTANCES, list(refs), stop_on_error, fill, _destroyed)


def destroy_gpu_instances(refs: Iterable[GpuInstanceRef], *, stop_on_error: bool = False) -> tuple[DestroyResult, ...]:
    """Destroy GPU instances (their compute instances must be gone), in one C call."""

    def fill(item: Any, r: GpuInstanceRef) -> None:
        item.device, item.gi_id = r.gpu, r.gpu_instance

    return _run_bulk(_DESTROY_GPU_INSTANCES, list(refs), stop_on_error, fill, _destroyed)


def set_mig_mode(requests: Iterable[MigModeRequest], *, stop_on_error: bool = False) -> tuple[MigModeResult, ...]:
    """Set MIG modes, in order, in one C call; each result carries the activation status."""

    def fill(item: Any, r: MigModeRequest) -> None:
        item.device, item.mode = r.gpu, r.mode

    def result(item: Any, r: MigModeRequest, error: NvmlError | None) -> MigModeResult:
        activation = int(item.activation_status)
        activation_error = (
            nvml_error(activation, "nvmlDeviceSetMigMode", f"GPU {r.gpu} activation") if activation > 0 else None
        )
        current = None if item.current_mode == UNKNOWN_MODE else int(item.current_mode)
        pending = None if item.pending_mode == UNKNOWN_MODE else int(item.pending_mode)
        return MigModeResult(item.status, error, r, activation, activation_error, current, pending)

    return _run_bulk(_SET_MIG_MODE, list(requests), stop_on_error, fill, result)
