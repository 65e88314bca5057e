"""A GPU model compiled for the search (profiles as bit masks of slices, CI fillings per GI
profile) and a request turned into demands against it."""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Mapping

import attrs

from migkit.errors import InfeasibleError, UnknownProfileError
from migkit.models import ComputeProfile, GpuInstance, GpuModel, Placement, Profile
from migkit.names import ProfileCounts, ProfileName, canonical_counts, parse_profile_name
from migkit.planning.profiles import resolve
from migkit.planning.solver.layout import popcount, slices_phrase

# ----------------------------------------------------------------------------- compiled model


class CiKind:
    """The compute instances of one canonical name inside GIs of one profile."""

    __slots__ = ("cap", "masks", "name", "placements", "profile", "size")

    def __init__(self, name: str, profile: ComputeProfile) -> None:
        self.name = name
        self.profile = profile
        self.size = profile.slice_count
        self.cap = profile.instance_count
        self.placements = profile.placements or (Placement(0, profile.slice_count),)
        self.masks = tuple(p.mask for p in self.placements)


Vector = tuple[int, ...]
Filling = tuple[tuple[int, int], ...]  # (kind index, placement index) pairs


class GiKind:
    """One GPU-instance profile of a model, with its CI tables precomputed."""

    def __init__(self, order: int, profile: Profile) -> None:
        self.order = order
        self.profile = profile
        self.name = profile.name
        self.parsed: ProfileName = parse_profile_name(profile.name)
        self.size = profile.memory_slices
        self.cap = profile.instance_count
        self.placements = tuple(sorted(profile.placements, key=lambda p: p.start))
        self.masks = tuple(p.mask for p in self.placements)
        self.disjoint = all(
            not a.overlaps(b) for a, b in itertools.combinations(self.placements, 2)
        )
        self.all_me = profile.all_me
        self.no_me = profile.no_me
        # CI kinds by canonical name; the preferred compute profile is the one with the most
        # SMs, then the lowest id (what resolve() returns for the name).
        by_name: dict[str, ComputeProfile] = {}
        for cp in sorted(profile.compute_profiles, key=lambda c: (-c.multiprocessors, c.id)):
            name = attrs.evolve(self.parsed, compute_slices=cp.slice_count).canonical
            by_name.setdefault(name, cp)
        ordered = sorted(by_name.items(), key=lambda kv: (-kv[1].slice_count, kv[1].id))
        self.ci_kinds = tuple(CiKind(name, cp) for name, cp in ordered)
        self.ci_index = {kind.name: i for i, kind in enumerate(self.ci_kinds)}
        self._fill_memo: dict[tuple[int, Vector], dict[Vector, Filling]] = {}
        self._pack_memo: dict[Vector, tuple[int, tuple[Vector, ...]]] = {}

    def ci_kind_of(self, ci_profile_id: int, name: str, size: int) -> int | None:
        """The CI kind of an existing compute instance (by profile ID, else by name)."""
        for cp in self.profile.compute_profiles:
            if cp.id == ci_profile_id:
                canonical = attrs.evolve(self.parsed, compute_slices=cp.slice_count).canonical
                return self.ci_index.get(canonical)
        return self.ci_index.get(name)

    def fillings(self, occupied: int, present: Vector) -> dict[Vector, Filling]:
        """Every distinct count vector of CIs that can be added to a GI whose compute slices
        ``occupied`` are taken by CIs counted in ``present``, with the first placement set found
        for each (kinds largest first, lowest starts first). Includes the empty vector."""
        key = (occupied, present)
        cached = self._fill_memo.get(key)
        if cached is not None:
            return cached
        slots = [
            (k, p, mask)
            for k, kind in enumerate(self.ci_kinds)
            for p, mask in enumerate(kind.masks)
        ]
        found: dict[Vector, Filling] = {}
        n = len(self.ci_kinds)
        counts = list(present)

        def walk(i: int, used: int, chosen: list[tuple[int, int]]) -> None:
            vector = tuple(counts[k] - present[k] for k in range(n))
            found.setdefault(vector, tuple(chosen))
            for j in range(i, len(slots)):
                k, p, mask = slots[j]
                if mask & used or counts[k] >= self.ci_kinds[k].cap:
                    continue
                counts[k] += 1
                chosen.append((k, p))
                walk(j + 1, used | mask, chosen)
                chosen.pop()
                counts[k] -= 1

        walk(0, occupied, [])
        self._fill_memo[key] = found
        return found

    def empty_fillings(self) -> list[tuple[Vector, Filling]]:
        """Non-empty fillings of a fresh GI, fullest first (the packing order)."""
        zero = (0,) * len(self.ci_kinds)
        items = [(v, f) for v, f in self.fillings(0, zero).items() if any(v)]
        items.sort(
            key=lambda vf: (
                -sum(c * self.ci_kinds[k].size for k, c in enumerate(vf[0])),
                tuple(-c for c in vf[0]),
            )
        )
        return items

    def min_pack(self, demand: Vector) -> tuple[int, tuple[Vector, ...]]:
        """The fewest fresh GIs holding exactly ``demand`` CIs, and their fillings (exact)."""
        if not any(demand):
            return 0, ()
        cached = self._pack_memo.get(demand)
        if cached is not None:
            return cached
        best: tuple[int, tuple[Vector, ...]] | None = None
        for vector, _ in self.empty_fillings():
            if any(v > d for v, d in zip(vector, demand, strict=True)):
                continue
            rest = tuple(d - v for d, v in zip(demand, vector, strict=True))
            count, groups = self.min_pack(rest)
            if count < 0:
                continue
            if best is None or count + 1 < best[0]:
                best = (count + 1, (vector, *groups))
        result = best if best is not None else (-1, ())
        self._pack_memo[demand] = result
        return result

    def filling_for(self, occupied: int, present: Vector, vector: Vector) -> Filling:
        return self.fillings(occupied, present)[vector]


Found = tuple[tuple[int, ...], int, tuple[tuple[int, ...], ...]]  # score, final mask, choices


class Compiled:
    """A model's tables in solver form, with memo tables shared by every solve on it."""

    def __init__(self, model: GpuModel) -> None:
        self.model = model
        ordered = sorted(
            model.profiles,
            key=lambda p: (-p.memory_slices, -p.slice_count, len(p.placements), p.index, p.id),
        )
        self.kinds = tuple(GiKind(i, p) for i, p in enumerate(ordered))
        self.by_name = {k.name: k for k in self.kinds}
        self.by_id = {k.profile.id: k for k in self.kinds}
        slices = max((p.end for k in self.kinds for p in k.placements), default=0)
        self.slices = max(slices, model.memory_slices)
        self.full = (1 << self.slices) - 1
        self._sizes = sorted({k.size for k in self.kinds}, reverse=True)
        self._all_masks = [(k.size, m) for k in self.kinds for m in k.masks]
        self._scores: dict[int, tuple[int, ...]] = {}
        self._memo: dict[tuple[int, tuple[int, ...], int], Found | None] = {}

    def score(self, free: int) -> tuple[int, ...]:
        """How many GI placements still fit in ``free``, counted per size, largest first."""
        cached = self._scores.get(free)
        if cached is None:
            cached = tuple(
                sum(1 for s, m in self._all_masks if s == size and m & ~free == 0)
                for size in self._sizes
            )
            self._scores[free] = cached
        return cached

    def place(self, counts: tuple[int, ...], occupied: int) -> Found | None:
        """Best placement of ``counts[j]`` new GIs of each kind around ``occupied``."""
        if len(self._memo) > 500_000:
            self._memo.clear()
        return self._place(0, counts, occupied)

    def _place(self, j: int, counts: tuple[int, ...], occupied: int) -> Found | None:
        while j < len(counts) and counts[j] == 0:
            j += 1
        if j == len(counts):
            return self.score(self.full & ~occupied), occupied, ()
        key = (j, counts[j:], occupied)
        if key in self._memo:
            return self._memo[key]
        need = sum(c * self.kinds[i].size for i, c in enumerate(counts) if i >= j)
        best: Found | None = None
        if need <= self.slices - popcount(occupied & self.full):
            kind = self.kinds[j]
            free = [i for i, m in enumerate(kind.masks) if m & occupied == 0]
            for combo in itertools.combinations(free, counts[j]):
                mask = 0
                for i in combo:
                    if mask & kind.masks[i]:
                        break
                    mask |= kind.masks[i]
                else:
                    sub = self._place(j + 1, counts, occupied | mask)
                    if sub is not None and (best is None or sub[0] > best[0]):
                        best = (sub[0], sub[1], ((j, *combo), *sub[2]))
        self._memo[key] = best
        return best


_COMPILED: dict[int, tuple[weakref.ref[GpuModel], Compiled]] = {}


def compile_model(model: GpuModel) -> Compiled:
    """The compiled form of ``model`` (cached per model object; a pure memo)."""
    entry = _COMPILED.get(id(model))
    if entry is not None and entry[0]() is model:
        return entry[1]
    compiled = Compiled(model)
    key = id(model)
    _COMPILED[key] = (weakref.ref(model, lambda _ref: _COMPILED.pop(key, None)), compiled)
    return compiled


# ----------------------------------------------------------------------------- requests


@attrs.frozen
class Demand:
    """Requested CIs per GI kind (vectors over that kind's CI kinds)."""

    vectors: tuple[Vector, ...]
    names: ProfileCounts


def demand_of(cm: Compiled, counts: Mapping[str, int]) -> Demand:
    for name, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"the count of {name!r} must be a non-negative integer, not {count!r}")
    try:
        canonical = canonical_counts(counts)
    except ValueError as err:
        raise UnknownProfileError(str(err)) from None
    vectors = [[0] * len(k.ci_kinds) for k in cm.kinds]
    for name, count in canonical.items():
        profile, _ = resolve(cm.model, name)  # raises UnknownProfileError
        kind = cm.by_id[profile.id]
        parsed = parse_profile_name(name)
        ci = kind.ci_index.get(
            attrs.evolve(kind.parsed, compute_slices=parsed.compute_slices).canonical
        )
        if ci is None:  # resolve() found no CI table for a GI-level name
            raise InfeasibleError(
                f"{cm.model.name}: the table lists no compute instance profiles for {kind.name}"
            )
        vectors[kind.order][ci] += count
    for kind in cm.kinds:
        # Far-out counts fail fast here rather than deep in the search (near misses get the
        # detailed explanation from the search itself).
        wanted = sum(vectors[kind.order])
        per_gi = max((c.cap for c in kind.ci_kinds), default=1)
        if wanted > 4 * kind.cap * per_gi:
            raise InfeasibleError(
                f"{cm.model.name}: {wanted} compute instances in {kind.name} GPU instances requested, "
                f"but at most {kind.cap} such GPU instance(s) with at most {per_gi} compute instance(s) "
                f"each fit on the GPU"
            )
    return Demand(tuple(tuple(v) for v in vectors), canonical)


@attrs.frozen
class Existing:
    gi: GpuInstance
    kind: GiKind | None
    mask: int
    ci_mask: int
    vector: Vector
    problem: str  # why it cannot be kept, "" if it can

    @property
    def label(self) -> str:
        slices = slices_phrase(self.mask)
        return f"{self.gi.profile} (GPU instance {self.gi.id}) at {slices}"


def classify(cm: Compiled, demand: Demand, gi: GpuInstance) -> Existing:
    mask = Placement(gi.start, gi.size).mask
    kind = cm.by_id.get(gi.profile_id) or cm.by_name.get(gi.profile)
    if kind is None:
        return Existing(
            gi, None, mask, 0, (), f"its profile {gi.profile} is not in the {cm.model.name} table"
        )
    vector = [0] * len(kind.ci_kinds)
    ci_mask = 0
    unwanted: list[str] = []
    for ci in gi.compute_instances:
        k = kind.ci_kind_of(ci.profile_id, ci.profile, ci.size)
        if k is None:
            unwanted.append(ci.profile)
            continue
        vector[k] += 1
        ci_mask |= Placement(ci.start, ci.size).mask
    wanted = demand.vectors[kind.order]
    excess = [
        kind.ci_kinds[k].name
        for k, (have, want) in enumerate(zip(vector, wanted, strict=True))
        if have > want
    ]
    problem = ""
    if not any(wanted):
        problem = f"the request has no {kind.name} instances"
    elif unwanted or excess:
        names = ", ".join(sorted(set(unwanted + excess)))
        problem = f"it holds compute instances ({names}) beyond what the request asks for"
    return Existing(gi, kind, mask, ci_mask, tuple(vector), problem)
