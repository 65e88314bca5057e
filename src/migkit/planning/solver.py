"""The exact placement solver: where every GPU instance and compute instance goes.

``solve(model, counts, existing=())`` returns a :class:`Layout` or raises
:class:`~migkit.errors.InfeasibleError` saying why nothing fits. It works on the GPU's own
placement tables (each profile's possible placements, as NVML lists them):

- a GPU instance (GI) sits at one of its profile's possible placements, counted in memory
  slices; GIs may not share a memory slice; a profile has at most ``instance_count`` GIs;
- while a ``+me.all`` GI exists only ``-me`` GIs may coexist with it;
- a compute instance (CI) sits at one of its CI profile's placements inside its GI, counted in
  compute slices; CIs of one GI may not share a compute slice.

Counts are compute-instance names, as in mig-parted configs. A GI-level name (``3g.40gb``)
is a GI holding one CI that covers it. Smaller CIs of the same GI profile (``1c.3g.40gb``,
``2c.3g.40gb``) are packed into as few GIs as their placements allow.

**Exactness.** The search is exhaustive over the placement tables (memoised on the remaining
counts and the occupied-slice bit mask), so it finds a layout whenever one exists and proves
infeasibility otherwise.

**Which layout (deterministic tie-break).** Among all layouts of the new GIs, the solver picks
the one whose *free* memory slices could still host the most GI placements, counted by
placement size from the largest down (so the free space is kept in the largest usable
blocks); ties go to the layout found first when profiles are taken largest first and each
one's placements in increasing start order. On an empty A100 this puts a lone ``1g.5gb`` at
slice 6 and a lone ``3g.20gb`` at 4, as the driver does, leaving 0-3 for a ``4g``.

**Existing instances.** With ``existing`` (the GIs on the GPU now), the solver keeps as many
of them as possible at their placements, with their CIs (exact: it tries keep-sets from the
largest down, and feasibility only shrinks as more are kept). An existing GI can be kept
when its profile is requested and each of its CIs is requested; requested CIs of that GI
profile may be added into its free compute slices (this also reuses a GI without CIs). Among
keep-sets of the same size it keeps the most CIs, then picks the best layout as above. A GI
marked ``in_use`` is always kept where it is, or the solve fails naming it. A kept GI never
loses some of its CIs: if a CI is not wanted, its whole GI is recreated.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterable, Mapping, Sequence

import attrs

from migkit.errors import InfeasibleError, UnknownProfileError
from migkit.models import ComputeProfile, GpuInstance, GpuModel, Placement, Profile
from migkit.names import ProfileCounts, ProfileName, canonical_counts, parse_profile_name
from migkit.planning.profiles import resolve

__all__ = [
    "Layout",
    "PlacedCompute",
    "PlacedInstance",
    "describe_slices",
    "in_use_by",
    "slices_phrase",
    "solve",
]


# ----------------------------------------------------------------------------- result types


@attrs.frozen
class PlacedCompute:
    """A compute instance at a placement in compute slices inside its GPU instance."""

    profile: str  # canonical CI name, "1c.3g.40gb" or "3g.40gb"
    profile_id: int
    start: int
    size: int
    kept: bool = False
    existing_id: int | None = None

    @property
    def placement(self) -> Placement:
        return Placement(self.start, self.size)


@attrs.frozen
class PlacedInstance:
    """A GPU instance at a placement in memory slices, with its compute instances.

    ``kept`` is True for an existing GI left in place (``existing_id`` is its GI id); its
    ``compute_instances`` then hold the kept CIs (``kept=True``) and any to add.
    """

    profile: str  # canonical GI profile name
    start: int
    size: int
    profile_id: int
    compute_instances: tuple[PlacedCompute, ...] = ()
    kept: bool = False
    existing_id: int | None = None

    @property
    def placement(self) -> Placement:
        return Placement(self.start, self.size)

    @property
    def mask(self) -> int:
        return self.placement.mask

    @property
    def new_compute_instances(self) -> tuple[PlacedCompute, ...]:
        return tuple(ci for ci in self.compute_instances if not ci.kept)


@attrs.frozen
class Layout:
    """A complete target layout for one GPU.

    ``instances`` are ordered by start. ``dropped`` lists the existing GIs that are not kept
    (they have to be destroyed first).
    """

    model: str
    instances: tuple[PlacedInstance, ...]
    dropped: tuple[GpuInstance, ...] = ()

    @property
    def counts(self) -> ProfileCounts:
        """Compute-instance counts by canonical name (what a config's mig-devices says)."""
        return ProfileCounts(
            (ci.profile, 1) for gi in self.instances for ci in gi.compute_instances
        )

    @property
    def kept(self) -> tuple[PlacedInstance, ...]:
        return tuple(gi for gi in self.instances if gi.kept)

    @property
    def created(self) -> tuple[PlacedInstance, ...]:
        return tuple(gi for gi in self.instances if not gi.kept)

    @property
    def occupied_mask(self) -> int:
        mask = 0
        for gi in self.instances:
            mask |= gi.mask
        return mask

    def describe(self) -> str:
        """One line per GI, ``3g.40gb at 4:4 [3g.40gb at 0:3]``."""
        lines = []
        for gi in self.instances:
            cis = ", ".join(f"{ci.profile} at {ci.start}:{ci.size}" for ci in gi.compute_instances)
            keep = " (kept)" if gi.kept else ""
            lines.append(f"{gi.profile} at {gi.start}:{gi.size}{keep} [{cis}]")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- formatting


def describe_slices(mask: int) -> str:
    """``0b11110011`` -> ``"0-1, 4-7"``."""
    runs: list[str] = []
    bit = 0
    while mask >> bit:
        if mask >> bit & 1:
            start = bit
            while mask >> (bit + 1) & 1:
                bit += 1
            runs.append(str(start) if start == bit else f"{start}-{bit}")
        bit += 1
    return ", ".join(runs)


def slices_phrase(mask: int, kind: str = "memory") -> str:
    """``"memory slice 6"`` or ``"memory slices 0-3"``."""
    noun = f"{kind} slice" if _popcount(mask) == 1 else f"{kind} slices"
    return f"{noun} {describe_slices(mask)}"


def in_use_by(gi: GpuInstance) -> str:
    """``" by PID 4242"`` or ``" by PIDs 17, 4242"`` for an in-use GI; ``""`` when no PIDs are
    known (the driver can report a process count without them)."""
    pids = sorted({pid for ci in gi.compute_instances for pid in ci.pids})
    if not pids:
        return ""
    return f" by PID{'s' if len(pids) > 1 else ''} {', '.join(str(pid) for pid in pids)}"


def _describe_starts(starts: Sequence[int]) -> str:
    if not starts:
        return "nowhere"
    if len(starts) > 2 and list(starts) == list(range(starts[0], starts[-1] + 1)):
        return f"{starts[0]}-{starts[-1]}"
    return ", ".join(str(s) for s in starts)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _popcount(mask: int) -> int:
    return bin(mask).count("1")


# ----------------------------------------------------------------------------- compiled model


class _CiKind:
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


class _GiKind:
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
        self.ci_kinds = tuple(_CiKind(name, cp) for name, cp in ordered)
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


_Found = tuple[tuple[int, ...], int, tuple[tuple[int, ...], ...]]  # score, final mask, choices


class _Compiled:
    """A model's tables in solver form, with memo tables shared by every solve on it."""

    def __init__(self, model: GpuModel) -> None:
        self.model = model
        ordered = sorted(
            model.profiles,
            key=lambda p: (-p.memory_slices, -p.slice_count, len(p.placements), p.index, p.id),
        )
        self.kinds = tuple(_GiKind(i, p) for i, p in enumerate(ordered))
        self.by_name = {k.name: k for k in self.kinds}
        self.by_id = {k.profile.id: k for k in self.kinds}
        slices = max((p.end for k in self.kinds for p in k.placements), default=0)
        self.slices = max(slices, model.memory_slices)
        self.full = (1 << self.slices) - 1
        self._sizes = sorted({k.size for k in self.kinds}, reverse=True)
        self._all_masks = [(k.size, m) for k in self.kinds for m in k.masks]
        self._scores: dict[int, tuple[int, ...]] = {}
        self._memo: dict[tuple[int, tuple[int, ...], int], _Found | None] = {}

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

    def place(self, counts: tuple[int, ...], occupied: int) -> _Found | None:
        """Best placement of ``counts[j]`` new GIs of each kind around ``occupied``."""
        if len(self._memo) > 500_000:
            self._memo.clear()
        return self._place(0, counts, occupied)

    def _place(self, j: int, counts: tuple[int, ...], occupied: int) -> _Found | None:
        while j < len(counts) and counts[j] == 0:
            j += 1
        if j == len(counts):
            return self.score(self.full & ~occupied), occupied, ()
        key = (j, counts[j:], occupied)
        if key in self._memo:
            return self._memo[key]
        need = sum(c * self.kinds[i].size for i, c in enumerate(counts) if i >= j)
        best: _Found | None = None
        if need <= self.slices - _popcount(occupied & self.full):
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


_COMPILED: dict[int, tuple[weakref.ref[GpuModel], _Compiled]] = {}


def _compiled(model: GpuModel) -> _Compiled:
    """The compiled form of ``model`` (cached per model object; a pure memo)."""
    entry = _COMPILED.get(id(model))
    if entry is not None and entry[0]() is model:
        return entry[1]
    compiled = _Compiled(model)
    key = id(model)
    _COMPILED[key] = (weakref.ref(model, lambda _ref: _COMPILED.pop(key, None)), compiled)
    return compiled


# ----------------------------------------------------------------------------- requests


@attrs.frozen
class _Demand:
    """Requested CIs per GI kind (vectors over that kind's CI kinds)."""

    vectors: tuple[Vector, ...]
    names: ProfileCounts


def _demand(cm: _Compiled, counts: Mapping[str, int]) -> _Demand:
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
    return _Demand(tuple(tuple(v) for v in vectors), canonical)


@attrs.frozen
class _Existing:
    gi: GpuInstance
    kind: _GiKind | None
    mask: int
    ci_mask: int
    vector: Vector
    problem: str  # why it cannot be kept, "" if it can

    @property
    def label(self) -> str:
        slices = slices_phrase(self.mask)
        return f"{self.gi.profile} (GPU instance {self.gi.id}) at {slices}"


def _classify(cm: _Compiled, demand: _Demand, gi: GpuInstance) -> _Existing:
    mask = Placement(gi.start, gi.size).mask
    kind = cm.by_id.get(gi.profile_id) or cm.by_name.get(gi.profile)
    if kind is None:
        return _Existing(
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
    return _Existing(gi, kind, mask, ci_mask, tuple(vector), problem)


# ----------------------------------------------------------------------------- solving


@attrs.frozen
class _Plan:
    """A candidate: kept existing GIs, new GI counts and the CI groups of both."""

    kept: tuple[_Existing, ...]
    additions: tuple[Vector, ...]  # per kept GI: CIs to add
    new_counts: tuple[int, ...]
    new_groups: tuple[tuple[Vector, ...], ...]  # per kind: CI vectors of its new GIs


def _plan_cis(cm: _Compiled, demand: _Demand, kept: Sequence[_Existing]) -> _Plan | str:
    """Distribute the requested CIs over the kept GIs and the fewest new GIs, or say why not."""
    additions: list[Vector] = [()] * len(kept)
    new_counts = [0] * len(cm.kinds)
    new_groups: list[tuple[Vector, ...]] = [()] * len(cm.kinds)
    for kind in cm.kinds:
        mine = [i for i, e in enumerate(kept) if e.kind is kind]
        rest = list(demand.vectors[kind.order])
        for i in mine:
            rest = [r - v for r, v in zip(rest, kept[i].vector, strict=True)]
        if any(r < 0 for r in rest):
            held = [0] * len(kind.ci_kinds)
            for i in mine:
                held = [h + v for h, v in zip(held, kept[i].vector, strict=True)]
            wanted = demand.vectors[kind.order]
            over = [
                f"{ci.name} x{held[k]} (the request has {wanted[k]})"
                for k, ci in enumerate(kind.ci_kinds)
                if held[k] > wanted[k]
            ]
            labels = ", ".join(kept[i].label for i in mine)
            verb = "holds" if len(mine) == 1 else "hold"
            return f"in-use {labels} {verb} {', '.join(over)}"
        if not mine:
            count, groups = kind.min_pack(tuple(rest))
            new_counts[kind.order], new_groups[kind.order] = count, groups
            continue
        chosen = _best_additions(kind, [kept[i] for i in mine], tuple(rest))
        if chosen is None:
            labels = ", ".join(kept[i].label for i in mine)
            return f"in-use {labels} cannot be completed to the requested compute instances"
        adds, count, groups = chosen
        for i, add in zip(mine, adds, strict=True):
            additions[i] = add
        new_counts[kind.order], new_groups[kind.order] = count, groups
    return _Plan(tuple(kept), tuple(additions), tuple(new_counts), tuple(new_groups))


def _best_additions(
    kind: _GiKind, kept: Sequence[_Existing], rest: Vector
) -> tuple[tuple[Vector, ...], int, tuple[Vector, ...]] | None:
    """CIs to add to each kept GI so that the fewest new GIs are needed (exact, deterministic)."""
    best: tuple[tuple[Vector, ...], int, tuple[Vector, ...]] | None = None

    def walk(i: int, remaining: Vector, chosen: list[Vector]) -> None:
        nonlocal best
        if i == len(kept):
            count, groups = kind.min_pack(remaining)
            if count >= 0 and (best is None or count < best[1]):
                best = (tuple(chosen), count, groups)
            return
        existing = kept[i]
        options = kind.fillings(existing.ci_mask, existing.vector)
        for vector in sorted(options, key=lambda v: tuple(-c for c in v)):
            if any(v > r for v, r in zip(vector, remaining, strict=True)):
                continue
            if not any(existing.vector) and not any(vector):
                continue  # a kept GI must end up with at least one CI
            chosen.append(vector)
            walk(i + 1, tuple(r - v for r, v in zip(remaining, vector, strict=True)), chosen)
            chosen.pop()

    walk(0, rest, [])
    return best


def _rule_problem(cm: _Compiled, plan: _Plan) -> str:
    """Instance caps and the +me.all rule for the whole final layout; "" when they hold."""
    totals = list(plan.new_counts)
    for e in plan.kept:
        assert e.kind is not None
        totals[e.kind.order] += 1
    for kind in cm.kinds:
        if totals[kind.order] > kind.cap:
            return f"{kind.name} is limited to {kind.cap}"
    present = [k for k in cm.kinds if totals[k.order]]
    all_me = [k for k in present if k.all_me]
    if all_me:
        others = [k for k in present if not k.no_me and k is not all_me[0]]
        if others or totals[all_me[0].order] > 1:
            return "+me.all"
    return ""


def _build(cm: _Compiled, plan: _Plan, found: _Found, dropped: Sequence[GpuInstance]) -> Layout:
    instances: list[PlacedInstance] = []
    for e, add in zip(plan.kept, plan.additions, strict=True):
        kind = e.kind
        assert kind is not None
        cis = [
            PlacedCompute(
                profile=_ci_name(kind, ci.profile_id, ci.profile),
                profile_id=ci.profile_id,
                start=ci.start,
                size=ci.size,
                kept=True,
                existing_id=ci.id,
            )
            for ci in sorted(e.gi.compute_instances, key=lambda c: (c.start, c.id))
        ]
        if any(add):
            cis.extend(_placed_cis(kind, kind.filling_for(e.ci_mask, e.vector, add)))
        instances.append(
            PlacedInstance(
                profile=kind.name,
                start=e.gi.start,
                size=e.gi.size,
                profile_id=kind.profile.id,
                compute_instances=tuple(sorted(cis, key=lambda c: c.start)),
                kept=True,
                existing_id=e.gi.id,
            )
        )
    zero: dict[int, Vector] = {}
    for choice in found[2]:
        kind = cm.kinds[choice[0]]
        groups = plan.new_groups[kind.order]
        zero.setdefault(kind.order, (0,) * len(kind.ci_kinds))
        for placement_index, group in zip(choice[1:], groups, strict=True):
            placement = kind.placements[placement_index]
            filling = kind.filling_for(0, zero[kind.order], group)
            instances.append(
                PlacedInstance(
                    profile=kind.name,
                    start=placement.start,
                    size=placement.size,
                    profile_id=kind.profile.id,
                    compute_instances=tuple(
                        sorted(_placed_cis(kind, filling), key=lambda c: c.start)
                    ),
                )
            )
    instances.sort(key=lambda gi: (gi.start, gi.size))
    return Layout(cm.model.name, tuple(instances), tuple(dropped))


def _ci_name(kind: _GiKind, profile_id: int, fallback: str) -> str:
    for cp in kind.profile.compute_profiles:
        if cp.id == profile_id:
            return attrs.evolve(kind.parsed, compute_slices=cp.slice_count).canonical
    return fallback


def _placed_cis(kind: _GiKind, filling: Filling) -> list[PlacedCompute]:
    out = []
    for k, p in filling:
        ci = kind.ci_kinds[k]
        placement = ci.placements[p]
        out.append(PlacedCompute(ci.name, ci.profile.id, placement.start, placement.size))
    return out


def solve(
    model: GpuModel,
    counts: Mapping[str, int],
    existing: Iterable[GpuInstance] = (),
) -> Layout:
    """Place ``counts`` (compute-instance names -> counts) on ``model``.

    ``existing`` are the GPU instances there now: as many as possible are kept in place, and
    ``in_use`` ones are never moved. Raises :class:`~migkit.errors.UnknownProfileError` for a
    name the GPU does not offer and :class:`~migkit.errors.InfeasibleError` when no layout
    exists, saying which profile does not fit and what holds the slices it needs::

        >>> from migkit.hardware import gpu_model
        >>> layout = solve(gpu_model("a100-40gb"), {"3g.20gb": 1, "2g.10gb": 1, "1g.5gb": 2})
        >>> [(gi.profile, gi.start) for gi in layout.instances]
        [('2g.10gb', 0), ('1g.5gb', 2), ('1g.5gb', 3), ('3g.20gb', 4)]
    """
    cm = _compiled(model)
    demand = _demand(cm, counts)
    classified = [_classify(cm, demand, gi) for gi in existing]
    in_use = [e for e in classified if e.gi.in_use]
    for e in in_use:
        if e.problem:
            raise InfeasibleError(
                f"{cm.model.name}: {e.label} is in use{in_use_by(e.gi)} and cannot be kept: "
                f"{e.problem}"
            )
    _check_overlaps(cm, classified)
    optional = [e for e in classified if not e.gi.in_use and not e.problem]
    for size in range(len(optional), -1, -1):
        best: tuple[tuple[int, tuple[int, ...]], _Plan, _Found] | None = None
        for combo in itertools.combinations(optional, size):
            kept = tuple(sorted((*in_use, *combo), key=lambda e: (e.gi.start, e.gi.id)))
            attempt = _attempt(cm, demand, kept)
            if attempt is None:
                continue
            plan, found = attempt
            rank = (sum(len(e.gi.compute_instances) for e in kept), found[0])
            if best is None or rank > best[0]:
                best = (rank, plan, found)
        if best is not None:
            kept_ids = {id(e) for e in best[1].kept}
            dropped = [e.gi for e in classified if id(e) not in kept_ids]
            return _build(cm, best[1], best[2], dropped)
    raise InfeasibleError(_explain(cm, demand, in_use))


def _check_overlaps(cm: _Compiled, existing: Sequence[_Existing]) -> None:
    for a, b in itertools.combinations(existing, 2):
        if a.mask & b.mask:
            raise InfeasibleError(
                f"{cm.model.name}: existing {a.label} and {b.label} overlap; "
                f"the state is inconsistent"
            )


def _attempt(
    cm: _Compiled, demand: _Demand, kept: Sequence[_Existing]
) -> tuple[_Plan, _Found] | None:
    plan = _plan_cis(cm, demand, kept)
    if isinstance(plan, str) or _rule_problem(cm, plan):
        return None
    occupied = 0
    for e in kept:
        occupied |= e.mask
    found = cm.place(plan.new_counts, occupied)
    if found is None:
        return None
    return plan, found


# ----------------------------------------------------------------------------- explanations


def _explain(cm: _Compiled, demand: _Demand, in_use: Sequence[_Existing]) -> str:
    """Why the request cannot be placed (with the in-use GIs fixed), for a person to act on."""
    model = cm.model
    head = f"{model.name}: cannot place {_request_text(demand.names)}"
    plan = _plan_cis(cm, demand, in_use)
    if isinstance(plan, str):
        return f"{head}: {plan}"
    # Instance caps, said in terms of what was asked for.
    totals = list(plan.new_counts)
    for e in in_use:
        assert e.kind is not None
        totals[e.kind.order] += 1
    for kind in cm.kinds:
        if totals[kind.order] > kind.cap:
            return f"{head}: {_cap_text(cm, demand, kind, totals[kind.order])}"
    present = [k for k in cm.kinds if totals[k.order]]
    all_me = [k for k in present if k.all_me]
    if all_me:
        others = [k.name for k in present if not k.no_me and k is not all_me[0]]
        if others or totals[all_me[0].order] > 1:
            others_text = ", ".join(others) or f"a second {all_me[0].name}"
            return (
                f"{head}: {all_me[0].name} cannot be combined with {others_text}; while a "
                f"+me.all GPU instance exists only -me profiles can be created"
            )
    fixed = 0
    for e in in_use:
        fixed |= e.mask
    # Find the first GI (largest profiles first) that no arrangement leaves room for.
    units = [kind.order for kind in cm.kinds for _ in range(plan.new_counts[kind.order])]
    prefix = [0] * len(cm.kinds)
    previous = cm.place(tuple(prefix), fixed)
    for order in units:
        prefix[order] += 1
        found = cm.place(tuple(prefix), fixed)
        if found is None:
            break
        previous = found
    else:  # pragma: no cover - every unit fits, so the whole request would have fitted
        return f"{head}: no layout found"
    assert previous is not None
    blocker = cm.kinds[order]
    holders = _holders_text(cm, previous, in_use)
    taken = previous[1]
    starts = [p.start for p in blocker.placements]
    free = cm.full & ~taken
    if not free:
        room = "all taken"
    elif _popcount(free) == 1:
        room = f"the only free memory slice is {describe_slices(free)}"
    else:
        room = f"the only free memory slices are {describe_slices(free)}"
    need = sum(plan.new_counts[k.order] * k.size for k in cm.kinds) + _popcount(fixed)
    total = (
        f" (the request needs {need} memory slices, {model.name} has {cm.slices})"
        if need > cm.slices
        else " (no other arrangement leaves room)"
    )
    return (
        f"{head}: {holders}; {blocker.name} needs {_plural(blocker.size, 'memory slice')} "
        f"at a start in {_describe_starts(starts)}, {room}{total}"
    )


def _request_text(names: ProfileCounts) -> str:
    def key(name: str) -> tuple[int, int, int, str]:
        parsed = parse_profile_name(name)
        return (-parsed.gpu_slices, -parsed.memory_gb, -parsed.compute_slices, parsed.suffix)

    ordered = sorted(names, key=key)
    return ", ".join(f"{name} x{names[name]}" for name in ordered) or "nothing"


def _cap_text(cm: _Compiled, demand: _Demand, kind: _GiKind, needed: int) -> str:
    vector = demand.vectors[kind.order]
    asked = [(ci.name, vector[k]) for k, ci in enumerate(kind.ci_kinds) if vector[k]]
    if len(asked) == 1 and asked[0][0] == kind.name:
        return (
            f"{kind.name} x{asked[0][1]} asked for, but {cm.model.name} allows at most "
            f"{kind.cap} GPU instance{'s' if kind.cap != 1 else ''} of {kind.name}"
        )
    what = ", ".join(f"{name} x{count}" for name, count in asked)
    return (
        f"{what} need{'s' if len(asked) == 1 else ''} {needed} GPU instances of {kind.name}, "
        f"but {cm.model.name} allows at most {kind.cap}"
    )


def _holders_text(cm: _Compiled, found: _Found, in_use: Sequence[_Existing]) -> str:
    parts: list[tuple[str, list[int]]] = []
    for e in in_use:
        parts.append(
            (f"in-use {e.gi.profile} (GPU instance {e.gi.id}{in_use_by(e.gi)})", [e.mask])
        )
    for choice in found[2]:
        kind = cm.kinds[choice[0]]
        parts.append((kind.name, [kind.masks[i] for i in choice[1:]]))
    if not parts:
        return "nothing else is placed"
    union = 0
    pieces = []
    for label, masks in parts:
        for m in masks:
            union |= m
        count = f" x{len(masks)}" if len(masks) > 1 else ""
        pieces.append((f"{label}{count}", masks))
    if len(pieces) == 1:
        label, masks = pieces[0]
        verb = "uses"
        return f"{label} {verb} {slices_phrase(union)}"
    listed = ", ".join(
        f"{label} at {', '.join(describe_slices(m) for m in masks)}" for label, masks in pieces
    )
    return f"{listed} use {slices_phrase(union)}"
