"""The placement solver: exact against brute force, legal, deterministic, minimal disruption."""

from __future__ import annotations

import itertools
import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from migkit.errors import InfeasibleError, UnknownProfileError
from migkit.hardware import gpu_model
from migkit.models import ComputeInstance, GpuInstance, GpuModel
from migkit.planning.solver import Layout, solve
from strategies import (
    MIG_MODELS,
    all_gi_requests,
    assert_legal_layout,
    ci_requests,
    counts_key,
    full_ci_instance,
    gi_name_of,
    gi_requests,
    layout_instances,
    legal_layouts,
    mig_models,
    oracle_ci_feasible,
    oracle_gi_feasible,
    oracle_max_kept,
    oracle_min_gis,
    random_layouts,
)

A100 = gpu_model("a100-40gb")
H100 = gpu_model("h100-80gb")
RTX = gpu_model("rtx-pro-6000")


def try_solve(
    model: GpuModel, counts: dict[str, int], existing: tuple[GpuInstance, ...] = ()
) -> Layout | None:
    try:
        return solve(model, counts, existing)
    except InfeasibleError:
        return None


def starts(layout: Layout, profile: str) -> list[int]:
    return sorted(gi.start for gi in layout.instances if gi.profile == profile)


# ---------------------------------------------------------------------- acceptance cases


def test_3g_goes_to_4_when_only_that_fits() -> None:
    """{3g.20gb:1, 2g.10gb:1, 1g.5gb:2} on A100-40GB needs the 3g at start 4 (the order upstream got wrong)."""
    counts = {"3g.20gb": 1, "2g.10gb": 1, "1g.5gb": 2}
    layout = solve(A100, counts)
    assert starts(layout, "3g.20gb") == [4]
    assert starts(layout, "2g.10gb") == [0]
    assert starts(layout, "1g.5gb") == [2, 3]
    assert_legal_layout(A100, counts, layout)


def test_4g_goes_to_0() -> None:
    """{4g.20gb:1, 2g.10gb:1, 1g.5gb:1} has the 4g at 0 (creating the 2g there first blocks it)."""
    layout = solve(A100, {"4g.20gb": 1, "2g.10gb": 1, "1g.5gb": 1})
    assert starts(layout, "4g.20gb") == [0]


def test_two_3g_and_a_1g_is_infeasible_and_names_the_slices() -> None:
    """{3g.20gb:2, 1g.5gb:1} cannot fit; the message says which slices are held and by what."""
    with pytest.raises(InfeasibleError) as err:
        solve(A100, {"3g.20gb": 2, "1g.5gb": 1})
    message = str(err.value)
    assert "3g.20gb x2 uses memory slices 0-7" in message
    assert "1g.5gb needs 1 memory slice at a start in 0-6, all taken" in message


def test_over_cap_request_says_the_cap() -> None:
    """Asking for more GIs than a profile allows names the cap."""
    with pytest.raises(
        InfeasibleError, match=re.escape("allows at most 2 GPU instances of 3g.20gb")
    ):
        solve(A100, {"3g.20gb": 3})
    with pytest.raises(
        InfeasibleError, match=re.escape("1c.3g.20gb x7 needs 3 GPU instances of 3g.20gb")
    ):
        solve(A100, {"1c.3g.20gb": 7})


def test_fragmentation_message_lists_free_slices() -> None:
    """When slices are free but not at a usable start, the message says which are free."""
    with pytest.raises(InfeasibleError) as err:
        solve(A100, {"2g.10gb": 3, "1g.5gb": 2})
    message = str(err.value)
    assert "2g.10gb x3 at 0-1, 2-3, 4-5, 1g.5gb at 6 use memory slices 0-6" in message
    assert "1g.5gb needs 1 memory slice at a start in 0-6" in message
    assert "the only free memory slice is 7 (no other arrangement leaves room)" in message


def test_all_me_excludes_everything_but_no_me() -> None:
    """While a +me.all GI exists only -me GIs may coexist (RTX PRO 6000)."""
    layout = solve(RTX, {"1g.24gb+me.all": 1, "1g.24gb-me": 3})
    assert len(layout.instances) == 4
    with pytest.raises(InfeasibleError, match=r"\+me\.all GPU instance exists only -me profiles"):
        solve(RTX, {"1g.24gb+me.all": 1, "1g.24gb": 1})
    with pytest.raises(
        InfeasibleError, match=re.escape("2g.48gb+me.all cannot be combined with 1g.24gb+me.all")
    ):
        solve(RTX, {"1g.24gb+me.all": 1, "2g.48gb+me.all": 1})


def test_unknown_profiles_raise_unknown_profile_error() -> None:
    """A name the GPU does not offer is UnknownProfileError, not InfeasibleError."""
    with pytest.raises(UnknownProfileError, match=re.escape("Did you mean '1g.10gb'")):
        solve(H100, {"1g.5gb": 1})
    with pytest.raises(UnknownProfileError):
        solve(A100, {"bogus": 1})
    with pytest.raises(ValueError, match="non-negative integer"):
        solve(A100, {"1g.5gb": -1})


def test_empty_request_gives_empty_layout() -> None:
    """Nothing asked, nothing placed (also on a GPU without MIG)."""
    assert solve(A100, {}).instances == ()
    assert solve(gpu_model("l40s"), {"1g.5gb": 0}).instances == ()


def test_single_small_instances_keep_large_blocks_free() -> None:
    """A lone 1g goes where it leaves room for both a 4g and a 3g-sized block (slice 6)."""
    assert starts(solve(A100, {"1g.5gb": 1}), "1g.5gb") == [6]
    assert starts(solve(A100, {"3g.20gb": 1}), "3g.20gb") == [4]


# ---------------------------------------------------------------------- exact vs brute force


@pytest.mark.parametrize("name", MIG_MODELS)
def test_agrees_with_brute_force_on_every_gi_request(name: str) -> None:
    """Every GI-level count combination within the caps: feasible exactly when brute force says
    so (combinations using more memory than the GPU has are sampled separately)."""
    model = gpu_model(name)
    bound = None if model.memory_slices == 8 or name == "a30-24gb" else model.memory_slices + 1
    checked = 0
    for counts in all_gi_requests(model, bound):
        layout = try_solve(model, counts)
        assert (layout is not None) == oracle_gi_feasible(name, counts), counts
        if layout is not None:
            assert_legal_layout(model, counts, layout)
        checked += 1
    assert checked > 30


@settings(max_examples=150, deadline=None)
@given(data=st.data(), model=mig_models())
def test_agrees_with_brute_force_on_sampled_gi_requests(
    data: st.DataObject, model: GpuModel
) -> None:
    """Random GI-level requests on every model agree with brute force."""
    counts = data.draw(gi_requests(model))
    layout = try_solve(model, counts)
    assert (layout is not None) == oracle_gi_feasible(model.name, counts)
    if layout is not None:
        assert_legal_layout(model, counts, layout)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), model=mig_models())
def test_agrees_with_brute_force_on_compute_level_requests(
    data: st.DataObject, model: GpuModel
) -> None:
    """Mixed GI- and CI-level requests agree with brute-force packing plus placement, and pack
    each GI profile's CIs into as few GIs as possible."""
    counts = data.draw(ci_requests(model))
    layout = try_solve(model, counts)
    assert (layout is not None) == oracle_ci_feasible(model.name, counts), counts
    if layout is None:
        return
    assert_legal_layout(model, counts, layout)
    by_gi: dict[str, list[str]] = {}
    for name, count in counts.items():
        by_gi.setdefault(gi_name_of(name), []).extend([name] * count)
    for gi_name, cis in by_gi.items():
        used = sum(1 for gi in layout.instances if gi.profile == gi_name)
        assert used == oracle_min_gis(model.profile(gi_name), cis)


def test_compute_level_packing_examples() -> None:
    """CI-level requests of one GI profile share GIs; a GI-level name takes a GI of its own."""
    layout = solve(A100, {"1c.3g.20gb": 3})
    assert [len(gi.compute_instances) for gi in layout.instances] == [3]
    layout = solve(A100, {"3g.20gb": 1, "1c.3g.20gb": 1})
    assert len(layout.instances) == 2
    layout = solve(A100, {"1c.7g.40gb": 4, "2c.7g.40gb": 1})
    (gi,) = layout.instances
    assert sorted((ci.profile, ci.start) for ci in gi.compute_instances) == [
        ("1c.7g.40gb", 2),
        ("1c.7g.40gb", 3),
        ("1c.7g.40gb", 4),
        ("1c.7g.40gb", 5),
        ("2c.7g.40gb", 0),
    ]


# ---------------------------------------------------------------------- metamorphic


@settings(max_examples=100, deadline=None)
@given(data=st.data(), model=mig_models())
def test_dropping_a_request_from_a_feasible_set_stays_feasible(
    data: st.DataObject, model: GpuModel
) -> None:
    """Feasibility is monotone: fewer instances still fit."""
    counts = data.draw(ci_requests(model))
    assume(try_solve(model, counts) is not None and counts)
    name = data.draw(st.sampled_from(sorted(counts)))
    smaller = dict(counts)
    smaller[name] -= 1
    assert try_solve(model, smaller) is not None


@settings(max_examples=100, deadline=None)
@given(data=st.data(), model=mig_models())
def test_adding_to_an_infeasible_set_stays_infeasible(data: st.DataObject, model: GpuModel) -> None:
    """Feasibility is monotone: more instances never make an infeasible request fit."""
    counts = data.draw(gi_requests(model))
    assume(try_solve(model, counts) is None)
    name = data.draw(st.sampled_from([p.name for p in model.profiles]))
    bigger = dict(counts)
    bigger[name] = bigger.get(name, 0) + 1
    assert try_solve(model, bigger) is None


@settings(max_examples=100, deadline=None)
@given(data=st.data(), model=mig_models())
def test_solving_is_deterministic(data: st.DataObject, model: GpuModel) -> None:
    """The same request (in any key order or spelling) gives the same layout."""
    counts = data.draw(ci_requests(model))
    first = try_solve(model, counts)
    reordered = dict(reversed(list(counts.items())))
    second = try_solve(model, reordered)
    assert first == second
    if first is not None:
        respelled = {f"0{k}" if not k[0].isalpha() else k: v for k, v in counts.items()}
        assert try_solve(model, respelled) == first


# ---------------------------------------------------------------------- existing instances


def pairs_of(layout: Layout) -> set[tuple[str, int]]:
    return {(gi.profile, gi.start) for gi in layout.instances}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), model=mig_models())
def test_keeps_as_many_existing_instances_as_brute_force(
    data: st.DataObject, model: GpuModel
) -> None:
    """From a random current layout to random target counts, the number of GIs kept equals the
    brute-force maximum, and kept GIs are exactly the existing ones left in place."""
    current = data.draw(random_layouts(model))
    target_layout = data.draw(random_layouts(model))
    counts: dict[str, int] = {}
    for name, _ in target_layout:
        counts[name] = counts.get(name, 0) + 1
    existing = layout_instances(model, current)
    layout = solve(model, counts, existing)
    assert_legal_layout(model, counts, layout)
    best = oracle_max_kept(model.name, counts, current)
    assert best is not None
    assert len(layout.kept) == best
    assert {(gi.profile, gi.start) for gi in layout.kept} <= set(current)
    assert len(layout.dropped) == len(current) - best
    kept_ids = {gi.existing_id for gi in layout.kept}
    assert {gi.id for gi in layout.dropped} == {gi.id for gi in existing} - kept_ids


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), model=mig_models())
def test_in_use_instances_never_move(data: st.DataObject, model: GpuModel) -> None:
    """In-use GIs are kept where they are, or the solve fails naming one of them."""
    current = data.draw(random_layouts(model))
    assume(current)
    flags = data.draw(st.lists(st.booleans(), min_size=len(current), max_size=len(current)))
    counts = dict(Counter(name for name, _ in data.draw(random_layouts(model))))
    existing = layout_instances(model, current, flags)
    try:
        layout = solve(model, counts, existing)
    except InfeasibleError as err:
        busy = [gi for gi in existing if gi.in_use]
        assert busy
        assert any(f"GPU instance {gi.id})" in str(err) for gi in busy) or "in use" in str(err)
        # Brute force agrees: no layout with these counts contains every in-use GI.
        want = counts_key(counts)
        needed = {(gi.profile, gi.start) for gi in busy}
        for candidate in legal_layouts(model.name):
            if counts_key(Counter(n for n, _ in candidate)) == want:
                assert not needed <= set(candidate)
        return
    kept = {(gi.existing_id, gi.profile, gi.start) for gi in layout.kept}
    for gi in existing:
        if gi.in_use:
            assert (gi.id, gi.profile, gi.start) in kept


def test_unchanged_state_keeps_everything() -> None:
    """When the GPU already holds the request, every instance is kept and nothing is new."""
    existing = layout_instances(
        A100, [("2g.10gb", 0), ("1g.5gb", 2), ("1g.5gb", 3), ("3g.20gb", 4)]
    )
    layout = solve(A100, {"3g.20gb": 1, "2g.10gb": 1, "1g.5gb": 2}, existing)
    assert len(layout.kept) == 4 and not layout.created and not layout.dropped
    assert all(not gi.new_compute_instances for gi in layout.instances)


def test_in_use_instance_that_must_go_is_refused_by_name() -> None:
    """An in-use GI whose profile is no longer wanted cannot be kept: the error names it."""
    existing = (full_ci_instance(A100, "3g.20gb", 4, gi_id=2, in_use=True),)
    with pytest.raises(
        InfeasibleError, match=r"3g.20gb \(GPU instance 2\) at memory slices 4-7 is in use"
    ):
        solve(A100, {"7g.40gb": 1}, existing)


def test_in_use_instance_blocking_a_placement_is_named() -> None:
    """The 3g.20gb at 0 is in use, so {3g:1, 2g:1, 1g:2} (which needs the 3g at 4) fails."""
    existing = (full_ci_instance(A100, "3g.20gb", 0, gi_id=1, in_use=True),)
    with pytest.raises(InfeasibleError) as err:
        solve(A100, {"3g.20gb": 1, "2g.10gb": 1, "1g.5gb": 2}, existing)
    assert "in-use 3g.20gb (GPU instance 1)" in str(err.value)
    # Not in use: it is moved (recreated at 4) instead.
    layout = solve(A100, {"3g.20gb": 1, "2g.10gb": 1, "1g.5gb": 2}, (attr_not_in_use(existing[0]),))
    assert starts(layout, "3g.20gb") == [4] and len(layout.dropped) == 1


def attr_not_in_use(gi: GpuInstance) -> GpuInstance:
    import attrs

    return attrs.evolve(gi, in_use=False)


def test_partially_filled_gi_gets_more_compute_instances() -> None:
    """A 3g GI holding one 1c CI is kept and two more 1c CIs are added to it."""
    ci = ComputeInstance(id=0, profile_id=0, profile="1c.3g.20gb", start=1, size=1)
    gi = GpuInstance(
        id=1, profile_id=9, profile="3g.20gb", start=4, size=4, compute_instances=(ci,)
    )
    layout = solve(A100, {"1c.3g.20gb": 3}, (gi,))
    (kept,) = layout.instances
    assert kept.kept and kept.existing_id == 1
    assert sorted(c.start for c in kept.new_compute_instances) == [0, 2]
    assert [c.existing_id for c in kept.compute_instances if c.kept] == [0]


def test_orphan_gi_is_reused_or_destroyed() -> None:
    """A GI without CIs is reused when its profile is wanted, else dropped."""
    orphan = GpuInstance(id=3, profile_id=14, profile="2g.10gb", start=2, size=2)
    layout = solve(A100, {"2g.10gb": 1}, (orphan,))
    assert [gi.existing_id for gi in layout.kept] == [3]
    assert [ci.profile for ci in layout.kept[0].new_compute_instances] == ["2g.10gb"]
    layout = solve(A100, {"1g.5gb": 1}, (orphan,))
    assert layout.dropped == (orphan,)


def test_gi_with_unwanted_compute_instances_is_recreated() -> None:
    """A 3g GI holding 1c CIs is not kept when the request wants a GI-wide 3g CI."""
    cis = tuple(
        ComputeInstance(id=i, profile_id=0, profile="1c.3g.20gb", start=i, size=1) for i in range(3)
    )
    gi = GpuInstance(id=1, profile_id=9, profile="3g.20gb", start=0, size=4, compute_instances=cis)
    layout = solve(A100, {"3g.20gb": 1}, (gi,))
    assert layout.dropped == (gi,) and len(layout.created) == 1


def test_same_name_from_another_ci_profile_id_is_kept() -> None:
    """An H100 1g.20gb GI whose CI uses profile 0 (same name as 7) counts as 1g.20gb: kept."""
    ci = ComputeInstance(id=0, profile_id=0, profile="1g.20gb", start=0, size=1)
    gi = GpuInstance(
        id=5, profile_id=15, profile="1g.20gb", start=6, size=2, compute_instances=(ci,)
    )
    layout = solve(H100, {"1g.20gb": 1}, (gi,))
    assert layout.kept and not layout.dropped


@pytest.mark.parametrize("name", ["a100-40gb", "a30-24gb", "rtx-pro-6000"])
def test_every_current_layout_to_every_small_target_keeps_the_maximum(name: str) -> None:
    """Exhaustively on a sample of current layouts: kept count equals brute force."""
    model = gpu_model(name)
    layouts = legal_layouts(name)
    step = max(1, len(layouts) // 40)
    targets = [dict(Counter(n for n, _ in lay)) for lay in layouts[:: step * 3]]
    for current in layouts[::step]:
        existing = layout_instances(model, current)
        for counts in targets:
            layout = solve(model, counts, existing)
            assert len(layout.kept) == oracle_max_kept(name, counts, current)


def test_layout_counts_and_description() -> None:
    """A Layout reports its CI counts and describes itself line by line."""
    layout = solve(A100, {"1c.3g.20gb": 2, "1g.5gb": 1})
    assert dict(layout.counts) == {"1c.3g.20gb": 2, "1g.5gb": 1}
    assert "3g.20gb at 4:4 [1c.3g.20gb at 0:1, 1c.3g.20gb at 1:1]" in layout.describe()
    assert layout.occupied_mask == 0b11110000 | (1 << next(iter(starts(layout, "1g.5gb"))))


def test_overlapping_existing_state_is_reported() -> None:
    """Existing GIs that overlap are an inconsistent state."""
    a = full_ci_instance(A100, "3g.20gb", 0, gi_id=1)
    b = full_ci_instance(A100, "2g.10gb", 2, gi_id=2)
    with pytest.raises(InfeasibleError, match="overlap"):
        solve(A100, {"3g.20gb": 1}, (a, b))


def test_all_combinations_sample_is_consistent_across_models_with_equal_tables() -> None:
    """Models with identical geometry give identical placements for corresponding requests."""
    other = gpu_model("h100-80gb")
    names = dict(
        zip([p.name for p in A100.profiles], [p.name for p in other.profiles], strict=True)
    )
    for counts in itertools.islice(all_gi_requests(A100), 0, 3840, 37):
        a = try_solve(A100, counts)
        b = try_solve(other, {names[k]: v for k, v in counts.items()})
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert [(names[gi.profile], gi.start) for gi in a.instances] == [
                (gi.profile, gi.start) for gi in b.instances
            ]
