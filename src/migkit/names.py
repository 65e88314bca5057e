"""MIG profile names: the grammar, the canonical form and names as NVML reports them.

A foundation module like ``models`` and ``errors``: it imports neither, so the config parser,
the planner and the NVML layer can all name profiles the same way.

A profile name is ``[<C>c.]<G>g.<GB>gb`` with an optional attribute suffix, ``+a[,b...]``
or ``-a[,b...]`` (for example ``1g.10gb``, ``1c.3g.40gb``, ``1g.10gb+me``, ``1g.24gb-me``).
``C`` counts compute slices, ``G`` GPU-instance (compute) slices and ``GB`` is the memory in GB.

The canonical form drops ``<C>c.`` when ``C == G``, prints numbers without leading zeros and
sorts the attributes::

    >>> canonical_name("1c.1g.05gb")
    '1g.5gb'
    >>> canonical_name("1c.3g.20gb")
    '1c.3g.20gb'

Every comparison of names in migkit goes through the canonical form, and every count map
through :func:`canonical_counts` (canonical keys, zero counts dropped, duplicates summed).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping

import attrs

__all__ = [
    "ProfileCounts",
    "ProfileName",
    "canonical_counts",
    "canonical_from_nvml",
    "canonical_name",
    "computed_gb",
    "name_from_nvml",
    "parse_profile_name",
]

_INT64_MAX = (1 << 63) - 1
_ATTRIBUTE = re.compile(r"[A-Za-z.][A-Za-z0-9.]*")
_FIELD = re.compile(r"([0-9]+)(c|g|gb)")


@attrs.frozen
class ProfileName:
    """A parsed MIG profile name.

    ``attributes`` are sorted; ``negative`` is True for the ``-attr`` form (``1g.24gb-me``).
    """

    compute_slices: int
    gpu_slices: int
    memory_gb: int
    attributes: tuple[str, ...] = ()
    negative: bool = False

    @property
    def is_compute_level(self) -> bool:
        """True when the name is a compute instance smaller than its GPU instance (C < G)."""
        return self.compute_slices != self.gpu_slices

    @property
    def suffix(self) -> str:
        """The attribute suffix, ``"+me"``, ``"-me"`` or ``""``."""
        if not self.attributes:
            return ""
        return ("-" if self.negative else "+") + ",".join(self.attributes)

    @property
    def gi_name(self) -> str:
        """The GPU-instance name this name lives in: ``3g.40gb`` for ``1c.3g.40gb``."""
        return f"{self.gpu_slices}g.{self.memory_gb}gb{self.suffix}"

    @property
    def canonical(self) -> str:
        """``{G}g.{GB}gb`` when C == G, else ``{C}c.{G}g.{GB}gb``, then the suffix."""
        if self.compute_slices == self.gpu_slices:
            return self.gi_name
        return f"{self.compute_slices}c.{self.gi_name}"

    def __str__(self) -> str:
        return self.canonical


def _field(text: str, suffix: str, full: str) -> int:
    match = _FIELD.fullmatch(text)
    if match is None or match.group(2) != suffix:
        raise ValueError(
            f"{full!r} is not a MIG profile name: {text!r} should be a decimal number "
            f"followed by {suffix!r}"
        )
    value = int(match.group(1))
    if value > _INT64_MAX:
        raise ValueError(f"{full!r} is not a MIG profile name: {text!r} is out of range")
    return value


def parse_profile_name(text: str) -> ProfileName:
    """Parse a profile name with the grammar go-nvlib (and so mig-parted) accepts.

    Raises ``ValueError`` naming the precise problem::

        >>> parse_profile_name("1c.3g.20gb").gi_name
        '3g.20gb'
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a MIG profile name: it is not a string")
    if not text:
        raise ValueError("'' is not a MIG profile name: it is empty")
    plus, minus = text.find("+"), text.find("-")
    if plus >= 0 and minus >= 0:
        raise ValueError(f"{text!r} is not a MIG profile name: it has both '+' and '-' attributes")
    split = plus if plus >= 0 else minus
    negative = minus >= 0
    body, attributes = (text, ()) if split < 0 else (text[:split], _attributes(text, split))
    fields = body.split(".")
    if len(fields) == 2:
        gpu = _field(fields[0], "g", text)
        compute = gpu
        memory = _field(fields[1], "gb", text)
    elif len(fields) == 3:
        compute = _field(fields[0], "c", text)
        gpu = _field(fields[1], "g", text)
        memory = _field(fields[2], "gb", text)
    else:
        raise ValueError(
            f"{text!r} is not a MIG profile name: expected <G>g.<GB>gb or <C>c.<G>g.<GB>gb "
            f"before any attributes"
        )
    return ProfileName(compute, gpu, memory, attributes, negative and bool(attributes))


def _attributes(text: str, split: int) -> tuple[str, ...]:
    parts = text[split + 1 :].split(",")
    seen: set[str] = set()
    for part in parts:
        if not part:
            raise ValueError(f"{text!r} is not a MIG profile name: it has an empty attribute")
        if part in seen:
            raise ValueError(f"{text!r} is not a MIG profile name: attribute {part!r} repeats")
        if _ATTRIBUTE.fullmatch(part) is None or part.startswith(".") or part.endswith("."):
            raise ValueError(
                f"{text!r} is not a MIG profile name: attribute {part!r} must be letters, digits "
                f"and inner dots, not starting with a digit"
            )
        seen.add(part)
    return tuple(sorted(parts))


def canonical_name(text: str) -> str:
    """The canonical spelling of a profile name (raises ``ValueError`` if malformed)."""
    return parse_profile_name(text).canonical


def name_from_nvml(nvml_name: str) -> str:
    """The canonical name of an NVML profile name: ``"MIG 1c.3g.40gb"`` -> ``"1c.3g.40gb"``.

    A MIG device name with the product in front (``"NVIDIA A100 ... MIG 1g.5gb"``) works too.
    """
    _, marker, rest = nvml_name.rpartition("MIG ")
    return canonical_name((rest if marker else nvml_name).strip())


@functools.cache
def canonical_from_nvml(nvml_name: str) -> str:
    """``"MIG 1g.10gb"`` -> ``"1g.10gb"``; ``"MIG 1c.1g.10gb"`` -> ``"1g.10gb"``.

    Names that do not follow the profile grammar are kept as NVML gives them (without the
    ``MIG`` prefix), so that an unexpected driver name is shown rather than lost.
    """
    try:
        return name_from_nvml(nvml_name)
    except ValueError:
        return nvml_name.removeprefix("MIG ").strip()


def computed_gb(memory_mib: int, device_total_bytes: int) -> int:
    """The GB number mig-parted puts in a profile name when it computes one, in exact integers.

    ``k = ceil(8 * mem / total)`` eighths of the board, ``totalGB = ceil(total / 2**30)``, and
    ``GB = round_half_away_from_zero(k * totalGB / 8)``::

        >>> computed_gb(19968, 40960 * 2**20)
        20
        >>> computed_gb(71168, 143771 * 2**20)  # 141 GB x 4/8 = 70.5 -> 71
        71
    """
    if device_total_bytes <= 0:
        raise ValueError("device memory must be positive")
    eighths = -(-8 * memory_mib * 2**20 // device_total_bytes)
    total_gb = -(-device_total_bytes // 2**30)
    return (2 * eighths * total_gb + 8) // 16


class ProfileCounts(Mapping[str, int]):
    """An immutable, hashable map of canonical profile name -> positive count.

    Build it with :func:`canonical_counts`; iteration is in sorted name order.
    """

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Iterable[tuple[str, int]] = ()) -> None:
        merged: dict[str, int] = {}
        for name, count in items:
            merged[name] = merged.get(name, 0) + count
        self._items: dict[str, int] = {k: merged[k] for k in sorted(merged) if merged[k] != 0}
        self._hash = hash(tuple(self._items.items()))

    def __getitem__(self, key: str) -> int:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ProfileCounts):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._items == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"ProfileCounts({self._items!r})"

    @property
    def total(self) -> int:
        return sum(self._items.values())


def canonical_counts(counts: Mapping[str, int] | Iterable[tuple[str, int]]) -> ProfileCounts:
    """Canonicalise every name, sum duplicates, drop zero counts.

    ``{"1c.1g.5gb": 2, "1g.5gb": 1, "2g.10gb": 0}`` -> ``{"1g.5gb": 3}``. Raises
    ``ValueError`` on a malformed name or a negative or non-integer count.
    """
    pairs = counts.items() if isinstance(counts, Mapping) else counts
    items: list[tuple[str, int]] = []
    for name, count in pairs:
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"the count of {name!r} must be an integer, not {count!r}")
        if count < 0:
            raise ValueError(f"the count of {name!r} must not be negative ({count})")
        items.append((canonical_name(name), count))
    return ProfileCounts(items)
