"""Shared Hypothesis strategies and brute-force oracles for the planning-layer tests.

The oracles enumerate the placement tables directly and share no code with the solver, so
agreement between the two is evidence, not tautology.
"""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence

from hypothesis import strategies as st

from migkit.hardware import gpu_model, gpu_models
from migkit.models import ComputeInstance, GpuInstance, GpuModel, Profile

MIG_MODELS = tuple(m.name for m in gpu_models() if m.mig_capable)
SMALL_MODELS = ("a100-40gb", "h100-80gb", "a30-24gb", "rtx-pro-6000")

# A GI layout as the oracle sees it: (profile name, start) pairs.
Pair = tuple[str, int]


def _mask(start: int, size: int) -> int:
    return ((1 << size) - 1) << start


def _rules_hold(model: GpuModel, chosen: Sequence[Profile]) -> bool:
    """Instance caps and the +me.all rule for a set of GI profiles (with repetition)."""
    counts = Counter(p.name for p in chosen)
    if any(counts[p.name] > p.instance_count for p in model.profiles):
        return False
    all_me = [p for p in chosen if p.all_me]
    if all_me:
        return len(all_me) == 1 and all(p.no_me for p in chosen if p is not all_me[0])
    return True


@functools.cache
def legal_layouts(model_name: str) -> tuple[tuple[Pair, ...], ...]:
    """Every legal set of GIs on a fresh GPU (placements from the table, no overlap, caps,
    the +me.all rule), enumerated by brute force."""
    model = gpu_model(model_name)
    pairs = [(p, pl.start, _mask(pl.start, pl.size)) for p in model.profiles for pl in p.placements]
    out: list[tuple[Pair, ...]] = []

    def walk(i: int, used: int, chosen: list[tuple[Profile, int]]) -> None:
        if i == len(pairs):
            if _rules_hold(model, [p for p, _ in chosen]):
                out.append(tuple(sorted((p.name, s) for p, s in chosen)))
            return
        walk(i + 1, used, chosen)
        profile, start, mask = pairs[i]
        if not mask & used:
            chosen.append((profile, start))
            walk(i + 1, used | mask, chosen)
            chosen.pop()

    walk(0, 0, [])
    return tuple(out)


@functools.cache
def feasible_gi_counts(model_name: str) -> frozenset[tuple[tuple[str, int], ...]]:
    """The GI-count vectors (sorted (name, count) pairs) some legal layout realises."""
    return frozenset(
        tuple(sorted(Counter(n for n, _ in lay).items())) for lay in legal_layouts(model_name)
    )


def counts_key(counts: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((k, v) for k, v in counts.items() if v))


def oracle_gi_feasible(model_name: str, counts: Mapping[str, int]) -> bool:
    return counts_key(counts) in feasible_gi_counts(model_name)


def all_gi_requests(model: GpuModel, max_slices: int | None = None) -> Iterator[dict[str, int]]:
    """Every GI-level request within the instance caps (optionally bounded in memory slices)."""
    ranges = [range(p.instance_count + 1) for p in model.profiles]
    for combo in itertools.product(*ranges):
        if max_slices is not None:
            used = sum(c * p.memory_slices for c, p in zip(combo, model.profiles, strict=True))
            if used > max_slices:
                continue
        yield {p.name: c for p, c in zip(model.profiles, combo, strict=True) if c}


# ---------------------------------------------------------------------- CI-level oracle


def _ci_tables(profile: Profile) -> dict[str, tuple[int, int, tuple[int, ...]]]:
    """Canonical CI name -> (cap, size, placement masks), the preferred CI of each name."""
    base = profile.name
    out: dict[str, tuple[int, int, tuple[int, ...]]] = {}
    for cp in sorted(profile.compute_profiles, key=lambda c: (-c.multiprocessors, c.id)):
        name = base if cp.slice_count == profile.slice_count else f"{cp.slice_count}c.{base}"
        out.setdefault(
            name, (cp.instance_count, cp.slice_count, tuple(p.mask for p in cp.placements))
        )
    return out


def _packs_into(profile: Profile, cis: Sequence[str], bins: int) -> bool:
    """Can these CIs go into exactly ``bins`` GIs of ``profile``, none left empty? (brute force)"""
    table = _ci_tables(profile)
    items = sorted(cis, key=lambda n: -table[n][1])
    used = [0] * bins
    per = [Counter[str]() for _ in range(bins)]

    def place(i: int) -> bool:
        if i == len(items):
            return all(used)
        name = items[i]
        cap, _, masks = table[name]
        tried_empty = False
        for b in range(bins):
            if not used[b]:
                if tried_empty:
                    continue  # empty bins are interchangeable
                tried_empty = True
            if per[b][name] >= cap:
                continue
            for m in masks:
                if m & used[b]:
                    continue
                used[b] |= m
                per[b][name] += 1
                if place(i + 1):
                    return True
                used[b] &= ~m
                per[b][name] -= 1
        return False

    return place(0)


def oracle_min_gis(profile: Profile, cis: Sequence[str]) -> int:
    """The fewest GIs of ``profile`` that hold ``cis`` (by trying 1, 2, ... bins)."""
    if not cis:
        return 0
    for bins in range(1, len(cis) + 1):
        if _packs_into(profile, cis, bins):
            return bins
    raise AssertionError("every CI fits in a GI of its own")


def gi_name_of(name: str) -> str:
    head, _, rest = name.partition(".")
    return rest if head.endswith("c") else name


def oracle_ci_feasible(model_name: str, counts: Mapping[str, int]) -> bool:
    """Feasible iff the fewest GIs per profile form a feasible GI-count vector."""
    model = gpu_model(model_name)
    by_gi: dict[str, list[str]] = {}
    for name, count in counts.items():
        by_gi.setdefault(gi_name_of(name), []).extend([name] * count)
    gi_counts = {gi: oracle_min_gis(model.profile(gi), cis) for gi, cis in by_gi.items()}
    return oracle_gi_feasible(model_name, gi_counts)


# ---------------------------------------------------------------------- existing-instance oracle


def oracle_max_kept(
    model_name: str, counts: Mapping[str, int], existing: Sequence[Pair]
) -> int | None:
    """Most existing (profile, start) GIs any legal layout with exactly ``counts`` keeps
    (GI-level names, one full CI per GI); None if no layout has those counts."""
    want = counts_key(counts)
    have = set(existing)
    best: int | None = None
    for layout in legal_layouts(model_name):
        if tuple(sorted(Counter(n for n, _ in layout).items())) != want:
            continue
        kept = len(have & set(layout))
        best = kept if best is None else max(best, kept)
    return best


def full_ci_instance(
    model: GpuModel, name: str, start: int, gi_id: int, in_use: bool = False
) -> GpuInstance:
    """A GpuInstance of profile ``name`` at ``start`` holding one GI-wide CI."""
    profile = model.profile(name)
    full = max(
        (cp for cp in profile.compute_profiles if cp.slice_count == profile.slice_count),
        key=lambda cp: (cp.multiprocessors, -cp.id),
    )
    ci = ComputeInstance(id=0, profile_id=full.id, profile=name, start=0, size=full.slice_count)
    return GpuInstance(
        id=gi_id,
        profile_id=profile.id,
        profile=name,
        start=start,
        size=profile.memory_slices,
        compute_instances=(ci,),
        in_use=in_use,
    )


# ---------------------------------------------------------------------- strategies


def mig_models() -> st.SearchStrategy[GpuModel]:
    return st.sampled_from(MIG_MODELS).map(gpu_model)


@st.composite
def gi_requests(draw: st.DrawFn, model: GpuModel) -> dict[str, int]:
    """A GI-level request within the instance caps."""
    out = {}
    for p in model.profiles:
        count = draw(st.integers(0, p.instance_count))
        if count:
            out[p.name] = count
    return out


def ci_names(model: GpuModel) -> list[str]:
    """Every CI-level name a model offers (GI-level names included)."""
    names = []
    for p in model.profiles:
        names.extend(sorted(_ci_tables(p)))
    return names


@st.composite
def ci_requests(draw: st.DrawFn, model: GpuModel, max_total: int = 8) -> dict[str, int]:
    """A request mixing GI-level and compute-level names (small totals)."""
    names = draw(st.lists(st.sampled_from(ci_names(model)), min_size=0, max_size=4, unique=True))
    out = {}
    budget = max_total
    for name in names:
        count = draw(st.integers(1, max(1, min(budget, 4))))
        out[name] = count
        budget -= count
        if budget <= 0:
            break
    return out


@st.composite
def random_layouts(draw: st.DrawFn, model: GpuModel) -> tuple[Pair, ...]:
    """A random legal GI layout: legal pairs added in a random order while they fit."""
    pairs = [(p.name, pl.start) for p in model.profiles for pl in p.placements]
    order = draw(st.permutations(pairs))
    keep = draw(st.integers(0, len(pairs)))
    chosen: list[Pair] = []
    used = 0
    for name, start in order[:keep]:
        profile = model.profile(name)
        mask = _mask(start, profile.memory_slices)
        if mask & used:
            continue
        trial = [*(model.profile(n) for n, _ in chosen), profile]
        if not _rules_hold(model, trial):
            continue
        chosen.append((name, start))
        used |= mask
    return tuple(sorted(chosen, key=lambda pair: pair[1]))


def layout_instances(
    model: GpuModel, layout: Sequence[Pair], in_use: Sequence[bool] = ()
) -> tuple[GpuInstance, ...]:
    flags = list(in_use) + [False] * (len(layout) - len(in_use))
    return tuple(
        full_ci_instance(model, name, start, gi_id=i + 1, in_use=flags[i])
        for i, (name, start) in enumerate(layout)
    )


# ---------------------------------------------------------------------- config documents

PROFILE_NAMES = st.sampled_from(
    [
        "1g.5gb",
        "1g.10gb",
        "2g.10gb",
        "3g.20gb",
        "1c.3g.20gb",
        "2c.7g.40gb",
        "1g.10gb+me",
        "1g.24gb-me",
        "1g.24gb+me.all",
        "4g.96gb+gfx",
        "7g.80gb",
    ]
)
DEVICE_FILTERS = st.sampled_from(
    ["0x233010DE", "0x20B010DE:0x134F10DE", "0x25B610DE:0x00000000", "0x2BB510DE", ""]
)


@st.composite
def config_entries(draw: st.DrawFn) -> dict[str, object]:
    """A valid entry as plain data (what a YAML file would hold)."""
    entry: dict[str, object] = {}
    if draw(st.booleans()):
        filters = draw(st.lists(DEVICE_FILTERS, min_size=1, max_size=3, unique=True))
        entry["device-filter"] = (
            filters[0] if len(filters) == 1 and draw(st.booleans()) else filters
        )
    entry["devices"] = draw(st.one_of(st.just("all"), st.lists(st.integers(0, 15), max_size=4)))
    enabled = draw(st.booleans())
    entry["mig-enabled"] = enabled
    if enabled:
        counts = draw(st.dictionaries(PROFILE_NAMES, st.integers(0, 7), max_size=4))
        if counts and not any(counts.values()):
            counts[next(iter(counts))] = 1
        entry["mig-devices"] = counts
    elif draw(st.booleans()):
        entry["mig-devices"] = {}
    return entry


CONFIG_NAMES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12
)


@st.composite
def config_documents(draw: st.DrawFn) -> dict[str, object]:
    configs = draw(
        st.dictionaries(
            st.one_of(
                CONFIG_NAMES, st.sampled_from(["all-disabled", "all-1g.5gb", "custom", "yes", "7"])
            ),
            st.lists(config_entries(), min_size=1, max_size=3),
            min_size=1,
            max_size=3,
        )
    )
    return {"version": "v1", "mig-configs": configs}


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
    st.sampled_from(["v1", "all", "1g.5gb", "0x233010DE", "yes", "-1", "~", "", "7g.40gb+me"]),
)
KEYS = st.one_of(
    st.sampled_from(
        [
            "version",
            "mig-configs",
            "devices",
            "mig-enabled",
            "mig-devices",
            "device-filter",
            "custom",
            "1g.5gb",
            "3g.20gb",
        ]
    ),
    st.text(max_size=8),
)
GARBAGE = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=4)
    ),
    max_leaves=25,
)


# ---------------------------------------------------------------------- layout legality


def assert_legal_layout(model: GpuModel, counts: Mapping[str, int], layout: object) -> None:
    """Check a solver Layout against the tables, independently of the solver."""
    from migkit.profiles import canonical_counts
    from migkit.solver import Layout

    assert isinstance(layout, Layout)
    used = 0
    per_profile: Counter[str] = Counter()
    ci_counts: Counter[str] = Counter()
    profiles = []
    for gi in layout.instances:
        profile = model.profile(gi.profile)
        assert gi.profile_id == profile.id
        profiles.append(profile)
        if not gi.kept:
            assert (gi.start, gi.size) in {(p.start, p.size) for p in profile.placements}, gi
        mask = _mask(gi.start, gi.size)
        assert not mask & used, f"{gi} overlaps"
        used |= mask
        per_profile[gi.profile] += 1
        assert gi.compute_instances, f"{gi} has no compute instance"
        ci_used = 0
        ci_per: Counter[int] = Counter()
        tables = {cp.id: cp for cp in profile.compute_profiles}
        for ci in gi.compute_instances:
            cp = tables[ci.profile_id]
            if not ci.kept:
                assert (ci.start, ci.size) in {(p.start, p.size) for p in cp.placements}, ci
            ci_mask = _mask(ci.start, ci.size)
            assert not ci_mask & ci_used, f"{ci} overlaps in {gi}"
            ci_used |= ci_mask
            ci_per[cp.id] += 1
            assert ci_per[cp.id] <= cp.instance_count
            ci_counts[ci.profile] += 1
    assert _rules_hold(model, profiles)
    for name, count in per_profile.items():
        assert count <= model.profile(name).instance_count
    assert dict(ci_counts) == dict(canonical_counts(counts))
