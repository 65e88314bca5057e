"""Shared test helpers: GPU states built from bundled models, simulated-node probes, a CLI runner.

Importable from every test folder as ``from builders import ...`` (like ``strategies``).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Sequence

import attrs

import migkit
from migkit import cli, simulator
from migkit.hardware import gpu_model
from migkit.models import (
    MIG_DISABLED,
    MIG_ENABLED,
    ComputeInstance,
    GpuInstance,
    GpuModel,
    GpuState,
)

# Every NVML function the simulator counts that changes a GPU (the ones it marks mutating and
# applies MIGKIT_SIM_LATENCY_MS to); tests/test_builders.py checks this against the
# simulator's list of exported functions.
MUTATING_NVML = (
    "nvmlDeviceSetMigMode",
    "nvmlDeviceCreateGpuInstance",
    "nvmlDeviceCreateGpuInstanceWithPlacement",
    "nvmlGpuInstanceDestroy",
    "nvmlGpuInstanceCreateComputeInstance",
    "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
    "nvmlComputeInstanceDestroy",
)
# The simulated ``nvidia-smi -r`` (``simulator.reset_gpus``), counted in the same table.
SIM_RESET = "migkitSimResetGpu"
# Every counted call that changes a simulated node.
MUTATING = (*MUTATING_NVML, SIM_RESET)

# A layout as the builders take it: GPU instances as ``(gi_profile, [ci_profiles])``, in order.
LayoutSpec = Sequence[tuple[str, Sequence[str]]]


def instances_of(model: str | GpuModel, layout: LayoutSpec, index: int = 0) -> tuple[GpuInstance, ...]:
    """GPU instances as NVML reports them for ``layout`` on ``model``.

    GI ``i`` gets id ``i`` and the ``i``-th placement of its profile (wrapping), its compute
    instances are packed from compute slice 0, and each CI carries the values of its MIG device:
    memory of the profile's MIG device, SMs of the compute profile, engines of the GI.
    """
    m = gpu_model(model) if isinstance(model, str) else model
    gis = []
    for gi_id, (gi_name, ci_names) in enumerate(layout):
        p = m.profile(gi_name)
        cis = []
        start = 0
        for ci_id, ci_name in enumerate(ci_names):
            cp = p.compute_profile(ci_name)
            cis.append(
                ComputeInstance(
                    id=ci_id,
                    profile_id=cp.id,
                    profile=cp.name,
                    start=start,
                    size=cp.slice_count,
                    uuid=f"MIG-{index}-{gi_id}-{ci_id}",
                    memory_mib=p.device_memory_mib or p.memory_mib,
                    multiprocessors=cp.multiprocessors,
                    copy_engines=p.copy_engines,
                    decoders=p.decoders,
                    encoders=p.encoders,
                    jpegs=p.jpegs,
                    ofas=p.ofas,
                )
            )
            start += cp.slice_count
        placement = p.placements[gi_id % len(p.placements)]
        gis.append(GpuInstance(gi_id, p.id, p.name, placement.start, placement.size, tuple(cis)))
    return tuple(gis)


def gpu_state(
    model: str | GpuModel,
    index: int = 0,
    *,
    enabled: bool = False,
    pending: bool | None = None,
    instances: Sequence[GpuInstance] = (),
    model_name: str | None = None,
) -> GpuState:
    """The GpuState a snapshot gives for a GPU of ``model`` at NVML index ``index``.

    ``pending`` is the pending MIG mode (default: the current one); ``model_name`` is the
    bundled model the GPU matched (default: ``model``'s name; ``""`` for none).
    """
    m = gpu_model(model) if isinstance(model, str) else model
    mode = MIG_ENABLED if enabled else MIG_DISABLED
    pending_mode = mode if pending is None else (MIG_ENABLED if pending else MIG_DISABLED)
    return GpuState(
        index=index,
        uuid=f"GPU-{index}",
        name=m.product_name,
        pci_device_id=m.pci_device_id,
        pci_subsystem_id=m.pci_subsystem_id,
        bus_id=f"00000000:{index:02X}:00.0",
        memory_mib=m.memory_mib,
        architecture=m.architecture,
        mig_capable=m.mig_capable,
        mig_mode=mode,
        pending_mig_mode=pending_mode,
        profiles=m.profiles,
        gpu_instances=tuple(instances),
        model_name=m.name if model_name is None else model_name,
    )


def snapshot(state: str | os.PathLike[str]) -> tuple[GpuState, ...]:
    """A fresh snapshot of the simulated node in ``state``."""
    with migkit.open_node(sim_state=str(state)) as node:
        return node.snapshot()


def mutations(state: str | os.PathLike[str]) -> dict[str, int]:
    """How often each call in :data:`MUTATING` ran on the simulated node (0 when never)."""
    counts = simulator.stats(state)
    return {name: counts.get(name, 0) for name in MUTATING}


@attrs.frozen
class CliRun:
    """What one ``migkit.cli.main`` call did."""

    code: int
    stdout: str
    stderr: str
    system_exit: bool  # argparse ended it (help, version, usage error)


def run_cli(argv: Sequence[str], stdin: str = "") -> CliRun:
    """Run ``migkit.cli.main(argv)`` in this process with captured output and the given stdin.

    A ``SystemExit`` (from argparse) must carry 0 or 2, as every migkit usage error does.
    """
    out, err = io.StringIO(), io.StringIO()
    saved_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(argv))
            except SystemExit as exit_:
                assert exit_.code in (0, 2), (argv, exit_.code, err.getvalue())
                return CliRun(int(exit_.code or 0), out.getvalue(), err.getvalue(), True)
    finally:
        sys.stdin = saved_stdin
    return CliRun(code, out.getvalue(), err.getvalue(), False)


def on_node(state: str | os.PathLike[str], *args: str) -> CliRun:
    """``migkit --sim-state STATE ARGS...`` in this process."""
    return run_cli(["--sim-state", str(state), *args])
