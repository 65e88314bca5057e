"""The one writer of mig-parted v1 documents: YAML in upstream's layout, or JSON.

``render`` prints what ``export``, ``generate-config`` and the config dumps produce. YAML keeps
the document's key order, prints ``devices`` and ``device-filter`` lists in flow style and
everything else in block style, and quotes every string that a YAML reader of upstream's kind
(go-yaml v2, which migkit's loader follows) would read as something else: device IDs
(``'0x233010DE'``), ``y``/``n``, ``1e3``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

from migkit.config.values import ConfigEntry, MigConfigFile
from migkit.config.yaml_compose import GO_YAML_BOOL, GO_YAML_FLOAT, TAG

__all__ = ["ConfigDocument", "dump_json", "dump_yaml", "render", "to_document"]

ConfigDocument = dict[str, Any]
"""A mig-parted v1 document as plain data: ``{"version": "v1", "mig-configs": {...}}``."""

# Keys whose list values upstream prints in flow style (``devices: [0, 2]``).
_FLOW_KEYS = frozenset({"devices", "device-filter"})


class _FlowList(list[Any]):
    """A list that YAML prints in flow style: ``[0, 1]``."""


class _Dumper(yaml.SafeDumper):
    """Safe dumper that knows :class:`_FlowList` and go-yaml v2's extra scalars."""


def _represent_flow_list(dumper: yaml.SafeDumper, data: _FlowList) -> yaml.Node:
    return dumper.represent_sequence(TAG + "seq", data, flow_style=True)


_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    # PyYAML quotes what YAML 1.1 would misread; go-yaml v2 also reads y/n and 1e3 as non-strings.
    if GO_YAML_BOOL.match(data) or GO_YAML_FLOAT.match(data):
        return dumper.represent_scalar(TAG + "str", data, style="'")
    # Anything beyond printable ASCII goes double-quoted, where the emitter escapes what a
    # reader would take for a line break or refuse (NEL, U+2028, a BOM, control characters).
    if not _PRINTABLE_ASCII.fullmatch(data):
        return dumper.represent_scalar(TAG + "str", data, style='"')
    return dumper.represent_str(data)


_Dumper.add_representer(_FlowList, _represent_flow_list)
_Dumper.add_representer(str, _represent_str)


def _flow_lists(value: Any, key: str | None = None) -> Any:
    if isinstance(value, Mapping):
        return {k: _flow_lists(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_flow_lists(v) for v in value]
        return _FlowList(items) if key in _FLOW_KEYS else items
    return value


def render(doc: Mapping[str, Any], fmt: str = "yaml") -> str:
    """``doc`` as YAML (default) or indented JSON, ending in a newline."""
    if fmt == "json":
        return json.dumps(doc, indent=2) + "\n"
    if fmt == "yaml":
        text: str = yaml.dump(
            _flow_lists(doc),
            Dumper=_Dumper,
            default_flow_style=False,
            sort_keys=False,
            allow_unicode=True,
            width=1 << 16,
        )
        return text
    raise ValueError(f"unsupported output format {fmt!r} (use 'yaml' or 'json')")


def _entry_dict(entry: ConfigEntry) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if entry.device_filters:
        rendered = [str(f) for f in entry.device_filters]
        data["device-filter"] = rendered[0] if len(rendered) == 1 else rendered
    data["devices"] = "all" if entry.devices == "all" else list(entry.devices)
    data["mig-enabled"] = entry.mig_enabled
    if entry.mig_enabled:
        data["mig-devices"] = dict(entry.mig_devices)
    return data


def to_document(config_file: MigConfigFile) -> ConfigDocument:
    """The file as plain data, in the layout :func:`render` prints."""
    document: ConfigDocument = {"version": "v1"}
    if config_file.configs:
        document["mig-configs"] = {
            name: [_entry_dict(e) for e in entries] for name, entries in config_file.configs.items()
        }
    return document


def dump_yaml(config_file: MigConfigFile) -> str:
    """The file as YAML in mig-parted's layout."""
    return render(to_document(config_file), "yaml")


def dump_json(config_file: MigConfigFile) -> str:
    """The file as indented JSON (which is also valid v1 YAML)."""
    return render(to_document(config_file), "json")
