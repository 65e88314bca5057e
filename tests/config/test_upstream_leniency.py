"""YAML that nvidia-mig-parted reads is read here too, each leniency with a located warning.

Where the peer binary can run, each document is also given to it (``assert --valid-config``)
so that the claim "upstream accepts this" is checked, not assumed.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from migkit.config import ConfigWarning, load_config, parse_config
from migkit.errors import ConfigError

PEER = Path(__file__).resolve().parents[2].parent / "shared" / "peers" / "nvidia-mig-parted"


def doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


DUPLICATE_KEYS = doc(
    """
    version: v1
    mig-configs:
      a:
        - devices: all
          mig-enabled: true
          mig-devices: {"1g.10gb": 1, "1g.10gb": 2}
          mig-enabled: true
      b:
        - devices: all
          mig-enabled: false
      a:
        - devices: all
          mig-enabled: true
          mig-devices:
            "1g.10gb": 3
            "1g.10gb": 4
    """
)

FLOAT_COUNTS = doc(
    """
    version: v1
    mig-configs:
      a:
        - devices: [1.0, 0]
          mig-enabled: true
          mig-devices: {"1g.10gb": 7.0, "2g.20gb": 1e0}
    """
)

NULL_ENABLED = doc(
    """
    version: v1
    mig-configs:
      a:
        - devices: all
          mig-enabled: null
    """
)

HEX_FILTER = doc(
    """
    version: v1
    mig-configs:
      a:
        - devices: all
          device-filter: 0x233010DE
          mig-enabled: false
    """
)


def warnings_of(text: str) -> list[ConfigWarning]:
    return list(parse_config(text, file="up.yaml").warnings)


def peer_accepts(tmp_path: Path, text: str) -> bool | None:
    """The peer's verdict on ``text`` (None where it cannot run here)."""
    if not (PEER.is_file() and os.access(PEER, os.X_OK)):
        return None
    path = tmp_path / "peer.yaml"
    path.write_text(text)
    try:
        done = subprocess.run(
            [str(PEER), "assert", "--valid-config", "-f", str(path), "-c", "a"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return None
    return done.returncode == 0


def test_duplicate_keys_last_wins_with_a_warning_naming_both_lines() -> None:
    """A key written twice: the later value is used and the warning names both lines."""
    config = load_config(DUPLICATE_KEYS)
    assert list(config.configs) == ["a", "b"]
    assert dict(config.configs["a"][0].mig_devices) == {"1g.10gb": 4}
    messages = [str(w) for w in warnings_of(DUPLICATE_KEYS)]
    assert any(m.startswith("up.yaml:11:3:") and 'key "a" appears twice (lines 3 and 11)' in m for m in messages), (
        messages
    )
    assert any('key "1g.10gb" appears twice (lines 15 and 16)' in m for m in messages), messages


def test_duplicate_keys_inside_an_entry_use_the_last_value() -> None:
    """Inside an entry too the last value wins: devices [0] after devices all."""
    text = doc(
        """
        version: v1
        mig-configs:
          c:
            - devices: all
              mig-enabled: false
              devices: [0]
        """
    )
    config = parse_config(text, file="e.yaml")
    assert config.configs["c"][0].devices == (0,)
    assert [w.line for w in config.warnings] == [6]
    assert "lines 4 and 6" in config.warnings[0].message


def test_whole_number_floats_are_counts_and_indices_with_warnings() -> None:
    """7.0, 1e0 and devices: [1.0] are whole numbers, each with a located warning."""
    entry = load_config(FLOAT_COUNTS).configs["a"][0]
    assert entry.devices == (0, 1)
    assert dict(entry.mig_devices) == {"1g.10gb": 7, "2g.20gb": 1}
    found = {(w.line, w.column): w.message for w in warnings_of(FLOAT_COUNTS)}
    assert set(found) == {(4, 17), (6, 32), (6, 48)}
    assert "a GPU index is 1.0, read as the whole number 1" in found[(4, 17)]
    assert "the count of 1g.10gb is 7.0" in found[(6, 32)]


@pytest.mark.parametrize("value", ["7.5", "-0.5", ".inf", ".nan", "1e300"])
def test_fractional_or_unbounded_floats_stay_errors(value: str) -> None:
    """Only whole numbers in range are accepted; 7.5 and infinities are not counts."""
    text = FLOAT_COUNTS.replace("7.0", value)
    with pytest.raises(ConfigError, match="must be a whole number"):
        load_config(text)


def test_null_mig_enabled_reads_as_false_with_a_warning() -> None:
    """mig-enabled: null is Go's zero value, false; a missing key stays an error."""
    config = parse_config(NULL_ENABLED, file="n.yaml")
    assert config.configs["a"][0].mig_enabled is False
    assert [str(w) for w in config.warnings] == [
        'n.yaml:5:20: config "a", entry 0: mig-enabled is null and is read as false'
    ]
    with pytest.raises(ConfigError, match="mig-enabled is required"):
        load_config(NULL_ENABLED.replace("      mig-enabled: null\n", ""))


def test_unquoted_hex_filter_is_accepted_with_a_warning_that_upstream_refuses_it() -> None:
    """An unquoted 0x... filter is a number to YAML; upstream rejects the file, migkit warns."""
    config = parse_config(HEX_FILTER, file="h.yaml")
    assert str(config.configs["a"][0].device_filters[0]) == "0x233010DE"
    (warning,) = config.warnings
    assert warning.line == 5
    assert "nvidia-mig-parted refuses" in warning.message and '"0x233010DE"' in warning.message


@pytest.mark.parametrize(
    ("text", "upstream_accepts"),
    [(DUPLICATE_KEYS, True), (FLOAT_COUNTS, True), (NULL_ENABLED, True), (HEX_FILTER, False)],
    ids=["duplicate-keys", "float-counts", "null-enabled", "unquoted-hex-filter"],
)
def test_the_peer_agrees_about_what_upstream_accepts(tmp_path: Path, text: str, upstream_accepts: bool) -> None:
    """nvidia-mig-parted itself accepts the leniencies and refuses the unquoted hex filter."""
    verdict = peer_accepts(tmp_path, text)
    if verdict is None:
        pytest.skip("the nvidia-mig-parted peer binary cannot run here")
    assert verdict is upstream_accepts
    assert load_config(text).configs  # migkit accepts all four
