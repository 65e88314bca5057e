"""Load, validate, select and write mig-parted v1 configuration files.

The accepted language is exactly mig-parted's: YAML 1.1 as go-yaml v2 reads it (``y``/``n``
and ``yes``/``no`` are booleans, ``1e0`` is a float), a ``version: v1`` / ``mig-configs`` top
level and entries of ``devices``, ``mig-enabled``, ``mig-devices`` and ``device-filter``. Two
deliberate deviations: a negative index in ``devices`` and a malformed ``device-filter`` are
errors instead of silently matching nothing. What upstream reads leniently (a key written
twice, ``7.0`` as a count, ``mig-enabled: null``) is accepted with a located warning.
Every error is a :class:`~migkit.errors.ConfigError` carrying the file, line and column of the
offending value and one sentence saying what is wrong::

    config.yaml:7:9: config "custom", entry 0: "bogus" is not a MIG profile name
    (expected like "1g.10gb" or "1c.3g.20gb")

YAML is composed with a ``SafeLoader`` subclass (YAML 1.1 scalars, as go-yaml v2 reads them)
and values are built from the node tree here, so each one keeps its position.
"""

from __future__ import annotations

import difflib
import json
import os
from typing import Any, Literal

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from migkit.config.filters import DeviceFilter
from migkit.config.values import ConfigEntry, ConfigWarning, MigConfigFile, SelectedConfig
from migkit.config.yaml_compose import (
    SCALARS,
    TAG,
    GoYamlLoader,
    collector_paused,
    compose_fast,
    join_surrogates,
)
from migkit.errors import ConfigError
from migkit.files import MAX_CONFIG_BYTES, read_text
from migkit.names import ProfileCounts, parse_profile_name

__all__ = [
    "ConfigEntry",
    "ConfigWarning",
    "MigConfigFile",
    "SelectedConfig",
    "load_config",
    "parse_config",
    "select",
]

ENTRY_KEYS = ("devices", "mig-enabled", "mig-devices", "device-filter")
TOP_KEYS = ("version", "mig-configs")
_NAME_EXAMPLE = '(expected like "1g.10gb" or "1c.3g.20gb")'
_BOOL_TRUE = frozenset({"y", "yes", "true", "on"})
_BOOL_FALSE = frozenset({"n", "no", "false", "off"})


# --------------------------------------------------------------------------------- loading


def _looks_like_path(text: str) -> bool:
    return (
        "\n" not in text
        and ": " not in text
        and not text.lstrip().startswith(("{", "["))
        and text.rstrip().endswith((".yaml", ".yml", ".json"))
    )


def load_config(source: str | os.PathLike[str], *, name: str | None = None) -> MigConfigFile:
    """Load a v1 config from a path, or from YAML/JSON text.

    A path-like object, or a string naming an existing file, is read; any other string is the
    document itself. ``name`` overrides the file name used in messages (e.g. ``"<stdin>"``).
    Raises :class:`ConfigError`.
    """
    path: str | None = None
    if isinstance(source, os.PathLike):
        path = os.fspath(source)
    elif isinstance(source, str):
        try:
            if "\n" not in source and os.path.isfile(source):
                path = source
        except (OSError, ValueError):
            path = None
        if path is None and _looks_like_path(source):
            raise ConfigError("no such file", file=source.strip())
    else:
        raise TypeError(f"load_config expects a path or text, not {type(source).__name__}")
    if path is not None:
        try:
            text = read_text(path, limit=MAX_CONFIG_BYTES, what="the file")
        except ConfigError as err:
            raise ConfigError(err.reason, file=name or path) from None
        return parse_config(text, file=name or path)
    assert isinstance(source, str)
    return parse_config(source, file=name or "<string>")


def parse_config(text: str, *, file: str | None = None) -> MigConfigFile:
    """Parse and validate a v1 document given as text."""
    return _Parser(file).parse(text)


_Kind = Literal["null", "bool", "int", "float", "str", "map", "list"]
_MERGE_BUDGET = 10_000  # keys that merge keys (<<) may copy, in all


class _Parser:
    def __init__(self, file: str | None) -> None:
        self.file = file
        self.warnings: list[ConfigWarning] = []
        self.merge_budget = _MERGE_BUDGET

    # -- helpers -------------------------------------------------------------------------

    def error(self, node: Node | None, reason: str) -> ConfigError:
        if node is None:
            return ConfigError(reason, file=self.file)
        mark = node.start_mark
        return ConfigError(reason, file=self.file, line=mark.line + 1, column=mark.column + 1)

    def warn(self, node: Node, message: str) -> None:
        mark = node.start_mark
        self.warnings.append(ConfigWarning(message, self.file, mark.line + 1, mark.column + 1))

    def scalar(self, node: Node) -> Any:
        """The Python value of a scalar node (null, bool, int, float or str)."""
        assert isinstance(node, ScalarNode)
        tag = node.tag
        if tag == TAG + "null":
            return None
        if tag == TAG + "bool":
            lowered = node.value.lower()
            if lowered in _BOOL_TRUE:
                return True
            if lowered in _BOOL_FALSE:
                return False
            raise self.error(node, f"{node.value!r} is not a boolean")
        if tag in (TAG + "int", TAG + "float"):
            if ":" in node.value:
                # YAML 1.1 base-60 numbers (1:20 -> 80): go-yaml v2, and so mig-parted, reads
                # them as strings, so they are strings here too (and fail where a number is due).
                return join_surrogates(node.value)
            try:
                if tag.endswith("int"):
                    return SCALARS.construct_yaml_int(node)
                return SCALARS.construct_yaml_float(node)
            except (ValueError, IndexError, yaml.YAMLError):
                raise self.error(node, f"{node.value!r} is not a valid number") from None
        if tag in (TAG + "str", TAG + "timestamp"):
            return join_surrogates(node.value)
        raise self.error(node, f"unsupported YAML tag {tag!r}")

    def kind(self, node: Node) -> _Kind:
        if isinstance(node, MappingNode):
            if node.tag != TAG + "map":
                raise self.error(node, f"unsupported YAML tag {node.tag!r}")
            return "map"
        if isinstance(node, SequenceNode):
            if node.tag != TAG + "seq":
                raise self.error(node, f"unsupported YAML tag {node.tag!r}")
            return "list"
        value = self.scalar(node)
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "bool"
        if isinstance(value, int):
            return "int"
        if isinstance(value, float):
            return "float"
        return "str"

    def describe(self, node: Node) -> str:
        """A short description of a value for messages: ``the string "All"``, ``a list``."""
        kind = self.kind(node)
        if kind == "map":
            return "a mapping"
        if kind == "list":
            return "a list"
        if kind == "null":
            return "null"
        value = self.scalar(node)
        if kind == "str":
            return f"the string {json.dumps(value)}"
        if kind == "bool":
            return f"the boolean {'true' if value else 'false'}"
        return f"the number {node.value}"

    def items(self, node: MappingNode, depth: int = 0) -> list[tuple[str, Node, Node]]:
        """Key/value pairs of a mapping with string keys, merge keys applied, duplicates refused."""
        if depth > 32:
            raise self.error(node, "merge keys nest too deeply")
        explicit: list[tuple[str, Node, Node]] = []
        merged: list[tuple[str, Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == TAG + "merge":
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        raise self.error(source, "a merge key (<<) must refer to a mapping")
                    merged.extend(self.items(source, depth + 1))
                    self.merge_budget -= len(source.value)
                    if self.merge_budget < 0:
                        raise self.error(source, "merge keys (<<) expand to too many keys")
                continue
            if not isinstance(key_node, ScalarNode):
                raise self.error(key_node, "mapping keys must be plain strings")
            key = self.scalar(key_node)
            if isinstance(key, bool):
                key = "true" if key else "false"
            elif isinstance(key, int):
                key = str(key)
            elif not isinstance(key, str):
                raise self.error(
                    key_node, f"mapping keys must be strings, not {self.describe(key_node)}"
                )
            explicit.append((key, key_node, value_node))
        # A key written twice: the last one wins, as nvidia-mig-parted reads the file (its YAML
        # goes through JSON into Go maps). The entry keeps the first key's place in the order.
        chosen: dict[str, tuple[str, Node, Node]] = {}
        for key, key_node, value_node in explicit:
            earlier = chosen.get(key)
            if earlier is not None:
                first = earlier[1].start_mark.line + 1
                again = key_node.start_mark.line + 1
                self.warn(
                    key_node,
                    f"key {json.dumps(key)} appears twice (lines {first} and {again}); "
                    f"the value on line {again} is used",
                )
            chosen[key] = (key, key_node, value_node)
        result = list(chosen.values())
        for key, key_node, value_node in merged:
            if key not in chosen:
                chosen[key] = (key, key_node, value_node)
                result.append((key, key_node, value_node))
        return result

    def whole_number(self, node: Node, what: str) -> int | None:
        """An int, or a float with no fraction (``7.0``) read as one with a warning."""
        kind = self.kind(node)
        if kind == "int":
            value: int = self.scalar(node)
            return value
        if kind == "float":
            number = self.scalar(node)
            if number.is_integer() and abs(number) < 2**63:
                self.warn(node, f"{what} is {node.value}, read as the whole number {int(number)}")
                return int(number)
        return None

    # -- structure ---------------------------------------------------------------------------

    def parse(self, text: str) -> MigConfigFile:
        with collector_paused():
            try:
                root = compose_fast(text)
            except LookupError:
                return self.build(self.compose(text))
            try:
                fast = self.build(root)
            except ConfigError:
                pass
            else:
                if not fast.warnings:
                    return fast
            # Errors and warnings are located on the pure-Python tree: libyaml marks some nodes
            # (an empty value, for one) a column apart, and messages must not depend on the path.
            self.warnings = []
            self.merge_budget = _MERGE_BUDGET
            return self.build(self.compose(text))

    def build(self, root: Node | None) -> MigConfigFile:
        """The validated file from a node tree (``None`` for an empty document)."""
        if root is not None:
            self.check_tags(root)
        configs = self.top(root) if root is not None else {}
        return MigConfigFile(configs, self.file, tuple(self.warnings))

    def compose(self, text: str) -> Node | None:
        """The node tree from the pure-Python loader, or its error as a ConfigError."""
        try:
            loader = GoYamlLoader(text)
        except yaml.reader.ReaderError as err:
            line = text.count("\n", 0, err.position) + 1
            column = err.position - (text.rfind("\n", 0, err.position) + 1) + 1
            raise ConfigError(
                f"not valid YAML: character {err.character:#06x} is not allowed",
                file=self.file,
                line=line,
                column=column,
            ) from None
        try:
            root: Node | None = loader.get_single_node()
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            problem = err.problem or err.context or "invalid YAML"
            if mark is None:
                raise ConfigError(f"not valid YAML: {problem}", file=self.file) from None
            raise ConfigError(
                f"not valid YAML: {problem}",
                file=self.file,
                line=mark.line + 1,
                column=mark.column + 1,
            ) from None
        except yaml.YAMLError as err:
            raise ConfigError(f"not valid YAML: {err}", file=self.file) from None
        except RecursionError:
            raise ConfigError("the document nests too deeply", file=self.file) from None
        finally:
            loader.dispose()
        return root

    def check_tags(self, root: Node) -> None:
        """Refuse explicit tags on mappings and lists (``!!python/object``, ``!!set``, ...)."""
        seen: set[int] = set()
        stack = [root]
        while stack:
            node = stack.pop()
            if id(node) in seen:  # aliases share nodes
                continue
            seen.add(id(node))
            if isinstance(node, MappingNode):
                if node.tag != TAG + "map":
                    raise self.error(node, f"unsupported YAML tag {node.tag!r}")
                for key, value in node.value:
                    stack.extend((key, value))
            elif isinstance(node, SequenceNode):
                if node.tag != TAG + "seq":
                    raise self.error(node, f"unsupported YAML tag {node.tag!r}")
                stack.extend(node.value)

    def top(self, root: Node) -> dict[str, tuple[ConfigEntry, ...]]:
        if isinstance(root, ScalarNode) and self.kind(root) == "null":
            return {}
        if not isinstance(root, MappingNode):
            raise self.error(
                root,
                "the file must be a mapping with version and mig-configs, "
                f"not {self.describe(root)}",
            )
        pairs = self.items(root)
        if not pairs:
            return {}
        by_key = {key: (key_node, value) for key, key_node, value in pairs}
        if "version" not in by_key:
            raise self.error(root, "the file has no version (add: version: v1)")
        version_node = by_key["version"][1]
        if self.kind(version_node) != "str" or self.scalar(version_node) != "v1":
            raise self.error(
                version_node, f'version must be "v1", not {self.describe(version_node)}'
            )
        for key, key_node, _ in pairs:
            if key not in TOP_KEYS:
                raise self.error(key_node, self.unexpected(key, TOP_KEYS, "at the top level"))
        if "mig-configs" not in by_key:
            return {}
        configs_node = by_key["mig-configs"][1]
        if not isinstance(configs_node, MappingNode):
            if self.kind(configs_node) == "null":
                raise self.error(
                    configs_node, "mig-configs is empty; it must hold at least one config"
                )
            raise self.error(
                configs_node,
                "mig-configs must map config names to lists of entries, "
                f"not {self.describe(configs_node)}",
            )
        config_pairs = self.items(configs_node)
        if not config_pairs:
            raise self.error(configs_node, "mig-configs is empty; it must hold at least one config")
        return {name: self.config(name, value) for name, _, value in config_pairs}

    def unexpected(self, key: str, allowed: tuple[str, ...], where: str) -> str:
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f'; did you mean "{close[0]}"?' if close else f" (expected {', '.join(allowed)})"
        return f"unexpected key {json.dumps(key)} {where}{hint}"

    def config(self, name: str, node: Node) -> tuple[ConfigEntry, ...]:
        where = f"config {json.dumps(name)}"
        if not isinstance(node, SequenceNode):
            if self.kind(node) == "null":
                raise self.error(node, f"{where} is empty; it must be a list of entries")
            raise self.error(node, f"{where} must be a list of entries, not {self.describe(node)}")
        if not node.value:
            raise self.error(node, f"{where} is empty; it must be a list of entries")
        return tuple(self.entry(f"{where}, entry {k}", item) for k, item in enumerate(node.value))

    def entry(self, where: str, node: Node) -> ConfigEntry:
        if not isinstance(node, MappingNode):
            raise self.error(
                node,
                f"{where}: an entry must be a mapping with devices and mig-enabled, "
                f"not {self.describe(node)}",
            )
        pairs = self.items(node)
        fields: dict[str, Node] = {}
        for key, key_node, value in pairs:
            if key not in ENTRY_KEYS:
                raise self.error(
                    key_node, f"{where}: " + self.unexpected(key, ENTRY_KEYS, "in an entry")
                )
            fields[key] = value
        devices = self.devices(where, node, fields.get("devices"))
        enabled_node = fields.get("mig-enabled")
        if enabled_node is None:
            raise self.error(node, f"{where}: mig-enabled is required (true or false)")
        if self.kind(enabled_node) == "null":
            # nvidia-mig-parted decodes null into Go's zero value: false.
            self.warn(enabled_node, f"{where}: mig-enabled is null and is read as false")
        elif self.kind(enabled_node) != "bool":
            raise self.error(
                enabled_node,
                f"{where}: mig-enabled must be true or false, not {self.describe(enabled_node)}",
            )
        enabled = self.scalar(enabled_node) is True
        counts, marks = self.mig_devices(where, node, enabled, fields.get("mig-devices"))
        filters = self.device_filters(where, fields.get("device-filter"))
        mark = node.start_mark
        return ConfigEntry(
            devices=devices,
            mig_enabled=enabled,
            mig_devices=counts,
            device_filters=filters,
            file=self.file,
            line=mark.line + 1,
            column=mark.column + 1,
            profile_marks=marks,
        )

    def devices(
        self, where: str, entry: Node, node: Node | None
    ) -> Literal["all"] | tuple[int, ...]:
        expected = 'devices must be "all" or a list of GPU indices'
        if node is None or (isinstance(node, ScalarNode) and self.kind(node) == "null"):
            raise self.error(
                node or entry, f'{where}: devices is required ("all" or a list of GPU indices)'
            )
        if isinstance(node, SequenceNode):
            indices: list[int] = []
            for item in node.value:
                value = self.whole_number(item, f"{where}: a GPU index")
                if value is None:
                    raise self.error(
                        item, f"{where}: a GPU index must be an integer, not {self.describe(item)}"
                    )
                if value < 0:
                    raise self.error(item, f"{where}: GPU index {value} is negative")
                indices.append(value)
            if not indices:
                self.warn(node, f"{where}: devices is an empty list, so the entry covers no GPU")
            return tuple(sorted(set(indices)))
        kind = self.kind(node)
        if kind == "str" and self.scalar(node) == "all":
            return "all"
        if kind == "int":
            raise self.error(
                node, f"{where}: {expected}, not {self.describe(node)} (write [{node.value}])"
            )
        raise self.error(node, f"{where}: {expected}, not {self.describe(node)}")

    def mig_devices(
        self, where: str, entry: Node, enabled: bool, node: Node | None
    ) -> tuple[ProfileCounts, tuple[tuple[str, int, int], ...]]:
        absent = node is None or (isinstance(node, ScalarNode) and self.kind(node) == "null")
        if absent:
            if enabled:
                raise self.error(
                    node or entry,
                    f"{where}: mig-devices is required when mig-enabled is true "
                    f"(use {{}} for no instances)",
                )
            return ProfileCounts(), ()
        assert node is not None
        if not isinstance(node, MappingNode):
            raise self.error(
                node,
                f"{where}: mig-devices must map profile names to counts, not {self.describe(node)}",
            )
        pairs = self.items(node)
        if pairs and not enabled:
            raise self.error(node, f"{where}: mig-devices must be empty when mig-enabled is false")
        items: list[tuple[str, int]] = []
        marks: dict[str, tuple[int, int]] = {}
        for key, key_node, value in pairs:
            if self.kind(key_node) != "str":
                raise self.error(
                    key_node,
                    f"{where}: {json.dumps(key)} is not a MIG profile name {_NAME_EXAMPLE}",
                )
            try:
                name = parse_profile_name(key)
            except ValueError:
                raise self.error(
                    key_node,
                    f"{where}: {json.dumps(key)} is not a MIG profile name {_NAME_EXAMPLE}",
                ) from None
            count = self.whole_number(value, f"{where}: the count of {key}")
            if count is None:
                raise self.error(
                    value,
                    f"{where}: the count of {key} must be a whole number, "
                    f"not {self.describe(value)}",
                )
            if count < 0:
                raise self.error(
                    value, f"{where}: the count of {key} must not be negative ({count})"
                )
            canonical = name.canonical
            items.append((canonical, count))
            mark = key_node.start_mark
            marks.setdefault(canonical, (mark.line + 1, mark.column + 1))
        counts = ProfileCounts(items)
        if pairs and not counts:
            raise self.error(
                node,
                f"{where}: every count in mig-devices is 0; use mig-devices: {{}} for no instances",
            )
        return counts, tuple((n, line, col) for n, (line, col) in marks.items() if n in counts)

    def device_filters(self, where: str, node: Node | None) -> tuple[DeviceFilter, ...]:
        if node is None:
            return ()
        if isinstance(node, SequenceNode):
            return tuple(self.one_filter(where, item) for item in node.value)
        if isinstance(node, ScalarNode):
            if self.kind(node) == "null":
                return ()
            return (self.one_filter(where, node),)
        raise self.error(
            node,
            f"{where}: device-filter must be a device ID string or a list of them, not a mapping",
        )

    def one_filter(self, where: str, node: Node) -> DeviceFilter:
        kind = self.kind(node)
        if kind not in ("str", "int"):
            raise self.error(
                node,
                f'{where}: a device-filter must be a device ID string like "0x233010DE", '
                f"not {self.describe(node)}",
            )
        text = node.value
        try:
            parsed, bases = DeviceFilter.parse_with_bases(text)
        except ValueError as err:
            raise self.error(node, f"{where}: {err}") from None
        if kind == "int":
            self.warn(
                node,
                f"{where}: device-filter {text} is read as a number, which nvidia-mig-parted "
                f'refuses (it rejects the whole file); quote device IDs ("{parsed}")',
            )
        elif parsed.matches_all:
            self.warn(node, f'{where}: device-filter "" matches every GPU')
        elif any(base != 16 for base in bases):
            self.warn(
                node, f'{where}: device-filter {text} is not hexadecimal; write it as "{parsed}"'
            )
        return parsed


# --------------------------------------------------------------------------------- selecting


def select(config_file: MigConfigFile, name: str | None = None) -> SelectedConfig:
    """Pick the config named ``name``, or the only config when ``name`` is None.

    As nvidia-mig-parted selects: a file with several configs needs a name.
    """
    names = list(config_file.configs)
    if not names:
        raise ConfigError("the file has no MIG configs to select", file=config_file.file)
    if name is None:
        if len(names) > 1:
            raise ConfigError(
                f"the file has {len(names)} configs ({', '.join(names)}); select one with "
                f"-c/--selected-config",
                file=config_file.file,
            )
        name = names[0]
    elif name not in config_file.configs:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f'; did you mean "{close[0]}"?' if close else f"; it has: {', '.join(names)}"
        raise ConfigError(
            f"config {json.dumps(name)} is not in the file{hint}", file=config_file.file
        )
    return SelectedConfig(name, config_file.configs[name])
