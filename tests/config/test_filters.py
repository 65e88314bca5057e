"""Device filters (parse, print, match) and the effective spec per GPU (coverage rule)."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migkit.config import ConfigEntry, load_config
from migkit.config.filters import DeviceFilter, filters_match
from migkit.errors import ConfigError
from migkit.hardware import gpu_model
from migkit.planning.coverage import effective_specs

H100 = (0x233010DE, 0x16C010DE)
A16 = (0x25B610DE, 0x14A910DE)
A2 = (0x25B610DE, 0x157E10DE)
ZERO_SUB = (0x25B610DE, 0x00000000)


@pytest.mark.parametrize(
    ("hardware", "filters", "match"),
    [
        (H100, [""], True),
        (H100, ["0x233010DE"], True),
        (H100, ["0x233010DE:0x16C010DE"], True),
        (H100, ["0x233010DE:0x16C110DE"], False),
        (H100, ["0x233010DE:0x16C110DE", "0x233010DE:0x16C010DE"], True),
        (A16, ["0x25B610DE"], True),
        (A16, ["0x25B610DE:0x14A910DE"], True),
        (A2, ["0x25B610DE:0x14A910DE"], False),
        (ZERO_SUB, ["0x25B610DE:0x14A910DE"], False),
        (ZERO_SUB, ["0x25B610DE:0x00000000"], True),
        (H100, ["0x1E3010DE"], False),
        (A16, ["0x1E3010DE"], False),
        (A2, ["0x1E3010DE"], False),
        (ZERO_SUB, ["0x1E3010DE"], False),
        (H100, [], True),
    ],
)
def test_upstream_matching_table(
    hardware: tuple[int, int], filters: list[str], match: bool
) -> None:
    """Upstream's own matching examples (from its tests) hold."""
    parsed = [DeviceFilter.parse(f) for f in filters]
    assert filters_match(parsed, *hardware) is match


def test_extra_colon_is_a_parse_error() -> None:
    """``0x233010DE:0x16C010DE:extra`` is malformed (upstream: silently no match)."""
    with pytest.raises(ValueError, match="more than one ':'"):
        DeviceFilter.parse("0x233010DE:0x16C010DE:extra")


@pytest.mark.parametrize(
    ("text", "device", "subsystem"),
    [
        ("0x20B010DE", 0x20B010DE, None),
        ("0X20b010de", 0x20B010DE, None),
        ("548540638", 548540638, None),
        ("0o4054010336", 0o4054010336, None),
        ("0b1", 1, None),
        ("04054010336", 0o4054010336, None),
        ("0x20B0_10DE", 0x20B010DE, None),
        ("0x_20B010DE", 0x20B010DE, None),
        ("0", 0, None),
        ("0xFFFFFFFF", 0xFFFFFFFF, None),
        ("0x25B610DE:0x00000000", 0x25B610DE, 0),
        ("0x25B610DE:0x14a910de", 0x25B610DE, 0x14A910DE),
    ],
)
def test_go_base_zero_parsing(text: str, device: int, subsystem: int | None) -> None:
    """Decimal, hex, octal (0o and leading 0), binary and _ separators parse as Go does."""
    parsed = DeviceFilter.parse(text)
    assert (parsed.device, parsed.subsystem) == (device, subsystem)


@pytest.mark.parametrize(
    "bad",
    [
        "A100-SXM4-40GB",
        "20B010DE",
        "0x20B010DE:",
        ":0x20B010DE",
        " 0x20B010DE",
        "0x20B010DE ",
        "0x120B010DE",
        "4294967296",
        "0x",
        "08",
        "0x20B0__10DE",
        "0x20B010DE_",
        "_0x20B010DE",
        "+1",
        "-1",
        "0b2",
    ],
)
def test_malformed_filters_are_errors(bad: str) -> None:
    """Anything Go's parser rejects is an error naming the value and the expected form."""
    with pytest.raises(ValueError, match="0xDDDDVVVV"):
        DeviceFilter.parse(bad)


def test_canonical_printing() -> None:
    """Filters print as 0x%08X[:0x%08X] in upper case; the empty filter prints empty."""
    assert str(DeviceFilter.parse("0x25b610de:0x14a910de")) == "0x25B610DE:0x14A910DE"
    assert str(DeviceFilter.parse("548540638")) == "0x20B210DE"
    assert str(DeviceFilter.parse("0x10DE")) == "0x000010DE"
    assert str(DeviceFilter.parse("")) == ""


@settings(max_examples=200, deadline=None)
@given(device=st.integers(0, 2**32 - 1), subsystem=st.none() | st.integers(0, 2**32 - 1))
def test_print_parse_round_trip(device: int, subsystem: int | None) -> None:
    """Printing then parsing gives the same filter."""
    original = DeviceFilter(device, subsystem)
    assert DeviceFilter.parse(str(original)) == original
    assert original.matches(device, subsystem if subsystem is not None else 0)


# ---------------------------------------------------------------------- coverage


def _entry(
    devices: object,
    enabled: bool = True,
    counts: dict[str, int] | None = None,
    filters: tuple[str, ...] = (),
) -> ConfigEntry:
    return ConfigEntry(
        devices=devices,  # type: ignore[arg-type]
        mig_enabled=enabled,
        mig_devices=counts if counts is not None else ({"1g.10gb": 7} if enabled else {}),
        device_filters=tuple(DeviceFilter.parse(f) for f in filters),
    )


H100_MODEL = gpu_model("h100-80gb")
A30_MODEL = gpu_model("a30-24gb")
L40S_MODEL = gpu_model("l40s")


def test_last_covering_entry_wins_and_overlaps_warn() -> None:
    """``devices: all`` then an override for GPU 0: GPU 0 takes the override, with a warning."""
    entries = [_entry("all", counts={"1g.10gb": 7}), _entry((0,), counts={"7g.80gb": 1})]
    coverage = effective_specs(entries, [H100_MODEL, H100_MODEL])
    assert [g.entry_index for g in coverage.gpus] == [1, 0]
    assert coverage.gpus[0].covering == (0, 1)
    assert len(coverage.warnings) == 1 and "GPU 0" in coverage.warnings[0]


def test_overlapping_equal_specs_do_not_warn() -> None:
    """Two covering entries asking the same thing are not worth a warning."""
    entries = [_entry("all"), _entry((0,))]
    assert effective_specs(entries, [H100_MODEL]).warnings == ()


def test_uncovered_gpus_are_reported_not_covered() -> None:
    """A GPU no entry covers is 'not covered' (left untouched)."""
    entries = [_entry((1,)), _entry("all", filters=("0x20B710DE",))]
    coverage = effective_specs(entries, [H100_MODEL, H100_MODEL, A30_MODEL])
    assert [g.status for g in coverage.gpus] == ["not covered", "covered", "covered"]
    assert coverage.gpus[2].entry_index == 1


def test_out_of_range_index_warns_or_fails_under_strict() -> None:
    """An index beyond the node is a warning, and an error with strict coverage."""
    entries = [_entry((0, 5))]
    coverage = effective_specs(entries, [H100_MODEL])
    assert coverage.warnings == ("entry 0 lists GPU index 5, but this node has 1 GPU (index 0)",)
    with pytest.raises(ConfigError, match="GPU index 5"):
        effective_specs(entries, [H100_MODEL], strict_coverage=True)


def test_non_mig_gpu_rules() -> None:
    """Non-MIG GPUs: skipped via `all` + enabled; satisfied when disabled; error if listed."""
    coverage = effective_specs([_entry("all")], [H100_MODEL, L40S_MODEL])
    assert [g.status for g in coverage.gpus] == ["covered", "skipped"]
    coverage = effective_specs([_entry("all", enabled=False)], [L40S_MODEL])
    assert coverage.gpus[0].status == "covered"
    coverage = effective_specs([_entry((0,), enabled=False)], [L40S_MODEL])
    assert coverage.gpus[0].status == "covered"
    with pytest.raises(ConfigError, match="does not support MIG"):
        effective_specs([_entry((0,))], [L40S_MODEL])


def test_subsystem_filters_use_the_gpu_subsystem() -> None:
    """A subsystem filter matches only GPUs reporting that subsystem."""
    h100 = H100_MODEL
    other = attrs.evolve(h100, pci_subsystem_id=0x16C010DE)
    entries = [_entry("all", filters=(f"0x233010DE:0x{h100.pci_subsystem_id:08X}",))]
    coverage = effective_specs(entries, [h100, other])
    assert [g.status for g in coverage.gpus] == ["covered", "not covered"]


def test_coverage_from_a_loaded_file() -> None:
    """Entries loaded from YAML carry positions into coverage errors."""
    config = load_config(
        "version: v1\nmig-configs:\n  c:\n    - devices: [0]\n      mig-enabled: true\n"
        "      mig-devices: {}\n"
    )
    with pytest.raises(ConfigError) as err:
        effective_specs(config.configs["c"], [L40S_MODEL])
    assert (err.value.line, err.value.column) == (4, 7)
