"""The values a config file becomes: entries, the file, the selected config, warnings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Literal

import attrs

from migkit.config.filters import DeviceFilter
from migkit.names import ProfileCounts

__all__ = ["ConfigEntry", "ConfigWarning", "MigConfigFile", "SelectedConfig"]


@attrs.frozen
class ConfigWarning:
    """Something accepted but probably unintended; ``str()`` is ``file:line:col: message``."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = [str(p) for p in (self.file, self.line, self.column) if p is not None]
        return f"{':'.join(where)}: {self.message}" if where else self.message


def _counts_converter(value: Mapping[str, int] | ProfileCounts) -> ProfileCounts:
    return value if isinstance(value, ProfileCounts) else ProfileCounts(value.items())


def _filters_converter(value: Iterable[DeviceFilter]) -> tuple[DeviceFilter, ...]:
    return tuple(value)


def _warnings_converter(value: Iterable[ConfigWarning]) -> tuple[ConfigWarning, ...]:
    return tuple(value)


def _devices_converter(
    value: str | tuple[int, ...] | list[int],
) -> Literal["all"] | tuple[int, ...]:
    if value == "all":
        return "all"
    if isinstance(value, str):
        raise ValueError(f'devices must be "all" or a list of indices, not {value!r}')
    return tuple(sorted(set(value)))


@attrs.frozen
class ConfigEntry:
    """One entry of a named config: which GPUs, and what MIG state they should have.

    ``mig_devices`` has canonical names, no zero counts, duplicates summed. ``devices`` is
    ``"all"`` or sorted, de-duplicated indices. The source position (``file``, ``line``,
    ``column``, ``profile_marks``) is for messages and does not take part in equality.
    """

    devices: Literal["all"] | tuple[int, ...] = attrs.field(converter=_devices_converter)
    mig_enabled: bool
    mig_devices: ProfileCounts = attrs.field(factory=ProfileCounts, converter=_counts_converter)
    device_filters: tuple[DeviceFilter, ...] = attrs.field(default=(), converter=_filters_converter)
    file: str | None = attrs.field(default=None, eq=False)
    line: int | None = attrs.field(default=None, eq=False)
    column: int | None = attrs.field(default=None, eq=False)
    # (canonical name, line, column) of each mig-devices key as first written
    profile_marks: tuple[tuple[str, int, int], ...] = attrs.field(default=(), eq=False)

    def same_spec(self, other: ConfigEntry) -> bool:
        """True when both entries ask for the same MIG state (mode and counts)."""
        return self.mig_enabled == other.mig_enabled and self.mig_devices == other.mig_devices

    def profile_location(self, name: str) -> tuple[str | None, int | None, int | None]:
        """``(file, line, column)`` of a mig-devices key (by canonical name), else the entry's."""
        for canonical, line, column in self.profile_marks:
            if canonical == name:
                return self.file, line, column
        return self.file, self.line, self.column


def _configs_converter(
    value: Mapping[str, tuple[ConfigEntry, ...] | list[ConfigEntry]],
) -> Mapping[str, tuple[ConfigEntry, ...]]:
    return MappingProxyType({name: tuple(entries) for name, entries in value.items()})


@attrs.frozen(unsafe_hash=False)
class MigConfigFile:
    """A loaded v1 file: named configs in file order, the source name and any warnings."""

    configs: Mapping[str, tuple[ConfigEntry, ...]] = attrs.field(
        factory=dict, converter=_configs_converter
    )
    file: str | None = attrs.field(default=None, eq=False)
    warnings: tuple[ConfigWarning, ...] = attrs.field(
        default=(), converter=_warnings_converter, eq=False
    )


@attrs.frozen
class SelectedConfig:
    """The config chosen with ``-c`` (or the only one in the file)."""

    name: str
    entries: tuple[ConfigEntry, ...]
