"""The bundled H100 and H200 tables equal what real GPUs reported (``tests/data/real``).

Each capture folder holds ``nvidia-smi mig -lgip`` / ``-lgipp``, ``nvidia-smi -q``, a
``--query-gpu`` line and every NVML read made through nvidia-ml-py, taken read-only with MIG
disabled on driver 580.159.04, plus what migkit printed on the same GPU. Every field of the
bundled table is compared with every capture that shows it, and the outputs derived from the
table (generated config names, node labels, the profiles listing) with migkit's captured
output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from migkit import generate, labels, open_node
from migkit.hardware import gpu_model, model_for_pci_id, provenance
from migkit.planning import render

REAL = Path(__file__).resolve().parents[1] / "data" / "real"
DRIVER = "580.159.04"
CAPTURES = {"h100-80gb": REAL / f"h100-80gb-{DRIVER}", "h200-141gb": REAL / f"h200-141gb-{DRIVER}"}
MODELS = sorted(CAPTURES)
ARCHITECTURE_NAMES = {"Ampere": 7, "Hopper": 9, "Blackwell": 10}


# ------------------------------------------------------------------------------ capture parsers


def _lgip(folder: Path) -> list[dict[str, Any]]:
    """The rows of ``nvidia-smi mig -lgip``: two table lines per profile."""
    lines = (folder / "lgip.txt").read_text().splitlines()
    first = re.compile(
        r"^\|\s+\d+\s+(MIG \S+)\s+(\d+)\s+(\d+)/(\d+)\s+([\d.]+)\s+(Yes|No)\s+(\d+)\s+(\d+)\s+(\d+)\s+\|$"
    )
    second = re.compile(r"^\|\s+(\d+)\s+(\d+)\s+(\d+)\s+\|$")
    rows = []
    for i, line in enumerate(lines):
        match = first.match(line)
        if match is None:
            continue
        more = second.match(lines[i + 1])
        assert more is not None, f"no engine line after {line!r}"
        rows.append(
            {
                "name": match[1],
                "id": int(match[2]),
                "free": int(match[3]),
                "instances": int(match[4]),
                "gib": match[5],
                "p2p": match[6] == "Yes",
                "sm": int(match[7]),
                "dec": int(match[8]),
                "enc": int(match[9]),
                "ce": int(more[1]),
                "jpg": int(more[2]),
                "ofa": int(more[3]),
            }
        )
    assert rows, f"no profile rows in {folder / 'lgip.txt'}"
    return rows


def _lgipp(folder: Path) -> dict[int, list[tuple[int, int]]]:
    """``nvidia-smi mig -lgipp``: profile ID -> [(start, size)]."""
    out: dict[int, list[tuple[int, int]]] = {}
    pattern = re.compile(r"Profile ID\s+(\d+)\s+Placements?\s*:\s*\{([\d,]+)\}:(\d+)")
    for line in (folder / "lgipp.txt").read_text().splitlines():
        match = pattern.search(line)
        if match is not None:
            size = int(match[3])
            out[int(match[1])] = [(int(s), size) for s in match[2].split(",")]
    assert out, f"no placements in {folder / 'lgipp.txt'}"
    return out


def _smi_q(folder: Path) -> dict[str, str]:
    """The fields of ``nvidia-smi -q`` this test needs (the first of each)."""
    wanted = {"Product Name", "Product Architecture", "Device Id", "Sub System Id"}
    out: dict[str, str] = {}
    in_fb = False
    for line in (folder / "nvidia-smi-q.txt").read_text().splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep:
            in_fb = line.strip() == "FB Memory Usage"
            continue
        if in_fb and key == "Total":
            out.setdefault("FB Total", value.strip())
        if key in wanted:
            out.setdefault(key, value.strip())
    return out


def _query(folder: Path) -> dict[str, str]:
    header, row = (folder / "query.csv").read_text().splitlines()[:2]
    return dict(zip((h.strip() for h in header.split(",")), (v.strip() for v in row.split(",")), strict=True))


def _pynvml(folder: Path) -> dict[str, Any]:
    doc = json.loads((folder / "pynvml.json").read_text())
    assert doc["driver"] == DRIVER and doc["count"] == 1
    device: dict[str, Any] = doc["devices"][0]
    return device


def _mib(text: str) -> int:
    number, unit = text.split()
    assert unit == "MiB"
    return int(number)


# ------------------------------------------------------------------------------ (a) the tables


@pytest.mark.parametrize("name", MODELS)
def test_identity_equals_every_capture(name: str) -> None:
    """Product name, PCI device and subsystem ids, total memory and architecture."""
    model, folder = gpu_model(name), CAPTURES[name]
    device, smi, query = _pynvml(folder), _smi_q(folder), _query(folder)
    assert model.product_name == device["name"] == smi["Product Name"] == query["name"]
    assert model.pci_device_id == int(device["pci"]["device_id"], 16)
    assert model.pci_device_id == int(smi["Device Id"], 16) == int(query["pci.device_id"], 16)
    assert model.pci_subsystem_id == int(device["pci"]["subsystem_id"], 16)
    assert model.pci_subsystem_id == int(smi["Sub System Id"], 16)
    assert model.pci_subsystem_id == int(query["pci.sub_device_id"], 16)
    assert model.memory_mib * 2**20 == device["memory_total"]
    assert model.memory_mib == _mib(smi["FB Total"]) == _mib(query["memory.total [MiB]"])
    assert model.architecture == device["architecture"]
    assert model.architecture == ARCHITECTURE_NAMES[smi["Product Architecture"]]
    assert query["driver_version"] == DRIVER


@pytest.mark.parametrize("name", MODELS)
def test_profiles_equal_the_nvml_reads_index_by_index(name: str) -> None:
    """Every supported profile index reads back as the table's row; no other index exists."""
    model, device = gpu_model(name), _pynvml(CAPTURES[name])
    read = {p["index"]: p for p in device["profiles"] if "id" in p}
    assert sorted(read) == sorted(p.index for p in model.profiles)
    for profile in model.profiles:
        row = read[profile.index]
        assert (
            profile.id,
            profile.nvml_name,
            profile.slice_count,
            profile.instance_count,
            profile.memory_mib,
            profile.multiprocessors,
            profile.copy_engines,
            profile.decoders,
            profile.encoders,
            profile.jpegs,
            profile.ofas,
        ) == (
            row["id"],
            row["name"],
            row["slices"],
            row["instances"],
            row["mem_mib"],
            row["sm"],
            row["ce"],
            row["dec"],
            row["enc"],
            row["jpg"],
            row["ofa"],
        ), f"profile index {profile.index}"
        assert [(p.start, p.size) for p in profile.placements] == [tuple(p) for p in row["placements"]]
        assert {p.size for p in profile.placements} == {profile.memory_slices}
        # With MIG disabled the driver answers the full instance count as remaining capacity.
        assert row["remaining"] == profile.instance_count
        assert row["p2p"] == 0


@pytest.mark.parametrize("name", MODELS)
def test_profile_indices_past_the_table_are_errors_in_the_capture(name: str) -> None:
    """The capture reads indices 0..17: unused ones NOT_SUPPORTED, the last INVALID_ARGUMENT."""
    device = _pynvml(CAPTURES[name])
    errors = {p["index"]: p["error_v3"] for p in device["profiles"] if "id" not in p}
    used = {p.index for p in gpu_model(name).profiles}
    assert set(errors) == set(range(18)) - used
    assert errors.pop(17) == 2
    assert set(errors.values()) == {3}


@pytest.mark.parametrize("name", MODELS)
def test_profiles_equal_nvidia_smi_lgip_and_lgipp(name: str) -> None:
    """The -lgip rows (in -lgip order) and the -lgipp placements."""
    model, folder = gpu_model(name), CAPTURES[name]
    rows = _lgip(folder)
    assert [r["id"] for r in rows] == [p.id for p in model.profiles]
    for profile, row in zip(model.profiles, rows, strict=True):
        assert (
            profile.nvml_name,
            profile.instance_count,
            profile.multiprocessors,
            profile.decoders,
            profile.encoders,
            profile.copy_engines,
            profile.jpegs,
            profile.ofas,
        ) == (
            row["name"],
            row["instances"],
            row["sm"],
            row["dec"],
            row["enc"],
            row["ce"],
            row["jpg"],
            row["ofa"],
        )
        assert row["free"] == row["instances"] and not row["p2p"]
        assert f"{profile.memory_mib / 1024:.2f}" == row["gib"]
    placements = _lgipp(folder)
    assert {p.id: [(pl.start, pl.size) for pl in p.placements] for p in model.profiles} == placements


@pytest.mark.parametrize("name", MODELS)
def test_captured_tables_are_marked_observed_on_the_capture_driver(name: str) -> None:
    """The model and every value of it are marked observed on 580.159.04."""
    model, origin = gpu_model(name), provenance(name)
    assert origin.observed and origin.observed_on == DRIVER and model.driver == DRIVER
    assert all(p.mark == p.placements_mark == "observed" for p in model.profiles)
    assert model_for_pci_id(model.pci_device_id, model.memory_mib) == model


# ------------------------------------------------------------------------------ derived outputs


def _without_compute_details(doc: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A live listing has no CI profiles until a GI exists and no NVML name column; drop both."""
    for gpu in doc:
        for profile in gpu["profiles"]:
            profile.pop("compute_profiles")
            profile.pop("nvml_name")
    return doc


@pytest.mark.parametrize("name", MODELS)
def test_generated_config_equals_the_captured_one(name: str) -> None:
    """``generate-config`` from the bundled table is what migkit generated on the real GPU."""
    captured = yaml.safe_load((CAPTURES[name] / "migkit-generate-config.yaml").read_text())
    ours = yaml.safe_load(generate.render(generate.generate_config([gpu_model(name)]), "yaml"))
    assert ours == captured


@pytest.mark.parametrize("name", MODELS)
def test_profiles_listing_equals_the_captured_one(name: str) -> None:
    """``profiles -o json`` from the table equals the live listing (CI profiles aside)."""
    captured = json.loads((CAPTURES[name] / "migkit-profiles.json").read_text())
    ours = json.loads(render.profiles_table([gpu_model(name)], "json"))
    assert _without_compute_details(ours) == _without_compute_details(captured)


def test_labels_of_the_simulated_h200_equal_the_captured_ones() -> None:
    """The mixed-strategy labels of a simulated H200 are those migkit printed on the real one."""
    text = (CAPTURES["h200-141gb"] / "migkit-labels-mixed.txt").read_text()
    captured = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("rc="))
    with open_node(simulate="1xh200-141gb") as node:
        # The capture was taken with a migkit that always added the GPU Operator's gpu.present.
        ours = labels.node_labels(node.snapshot(), "mixed", present=True)
    assert ours == captured
    assert int(captured["nvidia.com/gpu.memory"]) == gpu_model("h200-141gb").memory_mib
