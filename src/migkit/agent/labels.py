"""Label names, state values and the operand pausing table (pure functions, no I/O).

The names and values are those of NVIDIA's MIG Manager, which the GPU Operator and other
components read; the pausing table is upstream's (see docs/agent.md).
"""

from __future__ import annotations

from collections.abc import Mapping

CONFIG_LABEL = "nvidia.com/mig.config"
STATE_LABEL = "nvidia.com/mig.config.state"
DEPLOY_PREFIX = "nvidia.com/gpu.deploy."
CLIENT_DEPLOY_LABEL = "nvidia.com/gpu.deploy.client"
# Operands the manager always pauses, in the order upstream writes them.
OPERAND_DEPLOY_LABELS = (
    "nvidia.com/gpu.deploy.device-plugin",
    "nvidia.com/gpu.deploy.gpu-feature-discovery",
    "nvidia.com/gpu.deploy.dcgm-exporter",
    "nvidia.com/gpu.deploy.dcgm",
    "nvidia.com/gpu.deploy.nvsm",
)
PAUSED = "paused-for-mig-change"

# Annotations of this agent (upstream has none).
RETRY_ANNOTATION = "migkit.io/mig.config.retry"
HANDLED_RETRY_ANNOTATION = "migkit.io/mig.config.retry-handled"
CONFIG_HASH_ANNOTATION = "migkit.io/mig.config.file-sha256"

STATE_PENDING = "pending"
STATE_REBOOTING = "rebooting"
STATE_SUCCESS = "success"
STATE_FAILED = "failed"
STATES = (STATE_PENDING, STATE_REBOOTING, STATE_SUCCESS, STATE_FAILED)
TERMINAL_STATES = frozenset({STATE_SUCCESS, STATE_FAILED})

# The operand pods the manager waits for, by their `app` label, and the validators it deletes.
OPERAND_APPS = (
    "nvidia-device-plugin-daemonset",
    "gpu-feature-discovery",
    "nvidia-dcgm-exporter",
    "nvidia-dcgm",
)
VALIDATOR_APPS_BEFORE = ("nvidia-cuda-validator", "nvidia-device-plugin-validator")
VALIDATOR_APPS_AFTER = ("nvidia-operator-validator",)


def paused_value(current: str | None) -> str:
    """The value a deploy label takes while operands are paused: `false` stays `false`."""
    return "false" if current == "false" else PAUSED


def restored_value(current: str | None) -> str:
    """The value a deploy label takes when operands come back: `false` stays `false`."""
    return "false" if current == "false" else "true"


def deploy_labels_to_touch(labels: Mapping[str, str]) -> tuple[str, ...]:
    """The deploy labels a pause or restore writes: the five operands always, the client label
    only when it is already on the node."""
    names = list(OPERAND_DEPLOY_LABELS)
    if CLIENT_DEPLOY_LABEL in labels:
        names.append(CLIENT_DEPLOY_LABEL)
    return tuple(names)


def pause_patch(labels: Mapping[str, str]) -> dict[str, str]:
    """The label changes that pause the operands, given the node's labels now."""
    return {name: paused_value(labels.get(name)) for name in deploy_labels_to_touch(labels)}


def restore_patch(labels: Mapping[str, str]) -> dict[str, str]:
    """The label changes that restore the operands, given the node's labels now."""
    return {name: restored_value(labels.get(name)) for name in deploy_labels_to_touch(labels)}
