"""Checkpoints: validated before anything changes, and nvidia-mig-parted's format read and written.

The conformance tests run NVIDIA's own ``nvidia-mig-parted`` (``../shared/peers``) against the
simulator inside ``fakehost`` (a private mount namespace; needs root) and are skipped with the
reason where that cannot run.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

from migkit import checkpoint, simulator
from migkit.cli import main
from migkit.errors import ConfigError
from migkit.nvml.node import open_node

PEERS = Path(__file__).resolve().parents[2].parent / "shared" / "peers"

LAYOUT = """\
version: v1
mig-configs:
  mixed:
    - devices: [0]
      mig-enabled: true
      mig-devices: {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
    - devices: [1]
      mig-enabled: true
      mig-devices: {"1c.3g.40gb": 2, "4g.40gb": 1}
  cleared:
    - devices: all
      mig-enabled: false
"""


@pytest.fixture
def node(tmp_path: Path) -> str:
    return simulator.write_state(tmp_path / "node.state", "2xh100-80gb")


@pytest.fixture
def cfg(tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(LAYOUT)
    return str(path)


def mutating_calls(state: str) -> int:
    counts = simulator.stats(state)
    return sum(v for k, v in counts.items() if "Create" in k or "Destroy" in k or k == "nvmlDeviceSetMigMode")


def layout(state: str) -> list[tuple[bool, list[tuple[int, int, int, list[tuple[int, int, int]]]]]]:
    """Mode and every GI (profile ID, start, size, CIs) per GPU, in a comparable form."""
    with open_node(sim_state=state) as handle:
        gpus = handle.snapshot()
    return [
        (
            gpu.mig_enabled,
            sorted(
                (
                    gi.profile_id,
                    gi.start,
                    gi.size,
                    sorted((c.profile_id, c.start, c.size) for c in gi.compute_instances),
                )
                for gi in gpu.gpu_instances
            ),
        )
        for gpu in gpus
    ]


def saved_document(node: str, cfg: str, tmp_path: Path) -> dict[str, Any]:
    assert main(["--sim-state", node, "apply", "-f", cfg, "-c", "mixed"]) == 0
    path = tmp_path / "good.json"
    assert main(["--sim-state", node, "checkpoint", "-f", str(path)]) == 0
    document: dict[str, Any] = json.loads(path.read_text())
    return document


# ------------------------------------------------------------------------------ validation


def _mutations() -> list[tuple[str, Any, str]]:
    """(id, function that breaks a document, text the error must contain)."""

    def gi(doc: dict[str, Any], k: int = 0) -> dict[str, Any]:
        item: dict[str, Any] = doc["gpus"][0]["gpu_instances"][k]
        return item

    return [
        (
            "mig-enabled-string",
            lambda d: d["gpus"][0].update(mig_enabled="false"),
            "gpus[0].mig_enabled: must be true or false",
        ),
        ("unknown-profile", lambda d: gi(d).update(profile_id=99), "gpu_instances[0].profile_id: 99 is not"),
        ("wrong-size", lambda d: gi(d, -1).update(size=gi(d, -1)["size"] + 1), "cannot be placed at"),
        ("start-out-of-range", lambda d: gi(d).update(start=40), "cannot be placed at 40:"),
        ("negative-start", lambda d: gi(d).update(start=-1), "gpu_instances[0].start: -1 is negative"),
        ("bool-start", lambda d: gi(d).update(start=True), "start: must be a whole number"),
        ("float-size", lambda d: gi(d).update(size=1.0), "size: must be a whole number"),
        ("overlap", lambda d: gi(d, 1).update(start=gi(d)["start"], size=gi(d)["size"]), "overlaps gpu_instances[0]"),
        (
            "ci-unknown",
            lambda d: gi(d)["compute_instances"][0].update(profile_id=42),
            "compute_instances[0].profile_id: 42",
        ),
        ("ci-out-of-gi", lambda d: gi(d)["compute_instances"][0].update(start=5), "cannot be placed at 5:"),
        ("unknown-key", lambda d: d["gpus"][0].update(mig_mode=1), 'unexpected key "mig_mode"'),
        ("missing-uuid", lambda d: d["gpus"][0].pop("uuid"), "gpus[0]: uuid is missing"),
        ("duplicate-uuid", lambda d: d["gpus"].append(copy.deepcopy(d["gpus"][0])), "is also gpus[0]"),
        (
            "instances-while-disabled",
            lambda d: d["gpus"][0].update(mig_enabled=False),
            "must be empty when mig_enabled is false",
        ),
        ("version", lambda d: d.update(version="v2"), 'version: "v2" is not supported'),
        ("unknown-model", lambda d: d["gpus"][0].update(model="h900"), '"h900" is not a known GPU model'),
        ("not-an-object", lambda d: d["gpus"].__setitem__(0, [1]), "gpus[0]: must be an object, not a list"),
    ]


@pytest.mark.parametrize(("mutate", "says"), [m[1:] for m in _mutations()], ids=[m[0] for m in _mutations()])
def test_a_bad_checkpoint_is_refused_before_any_change(
    node: str, cfg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate: Any, says: str
) -> None:
    """Each kind of bad field exits 2 naming the file and the field, with no NVML mutation."""
    document = saved_document(node, cfg, tmp_path)
    mutate(document)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))
    assert main(["--sim-state", node, "apply", "-f", cfg, "-c", "cleared"]) == 0
    before, capsys_before = mutating_calls(node), capsys.readouterr()
    del capsys_before
    assert main(["--sim-state", node, "restore", "-f", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and says in err, err
    assert mutating_calls(node) == before


def test_checks_against_the_node_need_no_model_field(node: str, cfg: str, tmp_path: Path) -> None:
    """Without "model" the node's own tables catch an unknown profile, still before any change."""
    document = saved_document(node, cfg, tmp_path)
    for gpu in document["gpus"]:
        del gpu["model"]
    document["gpus"][0]["gpu_instances"][0]["profile_id"] = 99
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))
    with open_node(sim_state=node) as handle:
        gpus = handle.snapshot()
    with pytest.raises(ConfigError, match="profile_id: 99 is not a GPU-instance profile"):
        checkpoint.for_node(checkpoint.read(str(bad)), gpus, file=str(bad))
    before = mutating_calls(node)
    assert main(["--sim-state", node, "restore", "-f", str(bad)]) == 2
    assert mutating_calls(node) == before


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, '{"version": "v1", "gpus": [[[[[[[[[[]]]]]]]]]]}', "NaN", '{"version": "v1", "gpus": {}}', ""],
    ids=["deep-nesting", "nested-lists", "nan", "gpus-object", "empty"],
)
def test_malformed_json_is_a_config_error_not_a_traceback(text: str) -> None:
    """Deep nesting, NaN and wrong shapes raise ConfigError."""
    with pytest.raises(ConfigError):
        checkpoint.load(text, file="x.json")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_special_files_are_refused(node: str, tmp_path: Path) -> None:
    """/dev/zero, a FIFO and a directory are not checkpoints: exit 2 at once."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo), str(tmp_path)):
        assert main(["--sim-state", node, "restore", "-f", path]) == 2


def test_checkpoint_is_a_frozen_value_type(node: str, cfg: str, tmp_path: Path) -> None:
    """What restore takes is a frozen attrs value, equal to itself read back."""
    saved_document(node, cfg, tmp_path)
    loaded = checkpoint.read(str(tmp_path / "good.json"))
    assert attrs.has(type(loaded))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        loaded.gpus = ()  # type: ignore[misc]
    assert checkpoint.load(checkpoint.dump(loaded)) == loaded


# ------------------------------------------------------------------------ mig-parted's format


def test_mig_parted_format_round_trips_through_restore(node: str, cfg: str, tmp_path: Path) -> None:
    """checkpoint --format mig-parted, then restore on a cleared node, gives the same layout."""
    assert main(["--sim-state", node, "apply", "-f", cfg, "-c", "mixed"]) == 0
    wanted = layout(node)
    path = tmp_path / "upstream.json"
    assert main(["--sim-state", node, "checkpoint", "--format", "mig-parted", "-f", str(path)]) == 0
    document = json.loads(path.read_text())
    assert set(document) == {"Version", "MigState"}
    first = document["MigState"]["Devices"][0]
    assert first["MigMode"] == 1 and {"ProfileID", "Placement", "ComputeInstances"} == set(first["GpuInstances"][0])
    assert main(["--sim-state", node, "apply", "-f", cfg, "-c", "cleared"]) == 0
    assert main(["--sim-state", node, "restore", "-f", str(path)]) == 0
    assert layout(node) == wanted


def test_mig_parted_profile_index_unknown_to_the_gpu_is_refused(node: str, tmp_path: Path) -> None:
    """A ProfileID that is no profile index of the GPU: exit 2 naming the field, nothing touched."""
    with open_node(sim_state=node) as handle:
        uuid = handle.snapshot()[0].uuid
    document = {
        "Version": "v1",
        "MigState": {
            "Devices": [
                {
                    "UUID": uuid,
                    "MigMode": 1,
                    "GpuInstances": [{"ProfileID": 17, "Placement": {"Start": 0, "Size": 1}, "ComputeInstances": None}],
                }
            ]
        },
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with open_node(sim_state=node) as handle:
        gpus = handle.snapshot()
    with pytest.raises(ConfigError, match=r"MigState.Devices\[0\].GpuInstances\[0\].ProfileID: 17"):
        checkpoint.for_node(checkpoint.read(str(path)), gpus, file=str(path))
    assert main(["--sim-state", node, "restore", "-f", str(path)]) == 2
    assert mutating_calls(node) == 0


def _peer_problem() -> str | None:
    if sys.platform != "linux":
        return "the peer is a Linux binary"
    for name in ("nvidia-mig-parted", "fakehost", "bin/nvidia-smi"):
        if not os.access(PEERS / name, os.X_OK):
            return f"../shared/peers/{name} is missing"
    if os.geteuid() != 0:
        return "fakehost needs root (a private mount namespace)"
    return None


def run_peer(state: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """nvidia-mig-parted ARGS against the simulated node, inside fakehost."""
    nvml = tmp_path / "nvml"
    nvml.mkdir(exist_ok=True)
    link = nvml / "libnvidia-ml.so.1"
    if not link.exists():
        link.symlink_to(simulator.library_path())
    env = {
        **os.environ,
        "MIGKIT_SIM_STATE": state,
        "LD_LIBRARY_PATH": str(nvml),
        "PATH": f"{PEERS / 'bin'}:{os.environ.get('PATH', '')}",
        "MIGKIT_PY": sys.executable,
    }
    return subprocess.run(
        [str(PEERS / "fakehost"), state, str(PEERS / "nvidia-mig-parted"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def peer_ready(node: str, tmp_path: Path) -> None:
    problem = _peer_problem()
    if problem is None:
        probe = run_peer(node, tmp_path, "export")
        if probe.returncode != 0:
            problem = f"the peer cannot run here: {probe.stderr.strip()[-300:]}"
    if problem is not None:
        pytest.skip(problem)


@pytest.mark.usefixtures("peer_ready")
def test_a_checkpoint_written_by_nvidia_mig_parted_restores_its_layout(node: str, cfg: str, tmp_path: Path) -> None:
    """The real peer's checkpoint file, restored by migkit on a cleared node, reproduces the layout."""
    assert main(["--sim-state", node, "apply", "-f", cfg, "-c", "mixed"]) == 0
    wanted = layout(node)
    upstream = tmp_path / "checkpoint.json"
    done = run_peer(node, tmp_path, "checkpoint", "-f", str(upstream))
    assert done.returncode == 0, done.stderr
    assert main(["--sim-state", node, "apply", "-f", cfg, "-c", "cleared"]) == 0
    assert layout(node) != wanted
    assert main(["--sim-state", node, "restore", "-f", str(upstream)]) == 0
    assert layout(node) == wanted
    # And migkit writes the same file the peer wrote, byte for byte.
    mine = tmp_path / "mine.json"
    assert main(["--sim-state", node, "checkpoint", "--format", "mig-parted", "-f", str(mine)]) == 0
    assert mine.read_bytes() == upstream.read_bytes()


@pytest.mark.usefixtures("peer_ready")
def test_nvidia_mig_parted_restores_a_checkpoint_migkit_wrote(node: str, cfg: str, tmp_path: Path) -> None:
    """The other way round: the peer's restore of migkit's mig-parted file gives the layout back."""
    assert main(["--sim-state", node, "apply", "-f", cfg, "-c", "mixed"]) == 0
    wanted = layout(node)
    mine = tmp_path / "mine.json"
    assert main(["--sim-state", node, "checkpoint", "--format", "mig-parted", "-f", str(mine)]) == 0
    assert main(["--sim-state", node, "apply", "-f", cfg, "-c", "cleared"]) == 0
    done = run_peer(node, tmp_path, "restore", "-f", str(mine))
    assert done.returncode == 0, done.stderr
    # The peer creates compute instances without a placement, as NVML chooses; GIs must match.
    got = [(mode, [gi[:3] for gi in gis]) for mode, gis in layout(node)]
    assert got == [(mode, [gi[:3] for gi in gis]) for mode, gis in wanted]


def test_a_stored_nvidia_mig_parted_checkpoint_restores_without_the_peer(tmp_path: Path) -> None:
    """A file nvidia-mig-parted v0.15.0 wrote (kept in tests/cli/data) restores on a fresh node.

    It was written on a simulated 2xh100-80gb node (whose UUIDs are fixed by the spec) with
    GPU 0 at 2g.20gb@0:2, 1g.10gb@2:1, 1g.10gb@3:1, 3g.40gb@4:4 and GPU 1 with MIG disabled.
    """
    node = simulator.write_state(tmp_path / "node.state", "2xh100-80gb")
    stored = Path(__file__).parent / "data" / "mig-parted-checkpoint.json"
    assert main(["--sim-state", node, "restore", "-f", str(stored)]) == 0
    with open_node(sim_state=node) as handle:
        gpus = handle.snapshot()
    got = sorted(
        (gi.profile, gi.start, gi.size, [ci.profile for ci in gi.compute_instances]) for gi in gpus[0].gpu_instances
    )
    assert got == [
        ("1g.10gb", 2, 1, ["1g.10gb"]),
        ("1g.10gb", 3, 1, ["1g.10gb"]),
        ("2g.20gb", 0, 2, ["2g.20gb"]),
        ("3g.40gb", 4, 4, ["3g.40gb"]),
    ]
    assert gpus[0].mig_enabled and not gpus[1].mig_enabled
    # Written back in upstream's format, it is the same file byte for byte.
    again = tmp_path / "again.json"
    assert main(["--sim-state", node, "checkpoint", "--format", "mig-parted", "-f", str(again)]) == 0
    assert again.read_bytes() == stored.read_bytes()
