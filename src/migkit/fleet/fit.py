"""Whether a MIG config fits a node, decided offline from what the cluster publishes.

A node's GPUs are known from what its agent publishes in the node's ``<node>-mig-config``
ConfigMap (``gpu-count`` and ``gpu-models``: each GPU's bundled model, read from the hardware),
else from its GPU feature discovery labels (``nvidia.com/gpu.product`` and
``nvidia.com/gpu.count``) matched against migkit's bundled hardware tables. Under GFD's single
strategy the count label counts MIG devices, so only the ConfigMap gives the real count there.
The configs come from the same ConfigMap's ``config.yaml`` (or a file given by the operator). The planner
(:func:`migkit.planning.plan.plan_node`) then places every requested instance on fresh GPUs
of that model. Pure: no I/O, no cluster access.

Fail closed: a missing or unknown product, an unreadable count or a config the planner cannot
place is a reason to skip the node, never a pass.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence

import attrs

from migkit.agent.node_ops import GPU_COUNT_KEY, GPU_MODELS_KEY, UNKNOWN_MODEL
from migkit.config import MigConfigFile
from migkit.errors import MigkitError
from migkit.hardware import gpu_model, gpu_models
from migkit.models import GpuModel
from migkit.planning.plan import plan_node

PRODUCT_LABEL = "nvidia.com/gpu.product"
COUNT_LABEL = "nvidia.com/gpu.count"
MEMORY_LABEL = "nvidia.com/gpu.memory"
MIG_SUFFIX = "-MIG-"  # GFD's single strategy: <product>-MIG-<profile>
SHARED_SUFFIX = "-SHARED"  # GFD's time-slicing/MPS renaming
_GPU_WORDS = re.compile(r"GPU (\d+) ")


class UnknownGpus(ValueError):
    """The node's labels do not say which GPUs it has (the message says why)."""


@attrs.frozen
class GpuInventory:
    """A node's GPUs: one model, and how many (None: labels count MIG devices instead of GPUs,
    as GFD's single strategy does); or, as the agent read them, every GPU's model in order
    (``gpus``, which then decides the fit)."""

    product: str
    model: GpuModel
    count: int | None
    gpus: tuple[GpuModel, ...] = ()

    def describe(self) -> str:
        if self.gpus:
            groups: dict[str, int] = {}
            for gpu in self.gpus:
                groups[gpu.name] = groups.get(gpu.name, 0) + 1
            return " + ".join(f"{n}x {name}" for name, n in groups.items())
        return f"{self.count if self.count is not None else '?'}x {self.model.name}"

    def planning_models(self) -> tuple[GpuModel, ...] | None:
        """The GPUs a config is planned on, in ``devices: [i]`` order; None when only the
        model is known (single strategy labels)."""
        if self.gpus:
            return self.gpus
        return None if self.count is None else (self.model,) * self.count


@functools.cache
def _models_by_product() -> dict[str, tuple[GpuModel, ...]]:
    found: dict[str, list[GpuModel]] = {}
    for m in gpu_models():
        found.setdefault(product_value(m.product_name), []).append(m)
    return {product: tuple(models) for product, models in found.items()}


def _pick(base: str, models: tuple[GpuModel, ...], memory: str | None) -> GpuModel:
    """One model for a product name several share: any when their MIG geometry is the same,
    else the one whose memory is the ``nvidia.com/gpu.memory`` label's."""
    if all(m.profiles == models[0].profiles for m in models):
        return models[0]
    names = ", ".join(m.name for m in models)
    try:
        mib = int(memory or "")
    except ValueError:
        raise UnknownGpus(f"GPU product {base!r} is one of {names}, and {MEMORY_LABEL}={memory!r} "
                          "does not say which") from None
    best = sorted(models, key=lambda m: abs(m.memory_mib - mib))
    if abs(best[0].memory_mib - mib) == abs(best[1].memory_mib - mib):
        raise UnknownGpus(f"GPU product {base!r} with {mib} MiB could be any of {names}")
    return best[0]


def product_value(product_name: str) -> str:
    """GFD's spelling of an NVML product name: ``NVIDIA H100 80GB HBM3`` -> ``NVIDIA-H100-80GB-HBM3``."""
    return product_name.replace(" ", "-")


def base_product(label: str) -> tuple[str, bool]:
    """The product without GFD's MIG and sharing suffixes, and whether the MIG suffix was there."""
    base = label.removesuffix(SHARED_SUFFIX)
    mig = MIG_SUFFIX in base
    if mig:
        base = base[: base.index(MIG_SUFFIX)]
    return base, mig


def inventory_from_labels(labels: dict[str, str]) -> GpuInventory:
    """The node's GPUs from its GFD labels; :class:`UnknownGpus` when they cannot be known."""
    product = labels.get(PRODUCT_LABEL)
    if not product:
        raise UnknownGpus(f"no {PRODUCT_LABEL} label (is GPU feature discovery running on the node?)")
    base, single_strategy = base_product(product)
    models = _models_by_product().get(base)
    if not models:
        raise UnknownGpus(f"GPU product {base!r} is not in migkit's hardware tables")
    # Under the single strategy gpu.memory is a MIG device's memory, not the GPU's.
    model = _pick(base, models, None if single_strategy else labels.get(MEMORY_LABEL))
    if not model.mig_capable:
        raise UnknownGpus(f"GPU product {base!r} does not support MIG")
    if single_strategy:
        return GpuInventory(base, model, None)
    raw = labels.get(COUNT_LABEL)
    try:
        count = int(raw or "")
    except ValueError:
        raise UnknownGpus(f"{COUNT_LABEL}={raw!r} is not a number of GPUs") from None
    if count <= 0:
        raise UnknownGpus(f"{COUNT_LABEL}={raw!r}: no GPUs")
    return GpuInventory(base, model, count)


def inventory_from_published(data: Mapping[str, str], labels: Mapping[str, str]) -> GpuInventory:
    """The node's GPUs from its agent's ConfigMap data (``gpu-count``, ``gpu-models``), else
    (a ConfigMap without them) from its labels; :class:`UnknownGpus` when they cannot be known.

    A GPU no bundled table matches, or a count that disagrees with the list, is a reason, never
    a guess.
    """
    raw_count, raw_models = data.get(GPU_COUNT_KEY), data.get(GPU_MODELS_KEY)
    if raw_count is None and raw_models is None:
        return inventory_from_labels(dict(labels))
    names = [n.strip() for n in (raw_models or "").split(",") if n.strip()]
    try:
        count = int(raw_count or "")
    except ValueError:
        raise UnknownGpus(f"the agent's {GPU_COUNT_KEY}={raw_count!r} is not a number of GPUs") from None
    if count != len(names):
        raise UnknownGpus(f"the agent's {GPU_COUNT_KEY}={count} does not match its {GPU_MODELS_KEY}={raw_models!r}")
    if count <= 0:
        raise UnknownGpus("the agent found no GPUs on the node")
    models = []
    for index, name in enumerate(names):
        if name == UNKNOWN_MODEL:
            raise UnknownGpus(f"GPU {index} matches none of migkit's hardware tables (the agent's {GPU_MODELS_KEY})")
        try:
            models.append(gpu_model(name))
        except MigkitError:
            raise UnknownGpus(f"GPU {index} is a {name!r}, which this migkit's hardware tables do not know") from None
    mig = [m for m in models if m.mig_capable]
    if not mig:
        raise UnknownGpus(f"no GPU of the node supports MIG ({', '.join(sorted(set(names)))})")
    product = product_value(mig[0].product_name)
    return GpuInventory(product, mig[0], count, tuple(models))


def fit_problem(config_file: MigConfigFile, name: str, gpus: GpuInventory) -> str | None:
    """Why config ``name`` of ``config_file`` cannot be applied to these GPUs; None when it fits."""
    entries = config_file.configs.get(name)
    if entries is None:
        return f"no config {name!r} in {config_file.file or 'the config'}"
    models = gpus.planning_models()
    if models is None:
        if any(entry.devices != "all" for entry in entries):
            return (f"config {name!r} names GPU indices, and the node's labels count MIG devices "
                    "(single strategy), not GPUs")
        models = (gpus.model,)  # every GPU is the same model and `devices: all` treats each alike
    try:
        plan = plan_node(config_file, name, list(models))
    except MigkitError as err:
        return _summarise(str(err).splitlines())
    if plan.errors:
        return _summarise(plan.errors)
    return None


def _summarise(lines: Sequence[str]) -> str:
    """One line per distinct problem: the same message for several GPUs is said once."""
    seen: dict[str, list[str]] = {}
    for line in lines:
        match = _GPU_WORDS.search(line)
        key = _GPU_WORDS.sub("GPU ", line, count=1) if match else line
        seen.setdefault(key, []).append(match.group(1) if match else "")
    parts = []
    for key, gpus in seen.items():
        named = [g for g in gpus if g]
        parts.append(key.replace("GPU ", f"GPU {','.join(named)} ", 1) if named else key)
    return "; ".join(parts)


def fitting_configs(config_file: MigConfigFile, gpus: GpuInventory) -> tuple[str, ...]:
    """The names of the configs in ``config_file`` that fit these GPUs, in file order."""
    return tuple(name for name in config_file.configs if fit_problem(config_file, name, gpus) is None)


__all__ = [
    "COUNT_LABEL",
    "MEMORY_LABEL",
    "PRODUCT_LABEL",
    "GpuInventory",
    "UnknownGpus",
    "base_product",
    "fit_problem",
    "fitting_configs",
    "inventory_from_labels",
    "inventory_from_published",
    "product_value",
]
