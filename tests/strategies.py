"""Shared Hypothesis strategies and brute-force oracles for the planning-layer tests.

The oracles enumerate the placement tables directly and share no code with the solver, so
agreement between the two is evidence, not tautology.
"""

from __future__ import annotations

import copy
import functools
import itertools
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence

from hypothesis import strategies as st

from migkit.hardware import gpu_model, gpu_models, provenance
from migkit.models import ComputeInstance, GpuInstance, GpuModel, Profile


def _geometry(model: GpuModel) -> tuple[object, ...]:
    """What the solver sees of a model: architecture, profile ids, sizes, caps, placements and
    attributes (names without their GB figure), not memory sizes or SM counts."""
    shape = (
        (p.id, p.slice_count, p.memory_slices, p.instance_count, p.placements, re.sub(r"\.\d+gb", "", p.name))
        for p in model.profiles
    )
    return (model.architecture, *shape)


def _one_per_geometry() -> tuple[str, ...]:
    """One MIG model per distinct geometry, preferring tables read from a real GPU: many bundled
    models share a shape (A800 and A100, H800 and H100, ...) and add nothing to solver tests."""
    kept: dict[tuple[object, ...], str] = {}
    candidates = sorted(
        (m for m in gpu_models() if m.mig_capable),
        key=lambda m: (not provenance(m.name).observed, m.name),
    )
    for model in candidates:
        kept.setdefault(_geometry(model), model.name)
    return tuple(sorted(kept.values()))


MIG_MODELS = _one_per_geometry()
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
    from migkit.names import canonical_counts
    from migkit.planning.solver import Layout

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


# ---------------------------------------------------------------------- fuzzing: config text
#
# Near-valid documents: a valid document (``config_documents``) with a few structural
# mutations (wrong types, unknown or misspelt keys, bad names and filters, odd counts, deep
# nesting, shared sub-trees that dump as anchors and aliases), dumped as YAML or JSON, then a
# few textual mutations (duplicated lines, tags, merge keys, line-break variants, stray
# characters). Used by the config and CLI fuzzers.

SIM_MODELS = ("h100-80gb", "a100-40gb", "a30-24gb", "rtx-pro-6000", "l40s")

NASTY_VALUES: tuple[object, ...] = (
    -1,
    -(2**63),
    2**31,
    2**32,
    2**63,
    2**64,
    10**30,
    True,
    False,
    0.5,
    1.0,
    -0.0,
    1e308,
    float("inf"),
    float("nan"),
    None,
    "",
    " ",
    "all",
    "All",
    "ALL",
    "all ",
    "none",
    "7",
    "-1",
    "0x",
    "0x233010DE:",
    ":0x16C010DE",
    "0x233010DE:0x16C010DE:0x1",
    "0x1233010DE",
    "20B010DE",
    " 0x233010DE",
    "0x2330_10DE",
    "0b1",
    "0o17",
    "017",
    "1G.5GB",
    "1g.5gb+me-me",
    "1g.5gb+",
    "1g.5gb+me,me",
    "0g.0gb",
    "01g.05gb",
    "99999999999999999999g.1gb",
    "\uff11g.5gb",
    "\u0663g.20gb",
    "1g.5gb\u200b",
    "caf\u00e9",
    "\U0001f600",
    "~",
    "null",
    "yes",
    "no",
    "on",
    "y",
    "1:20",
    "2001-12-14",
    ".inf",
    "<<",
    "&a",
    "*a",
    "!!str",
    "- x",
    "? x",
    "a: b",
    "#",
    "\\",
    '"',
    "'",
    "\t",
    "\n",
    [],
    {},
    [[]],
    [{}],
    {"": None},
    ["all"],
    [0, -1],
    [True],
    [0.5],
    ["0"],
    {"devices": "all", "mig-enabled": False},
)

KEY_MUTANTS = st.sampled_from(
    [
        "Devices",
        "device",
        "mig_enabled",
        "mig-enable",
        "MIG-ENABLED",
        "mig-devices ",
        "device-filters",
        "deviceFilter",
        "Version",
        "mig-config",
        "extra",
        "",
        "<<",
        "~",
        "1g.5gb",
        "caf\u00e9",
    ]
)

TAGS = (
    "!!python/object:os.system",
    "!!python/object/apply:os.system",
    "!!python/object/new:builtins.dict",
    "!!python/name:os.system",
    "!!python/tuple",
    "!!python/str",
    "!!python/int",
    "!!binary",
    "!!set",
    "!!omap",
    "!!pairs",
    "!!timestamp",
    "!!str",
    "!!int",
    "!!float",
    "!!bool",
    "!!null",
    "!!map",
    "!!seq",
    "!!merge",
    "!custom",
    "!",
    "!<tag:example.com,2000:x>",
)

YAML_TOKENS = st.sampled_from(
    [
        "version",
        "v1",
        "mig-configs",
        "devices",
        "all",
        "mig-enabled",
        "true",
        "false",
        "mig-devices",
        "device-filter",
        "1g.5gb",
        "1c.3g.20gb",
        "0x233010DE",
        "custom",
        "0",
        "1",
        "-1",
        "7",
        "1.5",
        "~",
        ":",
        ": ",
        " ",
        "  ",
        "\n",
        "\n  ",
        "\n    ",
        "\n  - ",
        "- ",
        "[",
        "]",
        "{",
        "}",
        ",",
        "&a ",
        "*a",
        "<<: ",
        "? ",
        "|",
        ">",
        "#",
        "'",
        '"',
        "\\",
        "%YAML 1.1\n",
        "%TAG ! tag:x,2000:\n",
        "---\n",
        "...\n",
        "\t",
        "\r",
        "\r\n",
        "\x85",
        "\u2028",
        "\ufeff",
        "\x00",
        "\x07",
        "\ud800",
        "\udc00",
        "\\ud800",
        "\U0001f600",
        *TAGS,
    ]
)


@st.composite
def yamlish_texts(draw: st.DrawFn) -> str:
    """Text made of YAML syntax and config vocabulary, to reach deep into the parser."""
    return "".join(draw(st.lists(YAML_TOKENS, max_size=40)))


Slot = tuple[object, object]  # (container, key or index)


def _containers(node: object, out: list[Slot]) -> None:
    """Every (container, key-or-index) slot of a plain-data document, depth first."""
    if isinstance(node, dict):
        for key in list(node):
            out.append((node, key))
            _containers(node[key], out)
    elif isinstance(node, list):
        for index in range(len(node)):
            out.append((node, index))
            _containers(node[index], out)


def _get(container: object, key: object) -> object:
    if isinstance(container, dict):
        return container[key]
    assert isinstance(container, list) and isinstance(key, int)
    return container[key]


def _set(container: object, key: object, value: object) -> None:
    if isinstance(container, dict):
        container[key] = value
    else:
        assert isinstance(container, list) and isinstance(key, int)
        container[key] = value


def _deep(depth: int, leaf: object, as_map: bool) -> object:
    value = leaf
    for _ in range(depth):
        value = {"devices": value} if as_map else [value]
    return value


@st.composite
def _mutate_structure(draw: st.DrawFn, document: dict[str, object]) -> None:
    """Apply one structural mutation to ``document`` in place."""
    slots: list[Slot] = []
    _containers(document, slots)
    if not slots:  # earlier mutations deleted everything
        return
    container, key = draw(st.sampled_from(slots))
    old = _get(container, key)
    kind = draw(
        st.sampled_from(
            ["nasty", "garbage", "delete", "add-key", "rename", "wrap", "deep", "share", "count"]
        )
    )
    if kind == "nasty":
        _set(container, key, draw(st.sampled_from(NASTY_VALUES).map(copy.deepcopy)))
    elif kind == "garbage":
        _set(container, key, draw(GARBAGE))
    elif kind == "delete":
        if isinstance(container, dict):
            del container[key]
        else:
            assert isinstance(container, list) and isinstance(key, int)
            del container[key]
    elif kind == "add-key":
        target = container if isinstance(container, dict) else old
        if isinstance(target, dict):
            target[draw(KEY_MUTANTS)] = draw(st.sampled_from(NASTY_VALUES).map(copy.deepcopy))
    elif kind == "rename" and isinstance(container, dict):
        container[draw(KEY_MUTANTS)] = container.pop(key)
    elif kind == "wrap":
        _set(container, key, draw(st.sampled_from([[old], {"x": old}, {str(key): old}])))
    elif kind == "deep":
        _set(container, key, _deep(draw(st.integers(1, 120)), old, draw(st.booleans())))
    elif kind == "share":
        # the same object in two places dumps as an anchor and an alias
        donors = [_get(c, k) for c, k in slots if isinstance(_get(c, k), (dict, list))]
        donors = [d for d in donors if d is not container and not _contains(d, container)]
        if donors:
            _set(container, key, draw(st.sampled_from(donors)))
    elif kind == "count":
        count = st.one_of(
            st.integers(-(2**70), 2**70),
            st.floats(),
            st.booleans(),
            st.sampled_from([10**18, 10**6, 1000, -1, 0]),
        )
        _set(container, key, draw(count))


def _contains(haystack: object, needle: object) -> bool:
    if haystack is needle:
        return True
    if isinstance(haystack, dict):
        return any(_contains(v, needle) for v in haystack.values())
    if isinstance(haystack, list):
        return any(_contains(v, needle) for v in haystack)
    return False


_BREAKS = ("\n", "\r\n", "\r", "\x85", "\u2028")


@st.composite
def _mutate_text(draw: st.DrawFn, text: str) -> str:
    """Apply one textual mutation to a YAML/JSON document."""
    lines = text.split("\n")
    kind = draw(
        st.sampled_from(
            ["dup-line", "tag", "anchor", "merge", "poke", "breaks", "multi-doc", "prefix", "tabs"]
        )
    )
    at = draw(st.integers(0, max(0, len(lines) - 1)))
    if kind == "dup-line":
        lines.insert(at, lines[at])
    elif kind == "tag":
        line = lines[at]
        for marker in (": ", "- "):
            cut = line.find(marker)
            if cut >= 0:
                pos = cut + len(marker)
                lines[at] = f"{line[:pos]}{draw(st.sampled_from(TAGS))} {line[pos:]}"
                break
    elif kind == "anchor":
        name = draw(st.sampled_from(["a", "b", "id001"]))
        line = lines[at]
        cut = line.find(": ")
        if cut >= 0:
            lines[at] = f"{line[: cut + 2]}&{name} {line[cut + 2 :]}"
        other = draw(st.integers(0, max(0, len(lines) - 1)))
        line = lines[other]
        cut = line.find(": ")
        if cut >= 0:
            lines[other] = f"{line[: cut + 2]}*{draw(st.sampled_from(['a', 'b', 'id001']))}"
    elif kind == "merge":
        indent = len(lines[at]) - len(lines[at].lstrip(" -"))
        value = draw(st.sampled_from(["*a", "*id001", "[*a, *id001]", "{x: 1}", "1", "[1]"]))
        lines.insert(at, " " * indent + f"<<: {value}")
    elif kind == "poke":
        flat = "\n".join(lines)
        pos = draw(st.integers(0, len(flat)))
        if draw(st.booleans()) and pos < len(flat):
            flat = flat[:pos] + flat[pos + 1 :]
        else:
            flat = flat[:pos] + draw(YAML_TOKENS) + flat[pos:]
        return flat
    elif kind == "breaks":
        return draw(st.sampled_from(_BREAKS)).join(lines)
    elif kind == "multi-doc":
        lines.append(draw(st.sampled_from(["---", "--- {}", "...", "--- version: v1"])))
    elif kind == "prefix":
        return draw(st.sampled_from(["\ufeff", "%YAML 1.1\n---\n", "# \U0001f600\n", "---\n"])) + text
    elif kind == "tabs":
        lines = [line.replace("  ", "\t", 1) if i == at else line for i, line in enumerate(lines)]
    return "\n".join(lines)


def _dump(document: object, style: str) -> str:
    import json

    import yaml

    if style == "json":
        return json.dumps(document, ensure_ascii=False)
    if style == "json-ascii":
        return json.dumps(document)
    try:
        return yaml.safe_dump(
            document,
            default_flow_style={"block": False, "flow": True, "mixed": None}[style],
            allow_unicode=True,
            sort_keys=False,
        )
    except (yaml.YAMLError, RecursionError):
        return json.dumps(document)


@st.composite
def near_valid_config_texts(
    draw: st.DrawFn, max_structural: int = 3, max_textual: int = 2
) -> str:
    """A valid config document with a few structural then textual mutations, as text."""
    document = draw(config_documents())
    for _ in range(draw(st.integers(0, max_structural))):
        draw(_mutate_structure(document))
    text = _dump(document, draw(st.sampled_from(["block", "flow", "mixed", "json", "json-ascii"])))
    for _ in range(draw(st.integers(0, max_textual))):
        text = draw(_mutate_text(text))
    return text


def yaml_line_count(text: str) -> int:
    """How many lines a YAML reader counts in ``text`` (it also breaks on \\r, NEL, LS, PS)."""
    breaks = text.count("\n") + text.count("\x85") + text.count("\u2028") + text.count("\u2029")
    breaks += text.count("\r") - text.count("\r\n")
    return breaks + 1
