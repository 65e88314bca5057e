"""A node: the GPUs one libnvidia-ml sees, read and changed through bulk calls.

>>> with open_node(simulate="2xh100-80gb") as node:      # doctest: +SKIP
...     gpus = node.snapshot()                            # one C call for the whole node
...     node.set_mig_mode([MigModeRequest(0, 1)])
...     node.create_gpu_instances([GpuInstanceRequest(0, 9, Placement(4, 4))])

Every read is a :meth:`Node.snapshot` (one shim call); every change is a batch (one shim call
per batch) that returns one result per item, in order. Nothing here decides *what* to change:
that is the planner's job.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Generic, Protocol, TypeVar, overload

from migkit.errors import MigkitError, ResetFailed
from migkit.models import GpuState
from migkit.nvml import _binding as _nvml
from migkit.nvml._binding import STATUS_NOT_ATTEMPTED, STATUS_READ_ONLY
from migkit.nvml._bulk import (
    ComputeInstanceRef,
    ComputeInstanceRequest,
    ComputeInstanceResult,
    DestroyResult,
    GpuInstanceRef,
    GpuInstanceRequest,
    GpuInstanceResult,
    MigModeRequest,
    MigModeResult,
)

__all__ = [
    "STATUS_NOT_ATTEMPTED",
    "STATUS_READ_ONLY",
    "ComputeInstanceRef",
    "ComputeInstanceRequest",
    "ComputeInstanceResult",
    "DestroyResult",
    "GpuInstanceRef",
    "GpuInstanceRequest",
    "GpuInstanceResult",
    "MigModeRequest",
    "MigModeResult",
    "Node",
    "NodeLike",
    "open_node",
]

STATE_ENV = "MIGKIT_SIM_STATE"


class NodeLike(Protocol):
    """What the layers above need of a node: a snapshot, the bulk changes and a GPU reset.

    :class:`Node` is the implementation; tests may wrap one (to inject faults, count calls).
    """

    @property
    def state_file(self) -> str | None:
        """The simulated node's state file; None on real hardware."""
        ...

    @property
    def is_simulated(self) -> bool: ...

    def snapshot(self, *, tables: bool = True) -> tuple[GpuState, ...]: ...

    def create_gpu_instances(
        self, requests: Iterable[GpuInstanceRequest], /, *, stop_on_error: bool = False
    ) -> tuple[GpuInstanceResult, ...]:
        """Create GPU instances at their explicit placements, in order, in one batch.

        With ``stop_on_error`` the items after the first failure are not attempted (``status
        == STATUS_NOT_ATTEMPTED``). Under ``MIGKIT_READ_ONLY`` every batch raises
        :class:`~migkit.errors.ReadOnlyError` before any NVML call.
        """
        ...

    def create_compute_instances(
        self, requests: Iterable[ComputeInstanceRequest], /, *, stop_on_error: bool = False
    ) -> tuple[ComputeInstanceResult, ...]:
        """Create compute instances in existing GPU instances (named by GI id)."""
        ...

    def destroy_compute_instances(
        self, refs: Iterable[ComputeInstanceRef], /, *, stop_on_error: bool = False
    ) -> tuple[DestroyResult, ...]: ...

    def destroy_gpu_instances(
        self, refs: Iterable[GpuInstanceRef], /, *, stop_on_error: bool = False
    ) -> tuple[DestroyResult, ...]:
        """Destroy GPU instances; their compute instances must be destroyed first (an
        earlier batch, or earlier in the same apply)."""
        ...

    def set_mig_mode(
        self, requests: Iterable[MigModeRequest], /, *, stop_on_error: bool = False
    ) -> tuple[MigModeResult, ...]:
        """Set MIG modes; each result has the activation status and the modes read back."""
        ...

    def reset_gpus(self, gpus: Sequence[GpuState]) -> None:
        """Reset exactly these GPUs so that a pending MIG mode takes effect; raises
        :class:`~migkit.errors.ResetFailed` with the reason."""
        ...


_Item = TypeVar("_Item", contravariant=True)
_Result = TypeVar("_Result", covariant=True)


class BatchCall(Protocol[_Item, _Result]):
    """One bulk operation: its items in, one result per item out, in order."""

    def __call__(self, items: Iterable[_Item], /, *, stop_on_error: bool = False) -> tuple[_Result, ...]: ...


class _Batch(Generic[_Item, _Result]):
    """A bulk operation as a method of :class:`Node`: refused once the node is closed."""

    def __init__(self, call: BatchCall[_Item, _Result]) -> None:
        self._call = call
        self.__doc__ = call.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, node: None, owner: type) -> _Batch[_Item, _Result]: ...

    @overload
    def __get__(self, node: Node, owner: type | None = None) -> BatchCall[_Item, _Result]: ...

    def __get__(
        self, node: Node | None, owner: type | None = None
    ) -> _Batch[_Item, _Result] | BatchCall[_Item, _Result]:
        if node is None:
            return self
        node._check_open()
        return self._call


class Node:
    """An open NVML session on this machine's GPUs, or on a simulated node.

    Use it as a context manager (or call :meth:`close`): closing releases NVML and removes a
    temporary simulated node. Made by :func:`open_node`.
    """

    def __init__(
        self,
        library_path: str,
        *,
        is_simulated: bool,
        state_file: str | None,
        cleanup: contextlib.ExitStack,
        bundled_model: _nvml.BundledModel | None = None,
    ) -> None:
        self._library_path = library_path
        self._is_simulated = is_simulated
        self._state_file = state_file
        self._cleanup = cleanup
        self._closed = False
        self._lock = threading.Lock()
        self._snapshotter = _nvml.Snapshotter(_nvml.device_count(), bundled_model)

    # ------------------------------------------------------------------ identity

    @property
    def library_path(self) -> str:
        """Path of the libnvidia-ml (or simulator) this node talks to."""
        return self._library_path

    @property
    def is_simulated(self) -> bool:
        return self._is_simulated

    @property
    def state_file(self) -> str | None:
        """The simulated node's state file; ``None`` for real hardware."""
        return self._state_file

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Release NVML (``nvmlShutdown``) and remove a temporary simulated node. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._cleanup.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise MigkitError("this node is closed")

    # ------------------------------------------------------------------ reading

    def snapshot(self, *, tables: bool = True) -> tuple[GpuState, ...]:
        """Every GPU with its profiles, placements, instances and MIG devices, read in one call
        into the shim, in **PCI bus order**.

        The profile tables never change while a GPU's UUID and MIG mode stay the same, so
        they are read once per GPU while the node is open; every snapshot reads each GPU's
        UUID, MIG mode, instances and processes afresh. ``tables=False`` is for questions
        about MIG modes alone (``assert`` of ``all-disabled``): a GPU with MIG off then comes
        without profiles (``profiles == ()``) unless they were read already, and costs two
        NVML reads. Plan from a snapshot taken with ``tables=True``.

        A GPU's position in the tuple is what a config's ``devices: [i]`` means (as in
        nvidia-mig-parted, which numbers GPUs by PCI address); ``GpuState.index`` is its NVML
        index, which every NVML call uses. The two agree on ordinary systems.

        A read that fails leaves a fact unknown and is listed in that GPU's
        ``GpuState.unknown`` (the call, what it was for, the error) instead of a default value:
        the instances, compute instances and their in-use state, a profile table that the GPU's
        bundled table says should answer. Raises :class:`~migkit.errors.NvmlError` naming the
        GPU and the NVML call when the GPU itself cannot be read (its handle, identity or MIG
        mode).
        """
        self._check_open()
        states = self._snapshotter.snapshot(tables=tables)
        _raise_state_error(self._state_file, self._library_path)
        ordered = tuple(sorted(states, key=_pci_order))
        return states if all(a is b for a, b in zip(ordered, states, strict=True)) else ordered

    # ------------------------------------------------------------------ changing

    # Each batch is one shim call over all its items, in order; each item gets its own result.
    # With ``stop_on_error`` the items after the first failure are not attempted (``status ==
    # STATUS_NOT_ATTEMPTED``); under ``MIGKIT_READ_ONLY`` a batch raises
    # :class:`~migkit.errors.ReadOnlyError` before any NVML call.
    create_gpu_instances = _Batch(_nvml.create_gpu_instances)
    create_compute_instances = _Batch(_nvml.create_compute_instances)
    destroy_compute_instances = _Batch(_nvml.destroy_compute_instances)
    destroy_gpu_instances = _Batch(_nvml.destroy_gpu_instances)
    set_mig_mode = _Batch(_nvml.set_mig_mode)

    def reset_gpus(self, gpus: Sequence[GpuState]) -> None:
        """Reset exactly these GPUs so that a pending MIG mode takes effect.

        A simulated node's GPUs are reset in its state file; real GPUs with ``nvidia-smi -r``
        by bus id. Raises :class:`~migkit.errors.ResetFailed` with the reason.
        """
        self._check_open()
        if not gpus:
            return
        if self._is_simulated and self._state_file:
            from migkit import simulator

            try:
                simulator.reset_gpus(self._state_file, [g.index for g in gpus])
            except simulator.SimulatorError as err:
                raise ResetFailed(f"GPU reset failed: {err}") from None
            return
        smi = shutil.which("nvidia-smi")
        if smi is None:
            raise ResetFailed(
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
            raise ResetFailed(f"nvidia-smi -r failed (exit {proc.returncode}): {output}")

    def __repr__(self) -> str:
        kind = f"simulated, state {self._state_file}" if self._is_simulated else "hardware"
        return f"<migkit.Node {self._library_path} ({kind})>"


def _pci_order(gpu: GpuState) -> tuple[int, ...]:
    """``0000:18:00.0`` -> (0, 0x18, 0, 0): domain, bus, device, function, compared as numbers."""
    try:
        domain, bus, rest = gpu.bus_id.split(":")
        device, function = rest.split(".")
        return (int(domain, 16), int(bus, 16), int(device, 16), int(function, 16), gpu.index)
    except ValueError:
        return (1 << 32, 0, 0, 0, gpu.index)  # unparsable bus ids sort last, by NVML index


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _raise_state_error(state_file: str | None, library: str) -> None:
    """A simulated node whose state file the library could not use (at init, or since: reads
    then answer from the last good state) raises SimulatorStateError naming file and line."""
    if state_file is None:
        return
    from migkit import simulator

    error = simulator.state_error(state_file, library)
    if error is not None:
        raise error


def open_node(
    nvml_library: str | os.PathLike[str] | None = None,
    simulate: str | None = None,
    sim_state: str | os.PathLike[str] | None = None,
    *,
    bundled_model: _nvml.BundledModel | None = None,
) -> Node:
    """Open the node's GPUs through libnvidia-ml, or a simulated node.

    - ``open_node()``: the real driver (``MIGKIT_NVML_LIBRARY``, else ``libnvidia-ml.so.1``
      and the usual locations); :class:`~migkit.errors.NvmlLibraryNotFound` lists every path
      tried.
    - ``open_node(simulate="8xh100-80gb")``: a fresh simulated node in a temporary state file,
      removed on close. With ``sim_state=FILE`` too, the node is written to ``FILE`` and kept.
    - ``open_node(sim_state=FILE)``: the existing simulated node in ``FILE``.

    ``nvml_library`` names the library explicitly (for a simulated node too). One process
    holds one libnvidia-ml: the first node opened decides which.

    ``bundled_model`` looks a GPU up in the bundled hardware tables by (PCI device id, memory
    MiB): it names each GPU's model (``GpuState.model_name``) and tells a NOT_SUPPORTED answer
    that means "no MIG here" from one the GPU's table contradicts (an unknown fact). The NVML
    layer does not import the tables itself; :func:`migkit.open_node` passes them.
    """
    cleanup = contextlib.ExitStack()
    try:
        state_file: str | None = None
        if simulate is not None or sim_state is not None:
            from migkit import simulator

            if simulate is not None:
                sim = cleanup.enter_context(simulator.simulate(simulate, state_file=sim_state))
                state_file = sim.state_file
            else:
                assert sim_state is not None
                state_file = os.fspath(sim_state)
                if not os.path.exists(state_file):
                    raise simulator.SimulatorError(f"simulated node state file {state_file} does not exist")
                simulator.check_state_file(state_file)
                cleanup.enter_context(_environment(STATE_ENV, state_file))
            library = _nvml.load(nvml_library if nvml_library is not None else simulator.library_path())
        else:
            library = _nvml.load(nvml_library)
        try:
            _nvml.init()
        except MigkitError:
            _raise_state_error(state_file, library)
            raise
        cleanup.callback(_nvml.shutdown)
        return Node(
            library,
            is_simulated=state_file is not None,
            state_file=state_file,
            cleanup=cleanup,
            bundled_model=bundled_model,
        )
    except BaseException:
        cleanup.close()
        raise
