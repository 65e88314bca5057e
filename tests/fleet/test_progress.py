"""A rollout's progress record and the decisions made from a node's metadata (pure)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migkit.agent import labels as L
from migkit.fleet.progress import (
    ANNOTATION,
    PHASES,
    Progress,
    Standing,
    assess,
    finish_patch,
    label_patch,
    outcome,
    plan_waves,
    wave_size,
)

names = st.text(st.sampled_from("abcdefgh0123456789-"), min_size=1, max_size=8)
configs = st.sampled_from(["all-balanced", "all-1g.10gb", "all-disabled"])
states = st.sampled_from([None, *L.STATES])
progresses = st.builds(Progress, config=configs, token=st.text(min_size=1, max_size=12),
                       phase=st.sampled_from(PHASES), previous=st.none() | configs, cordoned=st.booleans(),
                       wave=st.integers(0, 99), started=st.text(max_size=20), finished=st.text(max_size=20),
                       message=st.text(max_size=40))


@given(progresses)
def test_a_progress_record_survives_the_annotation(progress: Progress) -> None:
    """What a rollout writes on a node is what a rerun reads back."""
    assert Progress.from_annotations({ANNOTATION: progress.to_json()}) == progress


@pytest.mark.parametrize("raw", ["", "{", "[]", '{"config": "x"}', '{"config": "x", "token": "t", "phase": "odd"}'])
def test_a_record_that_is_not_ours_is_ignored(raw: str) -> None:
    """An unreadable or foreign annotation is no record (the node is judged by its labels)."""
    assert Progress.from_annotations({ANNOTATION: raw}) is None


@given(st.lists(names, unique=True), st.lists(names, unique=True), st.integers(1, 7))
def test_waves_keep_in_flight_nodes_first_and_never_exceed_the_size(in_flight: list[str], todo: list[str],
                                                                     size: int) -> None:
    """Waves hold every node once, in-flight ones first, each at most ``size`` and only the
    last one shorter."""
    todo = [n for n in todo if n not in in_flight]
    waves = plan_waves(in_flight, todo, size)
    flat = [n for w in waves for n in w]
    assert flat == sorted(in_flight) + sorted(todo)
    assert all(len(w) == size for w in waves[:-1]) and all(0 < len(w) <= size for w in waves)


@given(st.integers(1, 5000), st.integers(1, 100))
def test_a_percentage_rounds_down_but_never_below_one(selected: int, percent: int) -> None:
    size = wave_size(f"{percent}%", selected)
    assert size == max(1, math.floor(selected * percent / 100))
    assert wave_size(str(percent), selected) == percent


@pytest.mark.parametrize("bad", ["0", "-1", "0%", "101%", "x", "5 nodes", "nan%"])
def test_a_bad_max_unavailable_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        wave_size(bad, 10)


@given(configs, configs, states, st.none() | progresses)
def test_assessment_follows_the_labels_and_the_record(config: str, label: str, state: str | None,
                                                      progress: Progress | None) -> None:
    """Done/failed/in flight only for this rollout's own record on a node labelled with its
    config; never a label change for a node mid-change to something else."""
    labels = {L.CONFIG_LABEL: label, **({L.STATE_LABEL: state} if state else {})}
    annotations = {ANNOTATION: progress.to_json()} if progress else {}
    a = assess(labels, annotations, config)
    ours = progress is not None and progress.config == config and label == config
    if ours:
        assert progress is not None
        expected = {"success": Standing.DONE, "failed": Standing.FAILED, "applying": Standing.IN_FLIGHT}
        assert a.standing is expected[progress.phase]
    elif label == config:
        assert a.standing is {"success": Standing.ALREADY, "failed": Standing.FAILED}.get(state or "", Standing.BUSY)
    elif state in (L.STATE_PENDING, L.STATE_REBOOTING):
        assert a.standing is Standing.BUSY
    else:
        assert a.standing is Standing.TODO


@given(states, st.none() | st.text(max_size=5), st.text(min_size=1, max_size=5))
def test_an_outcome_counts_only_with_the_agents_echo_of_the_token(state: str | None, handled: str | None,
                                                                  token: str) -> None:
    """A terminal state is this change's outcome only when the agent echoed this token."""
    labels = {L.STATE_LABEL: state} if state else {}
    annotations = {L.HANDLED_RETRY_ANNOTATION: handled} if handled is not None else {}
    result = outcome(labels, annotations, token)
    assert result == (state if state in L.TERMINAL_STATES and handled == token else None)


def test_the_label_patch_clears_the_state_and_carries_the_token() -> None:
    """One patch, conditional on the node as last read: config label, state removed, the token
    as the agent's retry annotation, the record; the cordon only when asked; uncordon only
    after success when we cordoned."""
    p = Progress(config="all-balanced", token="t1", phase="applying", previous="all-disabled", cordoned=True)
    body = label_patch("all-balanced", p, cordon=True, resource_version="42")
    meta = body["metadata"]
    assert meta == {"resourceVersion": "42",  # type: ignore[comparison-overlap]
                    "labels": {L.CONFIG_LABEL: "all-balanced", L.STATE_LABEL: None},
                    "annotations": {L.RETRY_ANNOTATION: "t1", ANNOTATION: p.to_json()}}
    assert body["spec"] == {"unschedulable": True}
    assert "spec" not in label_patch("all-balanced", p, cordon=False, resource_version="42")
    assert finish_patch(p, uncordon=True)["spec"] == {"unschedulable": None}
    assert "spec" not in finish_patch(p, uncordon=False)
