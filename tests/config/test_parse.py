"""The v1 config loader: mig-parted's language exactly, clear located errors, round trips."""

from __future__ import annotations

import contextlib
import json
import pathlib
import textwrap

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migkit.config import (
    ConfigEntry,
    MigConfigFile,
    dump_json,
    dump_yaml,
    load_config,
    select,
)
from migkit.config.filters import DeviceFilter
from migkit.errors import ConfigError
from strategies import GARBAGE, config_documents


def doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def entry_doc(body: str) -> str:
    """A one-entry config ``c`` whose entry body is ``body`` (YAML, indented by the caller)."""
    lines = textwrap.dedent(body).strip("\n").splitlines()
    entry = "\n".join(("    - " if i == 0 else "      ") + line for i, line in enumerate(lines))
    return f"version: v1\nmig-configs:\n  c:\n{entry}\n"


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load_config(text)
    return err.value


def only_entry(text: str) -> ConfigEntry:
    return load_config(text).configs["c"][0]


EXAMPLE = doc(
    """
    version: v1
    mig-configs:
      mixed-node:
        - device-filter: ["0x233010DE"]          # H100 80GB, any board variant
          devices: all
          mig-enabled: true
          mig-devices: {"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2}
        - device-filter: "0x20B710DE"            # A30
          devices: [2, 3]
          mig-enabled: false
    """
)


def test_the_fact_sheet_example_loads() -> None:
    """An illustrative mixed-node file loads into the expected entries."""
    config = load_config(EXAMPLE)
    first, second = config.configs["mixed-node"]
    assert first.devices == "all" and first.mig_enabled
    assert dict(first.mig_devices) == {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
    assert first.device_filters == (DeviceFilter(0x233010DE),)
    assert second.devices == (2, 3) and not second.mig_enabled
    assert (first.line, first.column) == (4, 7)
    assert config.warnings == ()


def test_bogus_profile_error_is_located_and_one_sentence() -> None:
    """A bad profile key names file, line, column, config, entry and the expected form."""
    text = entry_doc(
        """
        devices: all
        mig-enabled: true
        mig-devices:
          bogus: 1
        """
    )
    err = error_of(text)
    assert (err.line, err.column) == (7, 9)
    assert err.reason == (
        'config "c", entry 0: "bogus" is not a MIG profile name '
        '(expected like "1g.10gb" or "1c.3g.20gb")'
    )


def test_file_path_appears_in_errors(tmp_path: pathlib.Path) -> None:
    """Loading from a path puts the path in the message: ``config.yaml:7:9: ...``."""
    path = tmp_path / "config.yaml"
    path.write_text(entry_doc("devices: all\nmig-enabled: true\nmig-devices:\n  bogus: 1"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}:7:9: ")
    with pytest.raises(ConfigError) as again:
        load_config(str(path))
    assert again.value.file == str(path)


def test_path_and_text_inputs(tmp_path: pathlib.Path) -> None:
    """A path (str or PathLike) is read; other text is the document; a missing .yaml is named."""
    path = tmp_path / "ok.yaml"
    path.write_text(EXAMPLE)
    assert load_config(path).file == str(path)
    assert load_config(str(path)) == load_config(EXAMPLE)
    assert load_config(EXAMPLE, name="<stdin>").file == "<stdin>"
    with pytest.raises(ConfigError, match="no such file"):
        load_config(str(tmp_path / "missing.yaml"))


# ---------------------------------------------------------------------- V01-V24 one by one


def test_v01_unknown_top_level_key() -> None:
    """V01: an unexpected top-level key is an error (with a suggestion)."""
    err = error_of("version: v1\nmig-config: {}\n")
    assert (
        'unexpected key "mig-config"' in err.reason and 'did you mean "mig-configs"' in err.reason
    )
    assert (err.line, err.column) == (2, 1)


def test_v02_missing_version() -> None:
    """V02: a non-empty document needs a version."""
    assert (
        "no version" in error_of("mig-configs: {c: [{devices: all, mig-enabled: false}]}\n").reason
    )


def test_v03_version_checked_first() -> None:
    """V03: version must be the string v1, and is checked before anything else."""
    assert 'version must be "v1"' in error_of("version: v2\n").reason
    assert "the number 1" in error_of("version: 1\n").reason
    assert 'version must be "v1"' in error_of("version: v2\nbogus: 1\n").reason


def test_empty_documents_are_valid_with_no_configs() -> None:
    """An empty document, {} or {version: v1} loads with no configs; selecting then fails."""
    for text in ("", "{}", "version: v1\n", "# only a comment\n", "~"):
        config = load_config(text)
        assert dict(config.configs) == {}
        with pytest.raises(ConfigError, match="no MIG configs"):
            select(config, None)


def test_v04_empty_mig_configs() -> None:
    """V04: mig-configs present but empty or null."""
    assert "must hold at least one config" in error_of("version: v1\nmig-configs: {}\n").reason
    assert "must hold at least one config" in error_of("version: v1\nmig-configs:\n").reason
    assert "lists of entries" in error_of("version: v1\nmig-configs: [1]\n").reason


def test_v05_empty_named_config() -> None:
    """V05: a named config must be a non-empty list."""
    assert "is empty" in error_of("version: v1\nmig-configs:\n  c: []\n").reason
    assert "is empty" in error_of("version: v1\nmig-configs:\n  c:\n").reason
    assert "must be a list" in error_of("version: v1\nmig-configs:\n  c: {}\n").reason


def test_v06_unknown_entry_key() -> None:
    """V06: an unexpected key in an entry, with a did-you-mean."""
    err = error_of(entry_doc("devices: all\nmig-enabled: false\nmig-device: {}"))
    assert 'unexpected key "mig-device"' in err.reason and "mig-devices" in err.reason
    assert (err.line, err.column) == (6, 7)


def test_v07_devices_required() -> None:
    """V07: devices is required."""
    assert "devices is required" in error_of(entry_doc("mig-enabled: false")).reason
    assert "devices is required" in error_of(entry_doc("devices:\nmig-enabled: false")).reason


@pytest.mark.parametrize("value", ["All", "bogus", '"all "', "ALL"])
def test_v08_devices_string_must_be_all(value: str) -> None:
    """V08: any string other than exactly ``all`` is an error."""
    err = error_of(entry_doc(f"devices: {value}\nmig-enabled: false"))
    assert 'devices must be "all" or a list of GPU indices' in err.reason


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("7", "the number 7 (write [7])"),
        ("{a: 1}", "a mapping"),
        ("[0, x]", 'the string "x"'),
        ("[true]", "the boolean true"),
        ("[1.5]", "the number 1.5"),
        ('["1"]', 'the string "1"'),
        ("[[1]]", "a list"),
    ],
)
def test_v09_devices_other_types(value: str, says: str) -> None:
    """V09: devices of another type gets one clear sentence."""
    err = error_of(entry_doc(f"devices: {value}\nmig-enabled: false"))
    assert says in err.reason


def test_v10_empty_devices_warns() -> None:
    """V10: devices: [] is accepted (covers nothing) with a warning."""
    config = load_config(entry_doc("devices: []\nmig-enabled: false"))
    assert config.configs["c"][0].devices == ()
    assert len(config.warnings) == 1 and "covers no GPU" in str(config.warnings[0])
    assert str(config.warnings[0]).startswith("<string>:4:16: ")


def test_v11_negative_index_is_an_error() -> None:
    """V11 (deliberate deviation): a negative index is an error, not a silent no-match."""
    err = error_of(entry_doc("devices: [0, -1]\nmig-enabled: false"))
    assert "GPU index -1 is negative" in err.reason and (err.line, err.column) == (4, 20)


def test_v13_duplicate_indices_are_merged() -> None:
    """V13: duplicates are accepted and de-duplicated (sorted)."""
    assert only_entry(entry_doc("devices: [3, 1, 3]\nmig-enabled: false")).devices == (1, 3)


def test_v14_v15_mig_enabled_required_and_boolean() -> None:
    """V14/V15: mig-enabled is required and must be a boolean (YAML 1.1 booleans count)."""
    assert "mig-enabled is required" in error_of(entry_doc("devices: all")).reason
    for bad, says in (('"true"', 'the string "true"'), ("1", "the number 1"), ("maybe", "maybe")):
        err = error_of(entry_doc(f"devices: all\nmig-enabled: {bad}"))
        assert "mig-enabled must be true or false" in err.reason and says in err.reason
    for word, value in (
        ("yes", True),
        ("No", False),
        ("on", True),
        ("OFF", False),
        ("y", True),
        ("n", False),
        ("True", True),
    ):
        body = (
            f"devices: all\nmig-enabled: {word}\nmig-devices: {{1g.5gb: 1}}"
            if value
            else (f"devices: all\nmig-enabled: {word}")
        )
        assert only_entry(entry_doc(body)).mig_enabled is value


def test_v16_enabled_needs_mig_devices() -> None:
    """V16: mig-enabled: true without mig-devices (or null) is an error."""
    assert (
        "mig-devices is required" in error_of(entry_doc("devices: all\nmig-enabled: true")).reason
    )
    assert (
        "mig-devices is required"
        in error_of(entry_doc("devices: all\nmig-enabled: true\nmig-devices:")).reason
    )
    assert (
        dict(only_entry(entry_doc("devices: all\nmig-enabled: true\nmig-devices: {}")).mig_devices)
        == {}
    )


def test_v17_disabled_with_instances() -> None:
    """V17: mig-enabled: false with non-empty mig-devices is an error; {} and null are fine."""
    err = error_of(entry_doc("devices: all\nmig-enabled: false\nmig-devices: {1g.5gb: 1}"))
    assert "must be empty when mig-enabled is false" in err.reason
    only_entry(entry_doc("devices: all\nmig-enabled: false\nmig-devices: {}"))
    only_entry(entry_doc("devices: all\nmig-enabled: false\nmig-devices:"))


@pytest.mark.parametrize("key", ["1G.5GB", "1g", "1g.5gb+me,me", "7", "yes", "' 1g.5gb'"])
def test_v18_profile_grammar(key: str) -> None:
    """V18: a key outside the profile grammar is an error."""
    err = error_of(entry_doc(f"devices: all\nmig-enabled: true\nmig-devices:\n  {key}: 1"))
    assert "is not a MIG profile name" in err.reason and (err.line, err.column) == (7, 9)


def test_v19_negative_count() -> None:
    """V19: a negative count says so (upstream prints a nil reason)."""
    err = error_of(entry_doc("devices: all\nmig-enabled: true\nmig-devices: {1g.5gb: -1}"))
    assert err.reason == 'config "c", entry 0: the count of 1g.5gb must not be negative (-1)'


def test_v20_all_zero_counts() -> None:
    """V20: non-empty mig-devices whose counts are all 0 is an error; mixed zeros are dropped."""
    err = error_of(
        entry_doc("devices: all\nmig-enabled: true\nmig-devices: {1g.5gb: 0, 2g.10gb: 0}")
    )
    assert "every count in mig-devices is 0" in err.reason
    entry = only_entry(
        entry_doc("devices: all\nmig-enabled: true\nmig-devices: {1g.5gb: 0, 2g.10gb: 1}")
    )
    assert dict(entry.mig_devices) == {"2g.10gb": 1}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ('"7"', 'the string "7"'),
        ("1.5", "the number 1.5"),
        ("true", "the boolean true"),
        ("[1]", "a list"),
        ("~", "null"),
    ],
)
def test_v21_counts_must_be_integers(value: str, says: str) -> None:
    """V21: strings, floats, booleans and others are not counts."""
    err = error_of(entry_doc(f"devices: all\nmig-enabled: true\nmig-devices: {{1g.5gb: {value}}}"))
    assert "must be a whole number" in err.reason and says in err.reason


def test_counts_canonicalise_and_sum() -> None:
    """Keys are canonicalised and duplicates that canonicalise alike are summed,
    so 1c.1g.5gb and 1g.5gb are one profile, not a perpetual difference."""
    entry = only_entry(
        entry_doc(
            "devices: all\nmig-enabled: true\nmig-devices: {1c.1g.5gb: 2, 1g.5gb: 3, 01g.05gb: 1}"
        )
    )
    assert dict(entry.mig_devices) == {"1g.5gb": 6}


@pytest.mark.parametrize("value", ["{a: 1}", "[{a: 1}]", "[[1]]", "true", "[1.5]"])
def test_v22_device_filter_types(value: str) -> None:
    """V22: device-filter is a string or a list of strings."""
    err = error_of(entry_doc(f"device-filter: {value}\ndevices: all\nmig-enabled: false"))
    assert "device-filter" in err.reason


@pytest.mark.parametrize(
    "value",
    [
        '"A100-SXM4-40GB"',
        '"20B010DE"',
        '"0x20B010DE:"',
        '" 0x20B010DE"',
        '"0x1:0x2:0x3"',
        '"0x120B010DE"',
        '["0x20B010DE", "bogus"]',
    ],
)
def test_v23_malformed_filters_are_errors(value: str) -> None:
    """V23 (deliberate deviation): a filter that is not a device ID is a load error."""
    err = error_of(entry_doc(f"device-filter: {value}\ndevices: all\nmig-enabled: false"))
    assert "0xDDDDVVVV" in err.reason and err.line == 4


def test_unquoted_hex_filter_is_accepted_with_a_warning() -> None:
    """YAML reads unquoted 0x20B010DE as an int; migkit accepts it and asks for quotes."""
    config = load_config(entry_doc("device-filter: 0x20B010DE\ndevices: all\nmig-enabled: false"))
    assert config.configs["c"][0].device_filters == (DeviceFilter(0x20B010DE),)
    assert "quote device IDs" in str(config.warnings[0])
    config = load_config(
        entry_doc("device-filter: [0x20B010DE, 548540638]\ndevices: all\nmig-enabled: false")
    )
    assert [str(f) for f in config.configs["c"][0].device_filters] == ["0x20B010DE", "0x20B210DE"]


def test_decimal_and_empty_filters_warn() -> None:
    """A decimal filter string and the empty filter are accepted with warnings."""
    config = load_config(
        entry_doc('device-filter: ["548540638", ""]\ndevices: all\nmig-enabled: false')
    )
    messages = [w.message for w in config.warnings]
    assert any("not hexadecimal" in m for m in messages)
    assert any("matches every GPU" in m for m in messages)


def test_yaml_syntax_errors_are_config_errors_with_positions() -> None:
    """Broken YAML is a ConfigError at the problem position."""
    err = error_of("version: v1\nmig-configs:\n  c: [\n")
    assert err.reason.startswith("not valid YAML") and err.line is not None
    assert "not valid YAML" in error_of("a: b\n---\nc: d\n").reason


def test_duplicate_keys_warn_and_the_last_one_wins() -> None:
    """A key written twice in one mapping warns, naming both lines; the later value is used."""
    config = load_config(entry_doc("devices: all\nmig-enabled: false\ndevices: [0]"))
    assert config.configs["c"][0].devices == (0,)
    assert any('key "devices" appears twice (lines 4 and 6)' in w.message for w in config.warnings)


def test_anchors_aliases_and_merge_keys() -> None:
    """YAML anchors, aliases and << merges work as go-yaml reads them."""
    text = doc(
        """
        version: v1
        mig-configs:
          a:
            - &base
              devices: all
              mig-enabled: true
              mig-devices: &counts {1g.5gb: 7}
          b:
            - <<: *base
              devices: [0]
            - devices: [1]
              mig-enabled: true
              mig-devices: *counts
        """
    )
    config = load_config(text)
    b0, b1 = config.configs["b"]
    assert b0.devices == (0,) and dict(b0.mig_devices) == {"1g.5gb": 7}
    assert dict(b1.mig_devices) == {"1g.5gb": 7}


def test_unsafe_tags_are_refused() -> None:
    """Python-specific tags never construct anything."""
    err = error_of("version: !!python/object:os.system ls\n")
    assert "unsupported YAML tag" in err.reason


def test_json_documents_load() -> None:
    """JSON is YAML too."""
    text = json.dumps(
        {"version": "v1", "mig-configs": {"c": [{"devices": "all", "mig-enabled": False}]}}
    )
    assert load_config(text).configs["c"][0].mig_enabled is False


def test_non_string_config_names_become_strings() -> None:
    """Config names are free-form keys; ints and booleans read as their JSON spelling."""
    config = load_config(
        "version: v1\nmig-configs:\n  7: [{devices: all, mig-enabled: false}]\n"
        "  yes: [{devices: all, mig-enabled: false}]\n"
    )
    assert list(config.configs) == ["7", "true"]


# ---------------------------------------------------------------------- selection


def test_select_rules() -> None:
    """One config is picked automatically; several need a name; unknown names fail."""
    one = load_config(entry_doc("devices: all\nmig-enabled: false"))
    assert select(one, None).name == "c"
    two = load_config(
        EXAMPLE.replace("mixed-node", "a") + "  b:\n    - {devices: all, mig-enabled: false}\n"
    )
    with pytest.raises(ConfigError, match="has 2 configs"):
        select(two, None)
    with pytest.raises(ConfigError, match='config "x" is not in the file'):
        select(two, "x")
    assert select(two, "b").entries[0].devices == "all"


# ---------------------------------------------------------------------- round trips


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=config_documents())
def test_dump_and_load_round_trip(document: dict[str, object]) -> None:
    """Any valid document loads; dumping (YAML or JSON) and loading again gives equal configs."""
    # JSON text quotes every string; PyYAML's own dumper would leave keys such as N or y
    # unquoted, which YAML 1.1 (and so mig-parted and migkit) reads as booleans.
    config = load_config(json.dumps(document))
    assert load_config(dump_yaml(config)) == config
    assert load_config(dump_json(config)) == config


def test_dump_yaml_uses_flow_style_for_devices_and_filters() -> None:
    """devices and device-filter lists are written in flow style."""
    config = load_config(EXAMPLE.replace('"0x20B710DE"', '["0x20B710DE", "0x233010DE"]'))
    text = dump_yaml(config)
    assert "devices: [2, 3]" in text
    assert "device-filter: ['0x20B710DE', '0x233010DE']" in text


def test_equality_ignores_positions() -> None:
    """Two files with the same meaning are equal whatever their layout."""
    a = load_config(EXAMPLE)
    b = load_config("\n\n" + EXAMPLE)
    assert a == b
    assert a.configs["mixed-node"][0].line != b.configs["mixed-node"][0].line
    assert (
        MigConfigFile({"x": [a.configs["mixed-node"][0]]}).configs["x"][0]
        == a.configs["mixed-node"][0]
    )


# ---------------------------------------------------------------------- garbage


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=GARBAGE, version=st.booleans())
def test_garbage_structures_only_raise_config_error(value: object, version: bool) -> None:
    """Random nested data (as YAML) either loads or raises ConfigError, never anything else."""
    document: object = value
    if version and isinstance(value, dict):
        document = {"version": "v1", "mig-configs": value}
    try:
        text = yaml.safe_dump(document)
    except yaml.YAMLError:
        return
    with contextlib.suppress(ConfigError):
        load_config(text)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_garbage_text_only_raises_config_error(text: str) -> None:
    """Random text either loads or raises ConfigError."""
    with contextlib.suppress(ConfigError):
        load_config(text)


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    document=config_documents(),
)
def test_mutated_documents_only_raise_config_error(
    data: st.DataObject, document: dict[str, object]
) -> None:
    """Valid documents with one value replaced by garbage load or raise ConfigError."""
    configs = document["mig-configs"]
    assert isinstance(configs, dict)
    name = data.draw(st.sampled_from(sorted(configs)))
    entry = data.draw(st.sampled_from(configs[name]))
    key = data.draw(
        st.sampled_from(["devices", "mig-enabled", "mig-devices", "device-filter", "extra"])
    )
    entry[key] = data.draw(GARBAGE)
    with contextlib.suppress(ConfigError):
        load_config(yaml.safe_dump(document))


def test_base_60_numbers_are_strings_as_in_go_yaml() -> None:
    """YAML 1.1 sexagesimal (1:20) is not a number to mig-parted, so it is refused where one is due."""
    with pytest.raises(ConfigError, match="1:20"):
        load_config("version: v1\nmig-configs:\n  a:\n    - devices: [1:20]\n      mig-enabled: false\n")
    with pytest.raises(ConfigError, match="1:00"):
        load_config(
            "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n"
            "      mig-devices: {1g.10gb: 1:00}\n"
        )


@pytest.mark.parametrize("name", ["\x85", "a\u2028b", "\ufeffx", "y", "N", "1e3", "caf\u00e9", "tab\there"])
def test_config_names_that_a_yaml_reader_could_misread_survive_the_writer(name: str) -> None:
    """Names a reader would take for a line break, a boolean or a number are written quoted."""
    entry = {"devices": "all", "mig-enabled": False}
    config = load_config(json.dumps({"version": "v1", "mig-configs": {name: [entry]}}))
    assert list(load_config(dump_yaml(config)).configs) == [name]
    assert list(load_config(dump_json(config)).configs) == [name]
