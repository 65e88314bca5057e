"""The exhaustive search: keep-sets of existing instances, placements of new ones, the
deterministic tie-break, and explanations of why nothing fits."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence

import attrs

from migkit.errors import InfeasibleError
from migkit.models import GpuInstance, GpuModel
from migkit.names import ProfileCounts, parse_profile_name
from migkit.planning.solver.compiled import (
    Compiled,
    Demand,
    Existing,
    Filling,
    Found,
    GiKind,
    Vector,
    classify,
    compile_model,
    demand_of,
)
from migkit.planning.solver.layout import (
    Layout,
    PlacedCompute,
    PlacedInstance,
    describe_slices,
    describe_starts,
    in_use_by,
    plural,
    popcount,
    slices_phrase,
)

# ----------------------------------------------------------------------------- solving


@attrs.frozen
class _Plan:
    """A candidate: kept existing GIs, new GI counts and the CI groups of both."""

    kept: tuple[Existing, ...]
    additions: tuple[Vector, ...]  # per kept GI: CIs to add
    new_counts: tuple[int, ...]
    new_groups: tuple[tuple[Vector, ...], ...]  # per kind: CI vectors of its new GIs


def _plan_cis(cm: Compiled, demand: Demand, kept: Sequence[Existing]) -> _Plan | str:
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
    kind: GiKind, kept: Sequence[Existing], rest: Vector
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


@attrs.frozen
class _Violation:
    """A rule the final layout breaks: ``kind`` over its cap (``others`` None), or a +me.all
    ``kind`` sharing the GPU with ``others`` (or with a second one of itself)."""

    kind: GiKind
    total: int
    others: tuple[GiKind, ...] | None = None


def _violation(cm: Compiled, new_counts: Sequence[int], kept: Sequence[Existing]) -> _Violation | None:
    """Instance caps and the +me.all rule for the new GIs plus the kept ones; None when they hold."""
    totals = list(new_counts)
    for e in kept:
        assert e.kind is not None
        totals[e.kind.order] += 1
    for kind in cm.kinds:
        if totals[kind.order] > kind.cap:
            return _Violation(kind, totals[kind.order])
    present = [k for k in cm.kinds if totals[k.order]]
    all_me = [k for k in present if k.all_me]
    if all_me:
        others = tuple(k for k in present if not k.no_me and k is not all_me[0])
        if others or totals[all_me[0].order] > 1:
            return _Violation(all_me[0], totals[all_me[0].order], others)
    return None


def _rule_problem(cm: Compiled, plan: _Plan) -> str:
    """Instance caps and the +me.all rule for the whole final layout; "" when they hold."""
    broken = _violation(cm, plan.new_counts, plan.kept)
    if broken is None:
        return ""
    return f"{broken.kind.name} is limited to {broken.kind.cap}" if broken.others is None else "+me.all"


def _build(cm: Compiled, plan: _Plan, found: Found, dropped: Sequence[GpuInstance]) -> Layout:
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


def _ci_name(kind: GiKind, profile_id: int, fallback: str) -> str:
    for cp in kind.profile.compute_profiles:
        if cp.id == profile_id:
            return attrs.evolve(kind.parsed, compute_slices=cp.slice_count).canonical
    return fallback


def _placed_cis(kind: GiKind, filling: Filling) -> list[PlacedCompute]:
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
    cm = compile_model(model)
    demand = demand_of(cm, counts)
    classified = [classify(cm, demand, gi) for gi in existing]
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
        best: tuple[tuple[int, tuple[int, ...]], _Plan, Found] | None = None
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


def _check_overlaps(cm: Compiled, existing: Sequence[Existing]) -> None:
    for a, b in itertools.combinations(existing, 2):
        if a.mask & b.mask:
            raise InfeasibleError(
                f"{cm.model.name}: existing {a.label} and {b.label} overlap; "
                f"the state is inconsistent"
            )


def _attempt(
    cm: Compiled, demand: Demand, kept: Sequence[Existing]
) -> tuple[_Plan, Found] | None:
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


def _explain(cm: Compiled, demand: Demand, in_use: Sequence[Existing]) -> str:
    """Why the request cannot be placed (with the in-use GIs fixed), for a person to act on."""
    model = cm.model
    head = f"{model.name}: cannot place {_request_text(demand.names)}"
    plan = _plan_cis(cm, demand, in_use)
    if isinstance(plan, str):
        return f"{head}: {plan}"
    broken = _violation(cm, plan.new_counts, in_use)
    if broken is not None and broken.others is None:  # a cap, said in terms of what was asked for
        return f"{head}: {_cap_text(cm, demand, broken.kind, broken.total)}"
    if broken is not None and broken.others is not None:
        others_text = ", ".join(k.name for k in broken.others) or f"a second {broken.kind.name}"
        return (
            f"{head}: {broken.kind.name} cannot be combined with {others_text}; while a "
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
    elif popcount(free) == 1:
        room = f"the only free memory slice is {describe_slices(free)}"
    else:
        room = f"the only free memory slices are {describe_slices(free)}"
    need = sum(plan.new_counts[k.order] * k.size for k in cm.kinds) + popcount(fixed)
    total = (
        f" (the request needs {need} memory slices, {model.name} has {cm.slices})"
        if need > cm.slices
        else " (no other arrangement leaves room)"
    )
    return (
        f"{head}: {holders}; {blocker.name} needs {plural(blocker.size, 'memory slice')} "
        f"at a start in {describe_starts(starts)}, {room}{total}"
    )


def _request_text(names: ProfileCounts) -> str:
    def key(name: str) -> tuple[int, int, int, str]:
        parsed = parse_profile_name(name)
        return (-parsed.gpu_slices, -parsed.memory_gb, -parsed.compute_slices, parsed.suffix)

    ordered = sorted(names, key=key)
    return ", ".join(f"{name} x{names[name]}" for name in ordered) or "nothing"


def _cap_text(cm: Compiled, demand: Demand, kind: GiKind, needed: int) -> str:
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


def _holders_text(cm: Compiled, found: Found, in_use: Sequence[Existing]) -> str:
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
