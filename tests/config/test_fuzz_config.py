"""Fuzzing the v1 config loader: it returns a config or raises a located ConfigError, nothing else.

Three families of input: near-valid documents (valid configs with structural and textual
mutations: wrong types, unknown keys, bad profile names and filters, odd counts, deep nesting,
unicode, anchors and aliases, duplicate keys, tags), random text and bytes, and documents
that load, which must dump (YAML and JSON) and load back equal.

The default Hypothesis profile runs a few dozen examples per test. The long profile runs
10,000 per test, about 9 CPU-minutes for this file and 8 for the CLI fuzzer::

    HYPOTHESIS_PROFILE=long python -m pytest tests/config/test_fuzz_config.py tests/cli/test_fuzz_cli.py
    python -m pytest --hypothesis-profile=long tests/config/test_fuzz_config.py tests/cli/test_fuzz_cli.py

Add ``--hypothesis-show-statistics`` to see example counts and outcome events. The
subprocess simulator fuzzer scales with ``MIGKIT_FUZZ_SEEDS=1,2,...`` and
``MIGKIT_FUZZ_SEQUENCES=N`` (see ``test_fuzz_simulator.py``).
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from migkit.config import MigConfigFile, dump_json, dump_yaml, load_config, parse_config, select
from migkit.errors import ConfigError
from migkit.names import parse_profile_name
from strategies import (
    CONFIG_NAMES,
    TAGS,
    config_entries,
    near_valid_config_texts,
    yaml_line_count,
    yamlish_texts,
)

FUZZ = settings(
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    deadline=None,
)


def check_error(err: ConfigError, text: str, file: str) -> None:
    """A ConfigError names the file and, when it has a position, one inside the text."""
    assert err.file == file
    assert err.reason
    assert (err.line is None) == (err.column is None), err
    if err.line is not None and err.column is not None:
        assert 1 <= err.line <= yaml_line_count(text), (err, yaml_line_count(text))
        assert 1 <= err.column <= len(text) + 1, err
    assert str(err).startswith(file)


def check_config(config: MigConfigFile) -> None:
    """A loaded config is normalised, selectable, and dumps (YAML and JSON) and loads back equal."""
    for name, entries in config.configs.items():
        assert isinstance(name, str)
        assert entries
        assert select(config, name).entries == entries
        for entry in entries:
            assert isinstance(entry.mig_enabled, bool)
            if entry.devices != "all":
                assert list(entry.devices) == sorted(set(entry.devices))
                assert all(type(i) is int and i >= 0 for i in entry.devices)
            for profile, count in entry.mig_devices.items():
                assert parse_profile_name(profile).canonical == profile
                assert type(count) is int and count > 0
            if not entry.mig_enabled:
                assert not entry.mig_devices
    yaml_text = dump_yaml(config)
    assert load_config(yaml_text) == config, yaml_text
    json_text = dump_json(config)
    assert load_config(json_text) == config, json_text
    assert dump_yaml(load_config(yaml_text)) == yaml_text


def load_checked(text: str, file: str = "<string>") -> MigConfigFile | None:
    """Load text: a config that passes :func:`check_config`, or None after a sane ConfigError."""
    try:
        config = parse_config(text, file=file)
    except ConfigError as err:
        check_error(err, text, file)
        return None
    check_config(config)
    return config


# ---------------------------------------------------------------------- near-valid documents

ALIASED_CONFIG = """\
version: v1
mig-configs:
  a: &x
    - devices: all
      mig-enabled: false
  b: *x
"""
MERGED_ENTRY = """\
version: v1
mig-configs:
  a:
    - &e {devices: all, mig-enabled: false}
    - <<: *e
      devices: [1]
"""
FLOAT_COUNT = """\
version: v1
mig-configs:
  a:
  - devices: all
    mig-enabled: true
    mig-devices: {1g.5gb: 1e3}
"""


@FUZZ
@given(text=near_valid_config_texts())
@example(text=ALIASED_CONFIG)
@example(text=MERGED_ENTRY)
@example(text="version: v1\nmig-configs: {a: [{devices: all, mig-enabled: false}], a: []}\n")
@example(text=FLOAT_COUNT)
def test_near_valid_documents_load_or_raise_a_located_config_error(text: str) -> None:
    """Mutated valid documents either load (and round-trip) or raise a located ConfigError."""
    load_checked(text)


@FUZZ
@given(text=near_valid_config_texts(max_structural=0, max_textual=1))
def test_lightly_mutated_text_loads_or_raises_a_located_config_error(text: str) -> None:
    """Valid documents with one textual mutation (tags, aliases, merges, breaks) load or fail cleanly."""
    load_checked(text)


@FUZZ
@given(
    names=st.lists(
        st.one_of(
            CONFIG_NAMES,
            st.text(max_size=6),
            st.sampled_from(
                [
                    "~",
                    "null",
                    "<<",
                    "yes",
                    "Off",
                    "1:20",
                    "0x10",
                    "1e3",
                    ".nan",
                    "2001-12-14",
                    "- a",
                    "? b",
                    "#c",
                    "&d",
                    "*e",
                    "!f",
                    "%g",
                    "@h",
                    "`i",
                    "|",
                    ">",
                    "a: b",
                    "a #b",
                    " lead",
                    "trail ",
                    "\u2028",
                    "\x85",
                    "\ufeff",
                    "\t",
                    "'",
                    '"',
                    "\\",
                ]
            ),
        ),
        min_size=1,
        max_size=4,
        unique=True,
    ),
    entries=st.lists(config_entries(), min_size=1, max_size=2),
    style=st.sampled_from(["block", "json"]),
)
def test_documents_with_odd_config_names_round_trip(
    names: list[str], entries: list[dict[str, object]], style: str
) -> None:
    """Config names of any text load as strings and survive dumping and loading again."""
    document = {"version": "v1", "mig-configs": {name: entries for name in names}}
    try:
        text = (
            json.dumps(document) if style == "json" else yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
        )
    except yaml.YAMLError:
        return
    config = load_checked(text)
    if config is not None:
        assert len(config.configs) <= len(names)


# ---------------------------------------------------------------------- random text and bytes


@FUZZ
@given(text=st.one_of(st.text(), yamlish_texts()))
@example(text="[" * 5_000)
@example(text="{a: " * 5_000)
@example(text="- " * 5_000)
@example(text="\ud800")
@example(text="version: v1\x00")
@example(text="version: !!float\n")
@example(text="version: v1\nmig-configs:\n  c:\n  - {devices: [!!float ], mig-enabled: false}\n")
@example(text="version: v1\nmig-configs: &a [*a]\n")
@example(text="a: &a\n  <<: *a\n")
def test_random_text_loads_or_raises_a_located_config_error(text: str) -> None:
    """Any text either loads or raises ConfigError with a position inside the text."""
    try:
        config = load_config(text)
    except ConfigError as err:
        assert err.file is not None
        if err.file == "<string>":
            check_error(err, text, "<string>")
        return
    check_config(config)


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=300),
        yamlish_texts().map(lambda t: t.encode("utf-8", "surrogatepass")),
        near_valid_config_texts().map(lambda t: t.encode("utf-8", "surrogatepass")),
    )
)
@example(data=b"\xff\xfe" + "version: v1".encode("utf-16-le"))
@example(data=b"version: v1\nmig-configs:\n  \xc3\x28: []\n")
def test_random_bytes_in_a_file_load_or_raise_a_config_error(
    data: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Any file content either loads or raises a ConfigError naming the file."""
    path = tmp_path_factory.mktemp("bytes") / "config.yaml"
    path.write_bytes(data)
    try:
        config = load_config(path)
    except ConfigError as err:
        text = data.decode("utf-8", "replace")
        check_error(err, text, str(path))
        return
    finally:
        path.unlink()
    check_config(config)


# ---------------------------------------------------------------------- tags


_SENTINEL_TAGS = (
    "!!python/object/apply:os.system ['touch {s}']",
    "!!python/object/apply:builtins.open ['{s}', 'w']",
    "!!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ['{s}']]",
    "!!python/object/new:builtins.open ['{s}', 'w']",
)


@FUZZ
@given(
    text=near_valid_config_texts(max_structural=0, max_textual=0),
    tag=st.sampled_from(_SENTINEL_TAGS),
    data=st.data(),
)
def test_python_tags_never_run_code(
    text: str, tag: str, data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A !!python tag anywhere in a document never constructs objects or runs code."""
    sentinel = tmp_path_factory.mktemp("tags") / "ran"
    lines = text.split("\n")
    at = data.draw(st.integers(0, max(0, len(lines) - 1)))
    line = lines[at]
    cut = max(line.find(": "), line.find("- "))
    tagged = tag.format(s=sentinel)
    lines[at] = f"{line[: cut + 2]}{tagged}" if cut >= 0 else f"{line} {tagged}"
    mutated = "\n".join(lines)
    load_checked(mutated)
    assert not os.path.exists(sentinel)


def _tagged(where: str, tag: str) -> str:
    """A valid one-config document with ``tag`` on the node named by ``where``."""
    nodes = {
        "root": "",
        "version": "",
        "mig-configs": "",
        "config": "",
        "entry": "",
        "devices": "",
        "count": "",
    }
    nodes[where] = tag + " "
    return (
        f"{nodes['root']}\n"
        f"version: {nodes['version']}v1\n"
        f"mig-configs: {nodes['mig-configs']}\n"
        f"  c: {nodes['config']}\n"
        f"    - {nodes['entry']}\n"
        f"      devices: {nodes['devices']}[0]\n"
        f"      mig-enabled: true\n"
        f"      mig-devices: {{1g.10gb: {nodes['count']}1}}\n"
    )


_PYTHON_TAGS = [t for t in TAGS if t.startswith("!!python")]


@pytest.mark.parametrize("tag", _PYTHON_TAGS)
@pytest.mark.parametrize("where", ["root", "version", "mig-configs", "config", "entry", "devices", "count"])
def test_python_tags_are_rejected_wherever_they_appear(where: str, tag: str) -> None:
    """A !!python tag on any node is refused with a ConfigError at that node, as safe_load does."""
    text = _tagged(where, tag)
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(text)
    with pytest.raises(ConfigError) as err:
        load_config(text)
    check_error(err.value, text, "<string>")


# ---------------------------------------------------------------------- bombs and depth


@pytest.mark.parametrize("depth", [100, 2_000, 50_000])
@pytest.mark.parametrize("shape", ["[{0}]", "{{a: {0}}}", "- {0}"])
def test_deep_nesting_is_a_config_error_not_a_crash(depth: int, shape: str) -> None:
    """Deeply nested documents raise ConfigError (never RecursionError or a crash)."""
    if shape == "- {0}":
        text = "version: v1\nmig-configs:\n  c:\n    - devices: " + "- " * depth + "0\n"
    else:
        inner = "0"
        head, _, tail = shape.partition("{0}")
        text = "version: v1\nmig-configs: " + head * depth + inner + tail * depth + "\n"
    with pytest.raises(ConfigError) as err:
        load_config(text)
    check_error(err.value, text, "<string>")


def test_merge_key_bombs_are_refused() -> None:
    """Merge keys that would expand exponentially are refused with a ConfigError."""
    entries = ["    - &l0 {devices: all, mig-enabled: false}"]
    for level in range(1, 12):
        refs = ", ".join([f"*l{level - 1}"] * 10)
        entries.append(f"    - &l{level} {{<<: [{refs}]}}")
    text = "version: v1\nmig-configs:\n  c:\n" + "\n".join(entries) + "\n"
    with pytest.raises(ConfigError, match="too many keys") as err:
        load_config(text)
    check_error(err.value, text, "<string>")


def test_alias_bombs_in_lists_fail_without_expanding() -> None:
    """Billion-laughs aliases inside devices fail at the first wrong item, without expansion."""
    levels = ['&a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 30):
        levels.append(f"&a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    text = "version: v1\nmig-configs:\n  c:\n    - mig-enabled: false\n      devices: [" + ", ".join(levels) + "]\n"
    with pytest.raises(ConfigError, match="GPU index must be an integer") as err:
        load_config(text)
    check_error(err.value, text, "<string>")
    many = "version: v1\nmig-configs:\n  c: [&e {devices: all, mig-enabled: false}" + ", *e" * 20_000 + "]\n"
    config = load_config(many)
    assert len(config.configs["c"]) == 20_001


def test_config_errors_from_files_name_the_file(tmp_path: pathlib.Path) -> None:
    """A syntax error read from a file carries that file's path and a position."""
    path = tmp_path / "bad.yaml"
    text = "version: v1\nmig-configs:\n  c: [\n"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    check_error(err.value, text, str(path))
    assert err.value.line is not None
