"""The named configs of a file and whether each fits (``migkit configs -f FILE``).

Each config is listed with its entries (devices, filters, mode and counts) and, against the
node's GPUs or the bundled models given with ``--gpu``, whether it fits: planned exactly as
``plan``/``apply`` would, so "fits" means an apply would succeed on this hardware::

    all-disabled      fits     all: MIG disabled
    all-1g.10gb       fits     all: MIG enabled, 1g.10gb x7
    custom            no       [0]: MIG enabled, 1g.5gb x1 - GPU 0 (h100-80gb, ...): ...
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from migkit.config.parse import ConfigEntry, MigConfigFile
from migkit.errors import MigkitError
from migkit.models import GpuModel, GpuState

__all__ = ["config_fits", "configs_document", "render_configs"]


def _entry_document(entry: ConfigEntry) -> dict[str, Any]:
    document: dict[str, Any] = {
        "devices": "all" if entry.devices == "all" else list(entry.devices),
        "mig-enabled": entry.mig_enabled,
    }
    if entry.device_filters:
        document["device-filter"] = [str(f) for f in entry.device_filters]
    if entry.mig_enabled:
        document["mig-devices"] = dict(entry.mig_devices)
    return document


def _entry_text(entry: ConfigEntry) -> str:
    devices = "all" if entry.devices == "all" else "[" + ", ".join(map(str, entry.devices)) + "]"
    if entry.device_filters:
        devices += " of " + ", ".join(str(f) for f in entry.device_filters)
    if not entry.mig_enabled:
        return f"{devices}: MIG disabled"
    counts = ", ".join(f"{name} x{count}" for name, count in entry.mig_devices.items())
    return f"{devices}: MIG enabled, {counts or 'no instances'}"


def config_fits(
    config_file: MigConfigFile,
    name: str,
    gpus: Sequence[GpuState] | None = None,
    models: Sequence[GpuModel] | None = None,
) -> tuple[bool, str]:
    """``(fits, reason)`` for one config against a snapshot or bundled models."""
    from migkit.planning import plan as planning

    try:
        if models is not None:
            node_plan = planning.plan_offline(config_file, name, models)
        else:
            node_plan = planning.plan_node(config_file, name, gpus or ())
    except MigkitError as err:
        return False, str(err)
    if node_plan.feasible:
        return True, ""
    return False, "; ".join(node_plan.errors)


def configs_document(
    config_file: MigConfigFile,
    gpus: Sequence[GpuState] | None = None,
    models: Sequence[GpuModel] | None = None,
) -> dict[str, Any]:
    """Every config with its entries and, when hardware is given, whether it fits."""
    checked = gpus is not None or models is not None
    configs = []
    for name, entries in config_file.configs.items():
        item: dict[str, Any] = {"name": name, "entries": [_entry_document(e) for e in entries]}
        if checked:
            fits, reason = config_fits(config_file, name, gpus, models)
            item["fits"] = fits
            if reason:
                item["reason"] = reason
        configs.append(item)
    return {
        "file": config_file.file,
        "configs": configs,
        "warnings": [str(w) for w in config_file.warnings],
    }


def render_configs(
    config_file: MigConfigFile,
    gpus: Sequence[GpuState] | None = None,
    models: Sequence[GpuModel] | None = None,
    fmt: str = "text",
) -> str:
    """The listing as text (default) or indented JSON."""
    document = configs_document(config_file, gpus, models)
    if fmt == "json":
        return json.dumps(document, indent=2) + "\n"
    if fmt != "text":
        raise ValueError(f"unsupported output format {fmt!r} (use text or json)")
    width = max((len(c["name"]) for c in document["configs"]), default=0)
    lines = []
    for config, entries in zip(document["configs"], config_file.configs.values(), strict=True):
        if "fits" in config:
            verdict = "fits" if config["fits"] else "no"
            head = f"{config['name']:<{width}}  {verdict:<4}  "
        else:
            head = f"{config['name']:<{width}}  "
        texts = [_entry_text(e) for e in entries]
        lines.append(head + texts[0])
        lines.extend(" " * len(head) + text for text in texts[1:])
        if config.get("reason"):
            lines.extend(" " * len(head) + "! " + part for part in config["reason"].split("\n"))
    fits = [c for c in document["configs"] if "fits" in c]
    count = len(document["configs"])
    summary = f"{count} config" + ("" if count == 1 else "s")
    if fits:
        summary += f", {sum(c['fits'] for c in fits)} fit"
    lines.append(summary)
    lines.extend(f"warning: {w}" for w in document["warnings"])
    return "\n".join(lines) + "\n"
