"""Device filters (``device-filter``): their syntax and what they match.

A filter is ``<devicevendor>`` or ``<devicevendor>:<subsystem>``, each half a 32-bit number
(``0x20B010DE`` = PCI device 0x20B0 of vendor 0x10DE), parsed with Go's base-0 rules as
mig-parted does. migkit rejects what mig-parted silently turns into a never-matching filter.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

__all__ = ["DeviceFilter", "filters_match", "parse_go_uint32"]

_UINT32_MAX = 0xFFFFFFFF
_EXPECTED = "expected 0xDDDDVVVV or 0xDDDDVVVV:0xSSSSVVVV, e.g. 0x233010DE"


def _underscores_ok(text: str) -> bool:
    """Go's rule: ``_`` only between digits, or between a base prefix and a digit."""
    saw = "^"
    i = 0
    is_hex = False
    if len(text) >= 2 and text[0] == "0" and text[1].lower() in "bxo":
        i = 2
        saw = "0"
        is_hex = text[1].lower() == "x"
    for char in text[i:]:
        if char.isdigit() or (is_hex and char.lower() in "abcdef"):
            saw = "0"
        elif char == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
    return saw != "_"


def parse_go_uint32(text: str) -> tuple[int, int]:
    """Parse like Go ``strconv.ParseUint(text, 0, 32)``; returns ``(value, base)``.

    Raises ``ValueError`` with the reason.
    """
    if not text:
        raise ValueError("the number is empty")
    base = 10
    digits = text
    if text[0] == "0" and len(text) > 1:
        prefix = text[1].lower()
        if prefix == "x":
            base, digits = 16, text[2:]
        elif prefix == "o":
            base, digits = 8, text[2:]
        elif prefix == "b":
            base, digits = 2, text[2:]
        else:
            base, digits = 8, text[1:]
    if "_" in text and not _underscores_ok(text):
        raise ValueError(f"{text!r} has a misplaced '_'")
    digits = digits.replace("_", "")
    allowed = "0123456789abcdef"[:base]
    if not digits or any(ch.lower() not in allowed for ch in digits):
        raise ValueError(f"{text!r} is not a base-{base} number")
    value = int(digits, base)
    if value > _UINT32_MAX:
        raise ValueError(f"{text!r} does not fit in 32 bits")
    return value, base


@attrs.frozen(order=True)
class DeviceFilter:
    """One ``device-filter`` value.

    ``device`` is the packed device/vendor ID (``None`` for the empty filter ``""``, which
    matches every GPU); ``subsystem`` the packed subsystem device/vendor ID, if given.
    ``str()`` gives the canonical ``0x%08X[:0x%08X]`` spelling.
    """

    device: int | None
    subsystem: int | None = None

    @property
    def matches_all(self) -> bool:
        return self.device is None

    @classmethod
    def parse(cls, text: str) -> DeviceFilter:
        """Parse ``"0x233010DE"``, ``"0x233010DE:0x16C010DE"`` or ``""``.

        Raises ``ValueError`` naming the value and the expected form.
        """
        return cls.parse_with_bases(text)[0]

    @classmethod
    def parse_with_bases(cls, text: str) -> tuple[DeviceFilter, tuple[int, ...]]:
        """Like :meth:`parse`, also returning the base each half was written in."""
        if text == "":
            return cls(None), ()
        halves = text.split(":")
        if len(halves) > 2:
            raise ValueError(f"device filter {text!r} has more than one ':' ({_EXPECTED})")
        values: list[int] = []
        bases: list[int] = []
        for half in halves:
            try:
                value, base = parse_go_uint32(half)
            except ValueError as err:
                raise ValueError(
                    f"device filter {text!r} is not a device ID: {err} ({_EXPECTED})"
                ) from None
            values.append(value)
            bases.append(base)
        subsystem = values[1] if len(values) == 2 else None
        return cls(values[0], subsystem), tuple(bases)

    def matches(self, pci_device_id: int, pci_subsystem_id: int) -> bool:
        """True if a GPU with these packed IDs matches.

        Without a subsystem only the device/vendor ID is compared (every board variant
        matches); with one, the subsystem must be equal too.
        """
        if self.device is None:
            return True
        if self.device != pci_device_id:
            return False
        return self.subsystem is None or self.subsystem == pci_subsystem_id

    def __str__(self) -> str:
        if self.device is None:
            return ""
        if self.subsystem is None:
            return f"0x{self.device:08X}"
        return f"0x{self.device:08X}:0x{self.subsystem:08X}"


def filters_match(
    filters: Sequence[DeviceFilter], pci_device_id: int, pci_subsystem_id: int
) -> bool:
    """An entry's filter list matches if it is empty or any one filter matches."""
    return not filters or any(f.matches(pci_device_id, pci_subsystem_id) for f in filters)
