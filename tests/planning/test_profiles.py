"""Profile names: grammar, canonical form, names from hardware, resolution against a GPU."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migkit.errors import UnknownProfileError
from migkit.hardware import gpu_model
from migkit.names import (
    ProfileName,
    canonical_counts,
    canonical_name,
    computed_gb,
    name_from_nvml,
    parse_profile_name,
)
from migkit.planning.profiles import resolve
from strategies import ci_names, mig_models


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("1g.5gb", "1g.5gb"),
        ("1c.1g.5gb", "1g.5gb"),
        ("3c.3g.20gb", "3g.20gb"),
        ("1c.3g.20gb", "1c.3g.20gb"),
        ("01g.05gb", "1g.5gb"),
        ("1g.10gb+me", "1g.10gb+me"),
        ("1g.24gb+me.all", "1g.24gb+me.all"),
        ("4g.96gb+gfx", "4g.96gb+gfx"),
        ("1g.24gb-me", "1g.24gb-me"),
        ("0g.0gb", "0g.0gb"),
        ("1g.5gb+me,gfx", "1g.5gb+gfx,me"),
        ("002c.007g.0040gb", "2c.7g.40gb"),
    ],
)
def test_canonical_names_follow_the_fact_sheet_table(written: str, canonical: str) -> None:
    """Each written name canonicalises as mig-parted's profile-name grammar says."""
    assert canonical_name(written) == canonical


@pytest.mark.parametrize(
    "bad",
    [
        "1g.5gb+me-x",
        "1g",
        "1g.5gb+",
        "1g.5gb+me,me",
        "1g.5gb+1x",
        "1g.5gb+.me",
        " 1g.5gb",
        "1g.5gb ",
        "1G.5GB",
        "1g.5gb.",
        "1c.1g.5gb.2",
        "g.5gb",
        "1g.5",
        "1g.5gb+me.",
        "1x.1g.5gb",
        "bogus",
        "",
        "1g.5gb-",
        "1g.5gb+me,",
        "+me",
    ],
)
def test_malformed_names_are_rejected_with_a_reason(bad: str) -> None:
    """Names outside the grammar raise ValueError quoting the name."""
    with pytest.raises(ValueError, match="is not a MIG profile name"):
        parse_profile_name(bad)


def test_parsed_fields_and_gi_name() -> None:
    """A compute-level name knows its GI-level name and that it is compute-level."""
    name = parse_profile_name("1c.3g.40gb")
    assert name == ProfileName(1, 3, 40)
    assert name.gi_name == "3g.40gb"
    assert name.is_compute_level
    assert not parse_profile_name("3g.40gb").is_compute_level
    minus = parse_profile_name("1c.2g.48gb-me")
    assert minus.negative and minus.attributes == ("me",)
    assert minus.gi_name == "2g.48gb-me"


@settings(max_examples=200, deadline=None)
@given(
    c=st.integers(0, 99),
    g=st.integers(0, 99),
    gb=st.integers(0, 999),
    attrs=st.lists(st.sampled_from(["me", "me.all", "gfx", "x1", "A.b"]), unique=True, max_size=3),
    negative=st.booleans(),
    zeros=st.integers(0, 2),
)
def test_canonical_form_is_a_fixed_point(
    c: int, g: int, gb: int, attrs: list[str], negative: bool, zeros: int
) -> None:
    """Parsing any well-formed spelling and printing it canonically is idempotent."""
    pad = "0" * zeros
    suffix = ("-" if negative else "+") + ",".join(attrs) if attrs else ""
    text = f"{pad}{c}c.{pad}{g}g.{pad}{gb}gb{suffix}"
    canonical = canonical_name(text)
    assert canonical_name(canonical) == canonical
    assert parse_profile_name(canonical) == parse_profile_name(text)


@pytest.mark.parametrize(
    ("mib", "total_mib", "gb"),
    [
        (4864, 40960, 5),  # A100-40GB 1g
        (19968, 40960, 20),  # A100-40GB 3g
        (40192, 40960, 40),  # A100-40GB 7g
        (71168, 143771, 71),  # H200 3g: 141 x 4/8 = 70.5 rounds away from zero
        (22528, 183359, 23),  # B200 1g: 180 x 1/8 = 22.5
        (20992, 183359, 23),  # B200 1g on the Mar 2025 driver
        (81152, 81559, 80),  # H100 7g
        (11008, 95830, 12),  # H100 NVL 1g: 94 x 1/8 = 11.75
        (22144, 95830, 24),  # H100 NVL 1g.24gb: 23.5
    ],
)
def test_computed_gb_rounds_half_away_from_zero(mib: int, total_mib: int, gb: int) -> None:
    """The GB in a name matches upstream's formula with exact half-away-from-zero rounding."""
    assert computed_gb(mib, total_mib * 2**20) == gb


def test_bundled_profile_names_agree_with_the_formula() -> None:
    """Every bundled GI profile's GB equals computed_gb of its memory (mig-parted's eighths-of-the-board rule)."""
    for model in (gpu_model(n) for n in ("a100-40gb", "a30-24gb", "h100-80gb", "h200-141gb")):
        for profile in model.profiles:
            assert parse_profile_name(profile.name).memory_gb == computed_gb(
                profile.memory_mib, model.memory_mib * 2**20
            ), profile.name


@pytest.mark.parametrize(
    ("nvml", "canonical"),
    [
        ("MIG 1c.3g.40gb", "1c.3g.40gb"),
        ("MIG 1g.10gb+me", "1g.10gb+me"),
        ("MIG 1c.1g.10gb", "1g.10gb"),
        ("NVIDIA A100-SXM4-40GB MIG 3g.20gb", "3g.20gb"),
        ("1g.5gb", "1g.5gb"),
    ],
)
def test_names_from_nvml(nvml: str, canonical: str) -> None:
    """NVML's names map to canonical names."""
    assert name_from_nvml(nvml) == canonical


def test_canonical_counts_merge_drop_and_sum() -> None:
    """Duplicates that canonicalise alike are summed; zero counts disappear."""
    counts = canonical_counts({"1c.1g.5gb": 2, "1g.5gb": 1, "2g.10gb": 0, "01g.05gb": 1})
    assert dict(counts) == {"1g.5gb": 4}
    assert counts == {"1g.5gb": 4}
    assert hash(counts) == hash(canonical_counts({"1g.5gb": 4}))
    with pytest.raises(ValueError, match="negative"):
        canonical_counts({"1g.5gb": -1})
    with pytest.raises(ValueError, match="integer"):
        canonical_counts({"1g.5gb": True})


def test_resolve_gi_and_compute_level_names() -> None:
    """Names resolve to the GPU's own GI profile and the CI a request creates."""
    h100 = gpu_model("h100-80gb")
    profile, ci = resolve(h100, "1c.3g.40gb")
    assert (profile.id, profile.name) == (9, "3g.40gb")
    assert ci is not None and (ci.id, ci.slice_count) == (0, 1)
    profile, ci = resolve(h100, "3c.3g.40gb")
    assert profile.id == 9 and ci is not None and ci.id == 2
    # The 2x-memory 1g on Hopper has two CI profiles named alike; the full-SM one (7) wins.
    profile, ci = resolve(h100, "1g.20gb")
    assert profile.id == 15 and ci is not None and ci.id == 7


def test_unknown_profile_names_gpu_offers_and_suggests_same_shape() -> None:
    """A well-formed unknown name says which GPU, what it offers, and the GB-only fix."""
    a100 = gpu_model("a100-80gb")
    with pytest.raises(UnknownProfileError) as err:
        resolve(a100, "7g.79gb")
    message = str(err.value)
    assert "a100-80gb" in message and "'7g.79gb'" in message
    assert "it offers: " in message and "3g.40gb" in message
    assert "Did you mean '7g.80gb'?" in message
    with pytest.raises(UnknownProfileError, match=re.escape("Did you mean '1g.10gb+me'")):
        resolve(gpu_model("h100-80gb"), "1g.12gb+me")


def test_unknown_compute_level_name_lists_the_gi_compute_profiles() -> None:
    """3c inside a 4g does not exist; the error lists what 4g GIs offer."""
    with pytest.raises(
        UnknownProfileError, match=re.escape("offer 1c.4g.20gb, 2c.4g.20gb, 4g.20gb")
    ):
        resolve(gpu_model("a100-40gb"), "3c.4g.20gb")


def test_non_mig_gpu_resolves_nothing() -> None:
    """A GPU without MIG says so."""
    with pytest.raises(UnknownProfileError, match="does not support MIG"):
        resolve(gpu_model("l40s"), "1g.10gb")


@settings(max_examples=60, deadline=None)
@given(data=st.data(), model=mig_models())
def test_every_offered_name_resolves_to_its_own_gi(data: st.DataObject, model: object) -> None:
    """Every CI-level name a model offers resolves to the GI profile it names."""
    from migkit.models import GpuModel

    assert isinstance(model, GpuModel)
    name = data.draw(st.sampled_from(ci_names(model)))
    profile, ci = resolve(model, name)
    parsed = parse_profile_name(name)
    assert profile.name == parsed.gi_name
    assert ci is not None and ci.slice_count == parsed.compute_slices
