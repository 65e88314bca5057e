"""GPU-feature-discovery style node labels for the current state (``migkit labels``).

Reproduces the labels a Kubernetes node shows under NVIDIA's GPU feature discovery (GFD) with
the ``single`` or ``mixed`` MIG strategy, as in the GPU Operator's MIG documentation, from a
snapshot instead of a running GFD. Values are what NVML reports for the live instances: each
MIG device's memory, multiprocessors and engine counts come from its
:class:`~migkit.models.ComputeInstance`, never from the profile tables.

**single** (every MIG device on the node is one profile and counts as a ``nvidia.com/gpu``)::

    nvidia.com/gpu.count       MIG devices on the node     "7"
    nvidia.com/gpu.product     <product>-MIG-<profile>     "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb"
    nvidia.com/gpu.replicas    always                      "1"
    nvidia.com/gpu.memory      MiB of one MIG device       "9984"
    nvidia.com/gpu.multiprocessors, .slices.gi, .slices.ci, .engines.{copy,decoder,encoder,jpeg,ofa}

  As GFD does, a node that has MIG enabled somewhere but cannot be described by one profile
  (two profiles, an enabled GPU without MIG devices, or a mix of enabled and disabled GPUs)
  gets ``gpu.product = <product>-MIG-INVALID`` with count, replicas and memory ``0``; use
  :func:`single_strategy_problem` to say why. A node without MIG enabled anywhere gets the
  full-GPU labels (count = GPUs, replicas ``1``, memory = GPU memory).

**mixed** (each profile is its own resource ``nvidia.com/mig-<p>``): per profile ``.count``,
``.product``, ``.replicas`` (``"1"``), ``.sharing-strategy`` (``"none"``), ``.memory``,
``.multiprocessors``, ``.slices.gi``, ``.slices.ci`` and ``.engines.*``; plus full-GPU labels
``gpu.product`` (no MIG suffix), ``gpu.count`` (GPUs), ``gpu.memory`` (GPU memory) and
``gpu.replicas`` — ``"0"`` when every GPU has MIG enabled, ``"1"`` when a GPU is used whole.
MIG-enabled GPUs without MIG devices are ignored, as GFD ignores them.

**none** (GFD's default: MIG devices are not advertised; every GPU counts whole): the
full-GPU labels for every GPU (count = GPUs, replicas ``1``, memory = GPU memory).

Always: ``gpu.sharing-strategy`` ``"none"`` (empty under single when the node is labelled
``MIG-INVALID``, as GFD leaves it), ``mps.capable`` ``"false"`` (migkit configures no MPS),
``mig.capable``, ``mig.strategy``, and ``mig.config`` / ``mig.config.state`` when given.
``gpu.present`` is the GPU Operator's label, not GFD's, so it is added only on request
(``present=True``, ``migkit labels --gpu-present``).

Profile names in label keys and products follow GFD: attributes are joined with ``.``
instead of ``+`` (``+`` is not legal in a label key), so ``1g.10gb+me`` becomes
``nvidia.com/mig-1g.10gb.me.*`` — the same spelling as the generated config names.
Compute-instance profiles keep their form: ``nvidia.com/mig-1c.3g.40gb.*`` with
``slices.ci = 1`` and ``slices.gi = 3``. GFD's architecture and driver labels
(``gpu.family``, ``gpu.compute.*``, ``cuda.*``) are out of scope.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import attrs

from migkit.errors import LabelError
from migkit.models import ComputeInstance, GpuInstance, GpuState
from migkit.names import canonical_from_nvml

__all__ = [
    "STRATEGIES",
    "LabelError",
    "MigDevice",
    "Strategy",
    "label_profile_name",
    "mig_devices",
    "node_labels",
    "product_label",
    "single_strategy_problem",
]

Strategy = Literal["none", "single", "mixed"]
STRATEGIES: tuple[Strategy, ...] = ("none", "single", "mixed")

_PREFIX = "nvidia.com/"




def label_profile_name(profile: str) -> str:
    """A profile as GFD spells it in labels: ``1g.10gb+me`` -> ``1g.10gb.me``."""
    return canonical_from_nvml(profile).replace("+", ".")


def product_label(*parts: str) -> str:
    """GFD's product value: non-empty parts with spaces as ``-``, joined by ``-``.

    >>> product_label("NVIDIA H100 80GB HBM3", "MIG", "1g.10gb")
    'NVIDIA-H100-80GB-HBM3-MIG-1g.10gb'
    """
    return "-".join(part.replace(" ", "-") for part in parts if part)


@attrs.frozen
class MigDevice:
    """One MIG device (a compute instance) with the GPU and GPU instance it lives in."""

    gpu: GpuState
    gpu_instance: GpuInstance
    compute_instance: ComputeInstance

    @property
    def profile(self) -> str:
        """The label spelling of the device's profile (``1g.10gb.me``, ``1c.3g.40gb``)."""
        return label_profile_name(self.compute_instance.profile)

    @property
    def gi_slices(self) -> int:
        """G: compute slices of the GPU instance, from its profile (or the name)."""
        for profile in self.gpu.profiles:
            if profile.id == self.gpu_instance.profile_id:
                return profile.slice_count
        return _g_from_name(self.gpu_instance.profile)

    def attributes(self) -> dict[str, int]:
        """GFD's per-device attribute labels (suffix -> value), as NVML reports them."""
        ci = self.compute_instance
        return {
            "memory": ci.memory_mib,
            "multiprocessors": ci.multiprocessors,
            "slices.gi": self.gi_slices,
            "slices.ci": ci.size,
            "engines.copy": ci.copy_engines,
            "engines.decoder": ci.decoders,
            "engines.encoder": ci.encoders,
            "engines.jpeg": ci.jpegs,
            "engines.ofa": ci.ofas,
        }


def _g_from_name(name: str) -> int:
    head = canonical_from_nvml(name).split("+")[0].split("-")[0]
    for field in head.split("."):
        if field.endswith("g") and field[:-1].isdigit():
            return int(field[:-1])
    return 0


def _enabled(gpu: GpuState) -> bool:
    return gpu.mig_capable and gpu.mig_enabled


def mig_devices(gpus: Sequence[GpuState]) -> tuple[MigDevice, ...]:
    """Every MIG device on MIG-enabled GPUs, in GPU, then GPU-instance, then CI order."""
    return tuple(
        MigDevice(gpu, gi, ci)
        for gpu in gpus
        if _enabled(gpu)
        for gi in gpu.gpu_instances
        for ci in gi.compute_instances
    )


def single_strategy_problem(gpus: Sequence[GpuState]) -> str | None:
    """Why the single strategy cannot describe the node, or ``None`` when it can."""
    enabled = [gpu for gpu in gpus if _enabled(gpu)]
    if not enabled:
        return None
    empty = [
        i
        for i, gpu in enumerate(gpus)
        if _enabled(gpu) and not any(gi.compute_instances for gi in gpu.gpu_instances)
    ]
    if empty:
        return f"MIG is enabled but no MIG devices exist on GPU {', '.join(map(str, empty))}"
    disabled = [i for i, gpu in enumerate(gpus) if not _enabled(gpu)]
    if disabled:
        listed = ", ".join(map(str, disabled))
        return f"GPUs with MIG enabled and disabled are mixed (MIG disabled on GPU {listed})"
    profiles = sorted({device.profile for device in mig_devices(gpus)})
    if len(profiles) != 1:
        listed = ", ".join(profiles)
        return f"more than one MIG profile on the node ({listed}); single strategy needs one"
    return None


def _key(resource: str, suffix: str) -> str:
    return f"{_PREFIX}{resource}.{suffix}"


def _full_gpu_labels(gpus: Sequence[GpuState]) -> dict[str, str]:
    """GFD's whole-GPU labels (before any single-strategy MIG labels replace them).

    MIG-enabled GPUs are labelled without sharing (replicas ``0``); GPUs used whole are
    labelled after them with replicas ``1`` and so win. Between several products GFD's choice
    is unordered; migkit takes the first GPU in PCI order (of those used whole, if any).
    """
    if not gpus:
        return {}
    whole = [gpu for gpu in gpus if not _enabled(gpu)]
    reference = whole[0] if whole else gpus[0]
    return {
        _key("gpu", "product"): product_label(reference.name),
        _key("gpu", "count"): str(sum(gpu.name == reference.name for gpu in gpus)),
        _key("gpu", "replicas"): "1" if whole else "0",
        _key("gpu", "memory"): str(reference.memory_mib),
    }


def _mig_resource_labels(resource: str, device: MigDevice, count: int) -> dict[str, str]:
    labels = {
        _key(resource, "product"): product_label(device.gpu.name, "MIG", device.profile),
        _key(resource, "count"): str(count),
        _key(resource, "replicas"): "1",
    }
    labels.update(
        {_key(resource, suffix): str(value) for suffix, value in device.attributes().items()}
    )
    return labels


def _whole_gpu_labels(gpus: Sequence[GpuState]) -> dict[str, str]:
    """Strategy none: every GPU is one ``nvidia.com/gpu``, MIG mode or not."""
    if not gpus:
        return {}
    reference = gpus[0]
    return {
        _key("gpu", "product"): product_label(reference.name),
        _key("gpu", "count"): str(sum(gpu.name == reference.name for gpu in gpus)),
        _key("gpu", "replicas"): "1",
        _key("gpu", "memory"): str(reference.memory_mib),
    }


def node_labels(
    gpus: Sequence[GpuState],
    strategy: Strategy | str,
    config_name: str | None = None,
    config_state: str | None = None,
    *,
    present: bool = False,
) -> dict[str, str]:
    """The node labels GFD would publish for ``gpus`` under ``strategy``, sorted by key.

    ``config_name`` and ``config_state`` add ``nvidia.com/mig.config`` and
    ``nvidia.com/mig.config.state`` (written by the user/operator and the MIG manager);
    ``present`` adds the GPU Operator's ``nvidia.com/gpu.present=true``.
    """
    if strategy not in STRATEGIES:
        raise LabelError(f"unknown MIG strategy {strategy!r} (use none, single or mixed)")
    sharing = "none"
    labels = _whole_gpu_labels(gpus) if strategy == "none" else _full_gpu_labels(gpus)
    devices = mig_devices(gpus)
    if strategy == "none":
        pass
    elif strategy == "single":
        problem = single_strategy_problem(gpus)
        first_enabled = next((gpu for gpu in gpus if _enabled(gpu)), None)
        if problem is not None and first_enabled is not None:
            labels.update(
                {
                    _key("gpu", "product"): product_label(first_enabled.name, "MIG", "INVALID"),
                    _key("gpu", "count"): "0",
                    _key("gpu", "replicas"): "0",
                    _key("gpu", "memory"): "0",
                }
            )
            sharing = ""  # GFD leaves the sharing strategy empty on an invalid node
        elif devices:
            labels.update(_mig_resource_labels("gpu", devices[0], len(devices)))
    else:
        by_profile: dict[str, list[MigDevice]] = {}
        for device in devices:
            by_profile.setdefault(device.profile, []).append(device)
        for profile, members in by_profile.items():
            resource = f"mig-{profile}"
            labels.update(_mig_resource_labels(resource, members[0], len(members)))
            labels[_key(resource, "sharing-strategy")] = "none"
    if gpus:
        labels[_key("gpu", "sharing-strategy")] = sharing
        labels[f"{_PREFIX}mps.capable"] = "false"
        if present:
            labels[_key("gpu", "present")] = "true"
    labels[f"{_PREFIX}mig.capable"] = "true" if any(gpu.mig_capable for gpu in gpus) else "false"
    labels[f"{_PREFIX}mig.strategy"] = strategy
    if config_name is not None:
        labels[f"{_PREFIX}mig.config"] = config_name
    if config_state is not None:
        labels[f"{_PREFIX}mig.config.state"] = config_state
    return dict(sorted(labels.items()))
