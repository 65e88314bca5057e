"""The bundled hardware tables restate the fact sheet's observed values."""

from __future__ import annotations

import pytest

import migkit
from migkit.errors import UnknownModelError, UnknownProfileError
from migkit.hardware import MARKS, _check_table, _raw_tables, canonical_from_nvml, model_for_pci_id, provenance
from migkit.names import computed_gb

REQUIRED_MODELS = {
    "a100-40gb",
    "a100-80gb",
    "a30-24gb",
    "h100-80gb",
    "h100-nvl-94gb",
    "gh200-96gb",
    "h200-141gb",
    "b200-180gb",
    "rtx-pro-6000",
    "l40s",
    # the rest of the GPU Operator's default config (one per PCI device id it names)
    "a100-pcie-40gb",
    "a100-pcie-40gb-20b1",
    "a800-pcie-40gb",
    "a100-pcie-80gb",
    "a800-sxm4-80gb",
    "a800-pcie-80gb",
    "pg506-96gb",
    "h100-pcie-80gb",
    "h800-pcie-80gb",
    "h800-80gb",
    "h800-nvl-94gb",
    "h100-96gb",
    "h20-96gb",
    "gh200-144gb",
    "h200-nvl-141gb",
    "gb200-186gb",
    "b300-269gb",
    "gb300-278gb",
}


def test_every_required_model_is_bundled() -> None:
    """gpu_models() offers at least the models the project promises."""
    assert {m.name for m in migkit.gpu_models()} >= REQUIRED_MODELS


def test_h100_table_matches_the_fact_sheet() -> None:
    """H100 80GB: IDs, names, memory, SMs, caps and placements as observed as nvidia-smi mig -lgip shows them."""
    model = migkit.gpu_model("h100-80gb")
    rows = [
        (
            p.id,
            p.name,
            p.memory_mib,
            p.multiprocessors,
            p.instance_count,
            [str(pl) for pl in p.placements],
        )
        for p in model.profiles
    ]
    assert rows == [
        (19, "1g.10gb", 9984, 16, 7, ["0:1", "1:1", "2:1", "3:1", "4:1", "5:1", "6:1"]),
        (20, "1g.10gb+me", 9984, 16, 1, ["0:1", "1:1", "2:1", "3:1", "4:1", "5:1", "6:1"]),
        (15, "1g.20gb", 20096, 26, 4, ["0:2", "2:2", "4:2", "6:2"]),
        (14, "2g.20gb", 20096, 32, 3, ["0:2", "2:2", "4:2"]),
        (9, "3g.40gb", 40448, 60, 2, ["0:4", "4:4"]),
        (5, "4g.40gb", 40448, 64, 1, ["0:4"]),
        (0, "7g.80gb", 81152, 132, 1, ["0:8"]),
    ]
    assert model.pci_device_id == 0x233010DE
    assert model.product_name == "NVIDIA H100 80GB HBM3"
    assert model.memory_mib == 81559


def test_a100_40gb_names_follow_the_fact_sheet() -> None:
    """A100-40GB profile names and memory as nvidia-smi mig -lgip shows them."""
    model = migkit.gpu_model("a100-40gb")
    assert {p.name: p.memory_mib for p in model.profiles} == {
        "1g.5gb": 4864,
        "1g.5gb+me": 4864,
        "1g.10gb": 9856,
        "2g.10gb": 9856,
        "3g.20gb": 19968,
        "4g.20gb": 19968,
        "7g.40gb": 40192,
    }


def test_rtx_pro_6000_has_attribute_profiles_and_the_all_me_rule() -> None:
    """RTX PRO 6000: 4 slices with +gfx, +me.all and -me profiles; ALL_ME/NO_ME flags set."""
    model = migkit.gpu_model("rtx-pro-6000")
    names = {p.name for p in model.profiles}
    assert {"1g.24gb+gfx", "1g.24gb+me.all", "1g.24gb-me", "2g.48gb+me.all", "4g.96gb+gfx"} <= names
    assert model.profile("1g.24gb+me.all").all_me and model.profile(65).all_me
    assert model.profile("2g.48gb-me").no_me
    assert model.memory_slices == 4 and model.max_mig_devices == 4


def test_non_mig_gpu_has_no_profiles() -> None:
    """The L40S stands for GPUs without MIG."""
    model = migkit.gpu_model("l40s")
    assert not model.mig_capable and model.profiles == ()


def test_inferred_values_are_marked() -> None:
    """Placements never seen on hardware are marked inferred, observed ones observed."""
    assert all(p.placements_mark == "inferred" for p in migkit.gpu_model("gh200-96gb").profiles)
    for name in ("h100-80gb", "h200-141gb"):  # -lgipp captured on 580.159.04
        assert all(p.placements_mark == "observed" for p in migkit.gpu_model(name).profiles)
    assert migkit.gpu_model("b200-180gb").profile("7g.180gb").mark == "inferred"


def test_compute_profiles_follow_the_observed_lcip_table() -> None:
    """3g GIs offer 1c x3, 2c x1 and the full 3g; the full one comes first."""
    profile = migkit.gpu_model("a100-40gb").profile("3g.20gb")
    assert [(c.id, c.name, c.instance_count, c.multiprocessors) for c in profile.compute_profiles] == [
        (2, "3g.20gb", 1, 42),
        (1, "2c.3g.20gb", 1, 28),
        (0, "1c.3g.20gb", 3, 14),
    ]
    four = migkit.gpu_model("a100-40gb").profile("4g.20gb")
    assert [c.slice_count for c in four.compute_profiles] == [4, 2, 1]  # no 3c.4g


def test_unknown_names_raise_clear_errors() -> None:
    """Unknown models and profiles name what is offered."""
    with pytest.raises(UnknownModelError, match="h100-80gb"):
        migkit.gpu_model("h100")
    with pytest.raises(UnknownProfileError, match=r"2g\.20gb"):
        migkit.gpu_model("a100-40gb").profile("2g.20gb")


@pytest.mark.parametrize(
    ("nvml", "canonical"),
    [
        ("MIG 1g.10gb", "1g.10gb"),
        ("MIG 1c.3g.40gb", "1c.3g.40gb"),
        ("MIG 1c.1g.10gb", "1g.10gb"),
        ("MIG 1g.24gb+me.all", "1g.24gb+me.all"),
    ],
)
def test_canonical_names_from_nvml(nvml: str, canonical: str) -> None:
    """NVML's names lose the "MIG " prefix and a C-prefix equal to G."""
    assert canonical_from_nvml(nvml) == canonical


def test_models_are_found_by_pci_id() -> None:
    """Live GPUs are matched to bundled tables by packed PCI device id."""
    found = model_for_pci_id(0x20B710DE)
    assert found is not None and found.name == "a30-24gb"
    assert model_for_pci_id(0x12345678) is None


def test_one_pci_id_with_two_tables_is_told_apart_by_memory() -> None:
    """0x2941 is the GB200 as production drivers present it and as an early driver did."""
    found = [model_for_pci_id(0x294110DE, memory) for memory in (None, 189471, 193024)]
    assert [m.name if m else None for m in found] == ["gb200-186gb", "gb200-186gb", "gb200-189gb"]


@pytest.mark.parametrize("model", migkit.gpu_models(), ids=lambda m: m.name)
def test_profile_names_follow_the_memory_rule(model: migkit.GpuModel) -> None:
    """Every name's GB figure is what mig-parted computes from the profile and total memory."""
    for p in model.profiles:
        figure = int(p.name.split(".")[1].split("gb")[0])
        assert computed_gb(p.memory_mib, model.memory_mib * 2**20) == figure, p.name


@pytest.mark.parametrize("model", migkit.gpu_models(), ids=lambda m: m.name)
def test_every_value_is_marked_and_sourced(model: migkit.GpuModel) -> None:
    """Marks are observed/derived/inferred; a table that is not wholly observed names sources,
    and a row that is not observed says where it comes from (in the row or the table)."""
    origin = provenance(model.name)
    assert origin.identity_mark in MARKS and origin.sources
    row_sources = dict(origin.profile_sources)
    for p in model.profiles:
        assert p.mark in MARKS and p.placements_mark in MARKS
        if p.mark != "observed" and not origin.notes:
            assert row_sources.get(p.id), f"{model.name} {p.name} is {p.mark} without a source"


def test_inconsistent_tables_are_refused() -> None:
    """The loader fails closed on an unknown mark or a placement that cannot be."""
    table = _raw_tables()["a30-24gb"]
    bad_mark = {**table, "profiles": [{**table["profiles"][0], "mark": "guessed"}]}
    with pytest.raises(ValueError, match="guessed"):
        _check_table(bad_mark)
    row = table["profiles"][0]
    outside = {**table, "profiles": [{**row, "placements": [*row["placements"][:-1], [4, 1]]}]}
    with pytest.raises(ValueError, match="outside"):
        _check_table(outside)
    _check_table(table)
