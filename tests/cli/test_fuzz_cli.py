"""Fuzzing the ``migkit`` command line: random argument lists, config files, names and env.

``cli.main(argv)`` must return 0, 1 or 2 (or leave through argparse's ``SystemExit`` with 0
or 2 for ``--help``, ``--version`` and usage errors), never raise anything else, and say why
on stderr whenever it exits 2. Commands run offline (``--gpu MODEL``) or on a small simulated
node made for each example; real NVML is never loaded (the simulator library is loaded into
this process first, and ``MIGKIT_NVML_LIBRARY`` points at it).

See ``test_fuzz_config.py`` for how to run the long Hypothesis profile.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from builders import MUTATING, CliRun, run_cli
from migkit import checkpoint, cli, simulator
from migkit.config import load_config, select
from migkit.hardware import gpu_model, gpu_models
from migkit.nvml.node import open_node
from strategies import (
    MIG_MODELS,
    SIM_MODELS,
    ci_requests,
    config_documents,
    gi_requests,
    near_valid_config_texts,
    yamlish_texts,
)

FUZZ = settings(
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    deadline=None,
)

SIM_LIBRARY = simulator.library_path()
MODEL_NAMES = tuple(m.name for m in gpu_models())

# Every variable the CLI reads; each example starts with none of them set.
ENV_VARS = (
    "MIG_PARTED_DEBUG",
    "MIG_PARTED_CONFIG_FILE",
    "MIG_PARTED_SELECTED_CONFIG",
    "MIG_PARTED_HOOKS_FILE",
    "MIG_PARTED_SKIP_RESET",
    "MIG_PARTED_MODE_CHANGE_ONLY",
    "MIG_PARTED_VALID_CONFIG",
    "MIG_PARTED_OUTPUT_FORMAT",
    "MIG_PARTED_CONFIG_LABEL",
    "MIG_PARTED_OUTPUT_FILE",
    "MIG_PARTED_CHECKPOINT_FILE",
    "MIGKIT_STRICT_COVERAGE",
    "MIGKIT_HOOKS_INHERIT_ENV",
    "MIGKIT_SIMULATE",
    "MIGKIT_SIM_STATE",
    "MIGKIT_SIM_FAULTS",
    "MIGKIT_SIM_LATENCY_MS",
    "MIGKIT_READ_ONLY",
)

# Files every example's working directory holds (see `workspace`).
CONFIG = "config.yaml"
STATE = "node.state"
HOOKS = "hooks.yaml"
CHECKPOINT = "ck.json"

# Paths the fuzzer passes: the example's files, missing ones, directories, unwritable places.
CONFIG_PATHS = st.sampled_from([CONFIG, CONFIG, CONFIG, "-", "missing.yaml", ".", "", HOOKS])
HOOKS_PATHS = st.sampled_from([HOOKS, HOOKS, "missing-hooks.yaml", CONFIG, "."])
OUTPUT_FILES = st.sampled_from(["out.yaml", "out.json", "", ".", "no/such/dir.yaml"])
CHECKPOINT_OUT = st.sampled_from(["ck-out.json", CHECKPOINT, "", ".", "no/such/dir.json"])
CHECKPOINT_IN = st.sampled_from([CHECKPOINT, CHECKPOINT, CONFIG, HOOKS, "", ".", "missing.json"])
STATE_PATHS = st.sampled_from([STATE, STATE, STATE, "new.state", CONFIG, "missing.state", ".", "no/such/dir.state"])
SPECS = st.sampled_from(
    [
        "1xh100-80gb",
        "2xa30-24gb",
        "l40s",
        "1xa100-40gb,1xrtx-pro-6000",
        "0xh100-80gb",
        "bogus",
        "",
        "65xl40s",
        "h100-80gb,",
        "1 x a30-24gb",
    ]
)
GPU_NAMES = st.one_of(
    st.sampled_from(MODEL_NAMES),
    st.sampled_from(["H100-80GB", "h100", "", " h100-80gb", "a100-40gb ", "l40"]),
    st.text(max_size=6),
)
REPORT_FORMATS = st.sampled_from(["text", "json", "yaml", "TEXT", ""])
OUTPUT_FORMATS = st.sampled_from(["yaml", "json", "YAML", "Json", "xml", "", "text"])
BOOL_VALUES = st.sampled_from(
    [
        "1",
        "t",
        "T",
        "TRUE",
        "true",
        "True",
        "0",
        "f",
        "F",
        "FALSE",
        "false",
        "False",
        "",
        "yes",
        "no",
        "2",
        " true",
        "on",
    ]
)
ENV_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=8,
)
GARBAGE_TOKENS = st.one_of(
    st.sampled_from(
        [
            "--",
            "-",
            "-x",
            "--nope",
            "-dm",
            "-sm",
            "-ms",
            "-fconfig.yaml",
            "--config-file=config.yaml",
            "-h",
            "--help",
            "--version",
            "--gpu=h100-80gb",
            "-o=json",
            "-cc",
            "--c",
            "--out",
            "-a",
            "--debug=1",
            "apply",
            "assert",
            "plan",
            "--sim",
            "---",
            "-\u00e9",
            "\x00",
        ]
    ),
    st.text(max_size=6),
)

Kind = str  # how a flag's value is drawn; None for flags without a value
GLOBAL_FLAGS: dict[str, Kind | None] = {
    "-d": None,
    "--debug": None,
    "--simulate": "spec",
    "--sim-state": "state",
    "--nvml-library": "library",
}
CONFIG_FLAGS: dict[str, Kind | None] = {
    "-f": "config",
    "--config-file": "config",
    "-c": "name",
    "--selected-config": "name",
}
COMMAND_FLAGS: dict[str, dict[str, Kind | None]] = {
    "apply": {
        **CONFIG_FLAGS,
        "-k": "hooks",
        "--hooks-file": "hooks",
        "-s": None,
        "--skip-reset": None,
        "-m": None,
        "--mode-only": None,
        "--dry-run": None,
        "--strict-coverage": None,
        "--inherit-env": None,
        "-o": "report",
        "--output": "report",
    },
    "assert": {
        **CONFIG_FLAGS,
        "-m": None,
        "--mode-only": None,
        "-a": None,
        "--valid-config": None,
        "--strict-coverage": None,
        "-o": "report",
    },
    "export": {"-o": "format", "--output-format": "format", "-l": "name", "--config-label": "name"},
    "generate-config": {
        "-f": "outfile",
        "--output-file": "outfile",
        "-o": "format",
        "--gpu": "gpu",
    },
    "plan": {**CONFIG_FLAGS, "--gpu": "gpu", "-o": "report", "--strict-coverage": None},
    "profiles": {"--gpu": "gpu", "-o": "report"},
    "labels": {"--strategy": "strategy", "--config-name": "name", "-o": "report"},
    "checkpoint": {"-f": "checkpoint-out", "--checkpoint-file": "checkpoint-out"},
    "restore": {
        "-f": "checkpoint-in",
        "--checkpoint-file": "checkpoint-in",
        "-k": "hooks",
        "-m": None,
        "-s": None,
    },
}
OFFLINE = ("plan", "profiles", "generate-config")


def value_strategy(kind: Kind, names: Sequence[str]) -> st.SearchStrategy[str]:
    """Values for a flag of ``kind``; ``names`` are the config names in the example's file."""
    name_values = st.one_of(
        st.sampled_from(list(names) or ["custom"]),
        st.sampled_from(["", "all-disabled", "Custom", "custom "]),
        st.text(max_size=6),
    )
    pools: dict[str, st.SearchStrategy[str]] = {
        "config": CONFIG_PATHS,
        "name": name_values,
        "hooks": HOOKS_PATHS,
        "report": REPORT_FORMATS,
        "format": OUTPUT_FORMATS,
        "outfile": OUTPUT_FILES,
        "checkpoint-out": CHECKPOINT_OUT,
        "checkpoint-in": CHECKPOINT_IN,
        "gpu": GPU_NAMES,
        "strategy": st.sampled_from(["single", "mixed", "none", ""]),
        "spec": SPECS,
        "state": STATE_PATHS,
        "library": st.just(SIM_LIBRARY),
    }
    return pools[kind]


@st.composite
def flag_tokens(draw: st.DrawFn, flags: dict[str, Kind | None], names: Sequence[str], max_size: int) -> list[str]:
    """Flags drawn from ``flags`` with drawn values, in random order."""
    out: list[str] = []
    for flag in draw(st.lists(st.sampled_from(sorted(flags)), max_size=max_size)):
        out.append(flag)
        kind = flags[flag]
        if kind is not None and draw(st.integers(0, 9)) < 9:  # sometimes the value is missing
            out.append(draw(value_strategy(kind, names)))
    return out


@st.composite
def cli_argvs(draw: st.DrawFn, names: Sequence[str], commands: Sequence[str], models: Sequence[str] = ()) -> list[str]:
    """An argument list: global flags, a command, its flags, and a little garbage.

    Half of them are well-formed invocations (the command's required flags with good values,
    usually on the simulated node) so that commands run to the end, not only into argparse's
    usage errors.
    """
    # the simplest draws (0, False) give the well-formed shapes, which Hypothesis tries first
    if not draw(st.booleans()):
        command = draw(st.sampled_from(list(commands)))
        argv = ["--sim-state", STATE] if draw(st.integers(0, 4)) < 4 else []
        argv.append(command)
        flags = COMMAND_FLAGS[command]
        if flags.get("-f") == "config":
            argv += ["-f", CONFIG]
            if names and draw(st.integers(0, 4)) < 4:
                argv += ["-c", draw(st.sampled_from(list(names)))]
        elif command in ("checkpoint", "restore"):
            argv += ["-f", CHECKPOINT]
        if "--gpu" in flags and models and not draw(st.booleans()):
            for model in models:
                argv += ["--gpu", model]
        argv += draw(flag_tokens(flags, names, 2))
        return argv
    argv = draw(flag_tokens(GLOBAL_FLAGS, names, 2))
    if draw(st.integers(0, 19)) < 19:
        command = draw(st.sampled_from(list(commands)))
        argv.append(command)
        argv.extend(draw(flag_tokens({**COMMAND_FLAGS[command], **GLOBAL_FLAGS}, names, 6)))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        argv.insert(draw(st.integers(0, len(argv))), draw(GARBAGE_TOKENS))
    return argv


@st.composite
def cli_envs(draw: st.DrawFn, names: Sequence[str]) -> dict[str, str]:
    """A few MIG_PARTED_* / MIGKIT_* variables with plausible or random values."""
    kinds: dict[str, st.SearchStrategy[str]] = {
        "MIG_PARTED_DEBUG": BOOL_VALUES,
        "MIG_PARTED_CONFIG_FILE": CONFIG_PATHS,
        "MIG_PARTED_SELECTED_CONFIG": value_strategy("name", names),
        "MIG_PARTED_HOOKS_FILE": HOOKS_PATHS,
        "MIG_PARTED_SKIP_RESET": BOOL_VALUES,
        "MIG_PARTED_MODE_CHANGE_ONLY": BOOL_VALUES,
        "MIG_PARTED_VALID_CONFIG": BOOL_VALUES,
        "MIG_PARTED_OUTPUT_FORMAT": OUTPUT_FORMATS,
        "MIG_PARTED_CONFIG_LABEL": value_strategy("name", names),
        "MIG_PARTED_OUTPUT_FILE": OUTPUT_FILES,
        "MIG_PARTED_CHECKPOINT_FILE": CHECKPOINT_IN,
        "MIGKIT_STRICT_COVERAGE": BOOL_VALUES,
        "MIGKIT_HOOKS_INHERIT_ENV": BOOL_VALUES,
        "MIGKIT_SIMULATE": SPECS,
        "MIGKIT_SIM_STATE": STATE_PATHS,
    }
    chosen = draw(st.lists(st.sampled_from(sorted(kinds)), max_size=3, unique=True))
    env: dict[str, str] = {}
    for name in chosen:
        value = draw(kinds[name] if draw(st.integers(0, 4)) < 4 else ENV_TEXT)
        if "\x00" not in value:
            try:
                value.encode("utf-8")  # config names may hold lone surrogates
            except UnicodeEncodeError:
                continue
            env[name] = value
    return env


CONFIG_TEXTS = st.one_of(
    config_documents().map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    near_valid_config_texts(),
    yamlish_texts(),
)
HOOKS_TEXTS = st.sampled_from(
    [
        "",
        "version: v1\nhooks: {}\n",
        "version: v1\nhooks:\n  not-a-hook: []\n",
        "hooks: [1, 2]\n",
        "{",
        "version: v1\nhooks:\n  apply-start: {}\n",
    ]
)
NODE_MODELS = st.lists(st.sampled_from(SIM_MODELS), min_size=1, max_size=2)


def config_texts_for(models: Sequence[str]) -> st.SearchStrategy[str]:
    """Config text: often one written for ``models`` (so plans can succeed), else anything."""
    fitted = node_configs(models).map(lambda document: yaml.safe_dump(document, sort_keys=False))
    return st.one_of(fitted, fitted, CONFIG_TEXTS)


@st.composite
def node_configs(draw: st.DrawFn, models: Sequence[str]) -> dict[str, object]:
    """A config for a node of ``models``: one entry per GPU, or one for all, often feasible."""
    entries: list[dict[str, object]] = []

    def mig_devices(model_name: str) -> dict[str, int]:
        model = gpu_model(model_name)
        if draw(st.booleans()):
            return draw(gi_requests(model))
        return draw(ci_requests(model, max_total=6))

    if len(set(models)) == 1 and draw(st.booleans()):
        enabled = gpu_model(models[0]).mig_capable and draw(st.booleans())
        entry: dict[str, object] = {"devices": "all", "mig-enabled": enabled}
        if enabled:
            entry["mig-devices"] = mig_devices(models[0])
        entries.append(entry)
    else:
        for index, name in enumerate(models):
            model = gpu_model(name)
            enabled = model.mig_capable and draw(st.integers(0, 4)) > 0
            entry = {"devices": [index], "mig-enabled": enabled}
            if draw(st.booleans()):
                entry["device-filter"] = f"0x{model.pci_device_id:08X}"
            if enabled:
                entry["mig-devices"] = mig_devices(name)
            entries.append(entry)
    return {
        "version": "v1",
        "mig-configs": {"target": entries, "all-disabled": [{"devices": "all", "mig-enabled": False}]},
    }


# ---------------------------------------------------------------------- running the CLI


def check_outcome(argv: list[str], outcome: CliRun) -> None:
    """Exit codes are 0, 1 or 2; exit 2 says why on stderr; exit 1 says something."""
    assert type(outcome.code) is int
    assert outcome.code in (0, 1, 2), (argv, outcome)
    if outcome.code == 2:
        lowered = outcome.stderr.lower()
        assert "error" in lowered or lowered.startswith("usage:"), (argv, outcome)
    if outcome.code == 1:
        assert outcome.stdout or outcome.stderr, (argv, outcome)


@pytest.fixture(scope="module", autouse=True)
def _simulator_loaded() -> Iterator[None]:
    """Load the simulator into this process first, so no command can reach real NVML."""
    with open_node(simulate="1xh100-80gb") as node:
        node.snapshot()
    yield


@contextlib.contextmanager
def workspace(
    tmp_path_factory: pytest.TempPathFactory,
    *,
    config_text: str = "",
    spec: str = "h100-80gb",
    hooks_text: str = "",
    checkpoint_text: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """A fresh working directory with the example's files, environment and node."""
    directory = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp:
        for name in ENV_VARS:
            mp.delenv(name, raising=False)
        mp.setenv("MIGKIT_NVML_LIBRARY", SIM_LIBRARY)
        mp.chdir(directory)
        with open(CONFIG, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(config_text)
        with open(HOOKS, "w", encoding="utf-8") as f:
            f.write(hooks_text)
        simulator.write_state(STATE, spec)
        if checkpoint_text is None:
            with open_node(sim_state=STATE) as node:
                checkpoint_text = checkpoint.dump(checkpoint.capture(node.snapshot()))
        with open(CHECKPOINT, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(checkpoint_text)
        for name, value in (env or {}).items():
            mp.setenv(name, value)
        yield str(directory)


def _names_in(text: str) -> list[str]:
    try:
        document = yaml.safe_load(text)
    except Exception:  # PyYAML itself trips on some inputs (e.g. "!!timestamp all")
        return []
    if isinstance(document, dict) and isinstance(document.get("mig-configs"), dict):
        return [str(k) for k in document["mig-configs"]][:5]
    return []


# ---------------------------------------------------------------------- fuzz tests


@FUZZ
@given(data=st.data(), models=NODE_MODELS, hooks_text=HOOKS_TEXTS)
def test_random_command_lines_exit_0_1_or_2(
    data: st.DataObject,
    models: list[str],
    hooks_text: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Any argument list, config, env and node gives exit 0, 1 or 2, and 2 comes with a reason."""
    config_text = data.draw(config_texts_for(models), label="config")
    names = _names_in(config_text)
    argv = data.draw(cli_argvs(names, sorted(COMMAND_FLAGS), models), label="argv")
    env = data.draw(cli_envs(names), label="env")
    checkpoint_text = data.draw(
        st.one_of(
            st.none(),
            st.sampled_from(["", "{}", "[]", '{"version": "v1"}', '{"gpus": [{}]}']),
            st.just(config_text),
        ),
        label="checkpoint",
    )
    with workspace(
        tmp_path_factory,
        config_text=config_text,
        spec=",".join(models),
        hooks_text=hooks_text,
        checkpoint_text=checkpoint_text,
        env=env,
    ):
        outcome = run_cli(argv, stdin=config_text)
    check_outcome(argv, outcome)
    event(f"exit {outcome.code}{' (SystemExit)' if outcome.system_exit else ''}")


@FUZZ
@given(data=st.data(), models=st.lists(st.sampled_from(MIG_MODELS), min_size=1, max_size=3))
def test_offline_commands_exit_0_1_or_2(
    data: st.DataObject, models: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """plan/profiles/generate-config with --gpu and assert --valid-config never crash."""
    config_text = data.draw(config_texts_for(models), label="config")
    names = _names_in(config_text)
    command = data.draw(st.sampled_from([*OFFLINE, "assert"]), label="command")
    argv = [command]
    if command == "assert":
        argv.append(data.draw(st.sampled_from(["--valid-config", "-a"])))
    if command in ("plan", "assert"):
        argv += ["-f", data.draw(CONFIG_PATHS)]
        if names and data.draw(st.integers(0, 3)) < 3:
            argv += ["-c", data.draw(value_strategy("name", names))]
    if command != "assert":
        garbage = data.draw(st.integers(0, 3)) == 3
        gpus = data.draw(st.lists(GPU_NAMES, max_size=3)) if garbage else models
        for name in gpus:
            argv += ["--gpu", name]
    argv += data.draw(flag_tokens(COMMAND_FLAGS[command], names, 2), label="extra flags")
    env = data.draw(cli_envs(names), label="env")
    env.pop("MIGKIT_SIMULATE", None)
    with workspace(tmp_path_factory, config_text=config_text, env=env):
        outcome = run_cli(argv, stdin=config_text)
    check_outcome(argv, outcome)
    event(f"{command} exit {outcome.code}")
    if command == "assert" and outcome.code == 0:
        # --valid-config succeeded, so the file it read loads and the selection exists
        args = cli.build_parser().parse_args(argv)
        path = args.config_file or env.get("MIG_PARTED_CONFIG_FILE")
        selected = args.selected_config or env.get("MIG_PARTED_SELECTED_CONFIG") or None
        assert path in (CONFIG, "-"), (argv, env)
        select(load_config(config_text), selected)


@FUZZ
@given(data=st.data(), models=st.lists(st.sampled_from(SIM_MODELS), min_size=1, max_size=2))
def test_apply_success_means_assert_holds_and_a_second_apply_changes_nothing(
    data: st.DataObject, models: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """When apply exits 0 on the simulator (nothing left pending), assert exits 0 and applying
    again makes no mutating NVML call."""
    document = data.draw(node_configs(models), label="config")
    mode_only = data.draw(st.booleans(), label="mode-only")
    extra = data.draw(
        st.lists(st.sampled_from(["-d", "--strict-coverage", "-o", "--skip-reset"]), unique=True, max_size=2),
        label="flags",
    )
    flags = [f for f in extra if f != "-o"] + (["-o", "json"] if "-o" in extra else [])
    with workspace(tmp_path_factory, config_text=json.dumps(document), spec=",".join(models)):
        state = os.path.abspath(STATE)
        base = ["--sim-state", state]
        mode = ["--mode-only"] if mode_only else []
        applied = run_cli([*base, "apply", "-f", CONFIG, "-c", "target", *mode, *flags])
        check_outcome(["apply"], applied)
        event(f"apply exit {applied.code}")
        if applied.code != 0:
            return
        strict = ["--strict-coverage"] if "--strict-coverage" in flags else []
        held = run_cli([*base, "assert", "-f", CONFIG, "-c", "target", *mode, *strict])
        with open_node(sim_state=state) as node:
            pending = [g.index for g in node.snapshot() if g.mode_change_pending]
        if pending:
            # only --skip-reset may leave a mode change pending; it is reported, not asserted
            assert "--skip-reset" in flags, (document, flags, applied)
            assert held.code == 1, (document, flags, applied, held)
            return
        assert held.code == 0, (document, flags, applied, held)
        before = simulator.stats(state)
        again = run_cli([*base, "apply", "-f", CONFIG, "-c", "target", *mode, *flags])
        assert again.code == 0, (document, again)
        after = simulator.stats(state)
        changed = {c: after.get(c, 0) - before.get(c, 0) for c in MUTATING}
        assert not any(changed.values()), (document, changed, again)
        # and the node can always be returned to all-disabled
        back = run_cli([*base, "apply", "-f", CONFIG, "-c", "all-disabled"])
        assert back.code == 0, back
        assert run_cli([*base, "assert", "-f", CONFIG, "-c", "all-disabled"]).code == 0


# ---------------------------------------------------------------------- paths and limits


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--sim-state", STATE, "restore", "-f", "missing.json"], id="restore-missing"),
        pytest.param(["--sim-state", STATE, "checkpoint", "-f", "no/such/dir.json"], id="checkpoint-no-dir"),
        pytest.param(["--sim-state", STATE, "checkpoint", "-f", "."], id="checkpoint-directory"),
        pytest.param(["generate-config", "--gpu", "h100-80gb", "-f", "no/such/dir.yaml"], id="generate-no-dir"),
        pytest.param(
            ["--simulate", "1xh100-80gb", "--sim-state", "no/such/dir.state", "export"], id="simulate-state-no-dir"
        ),
    ],
)
def test_bad_paths_exit_2_with_a_message(argv: list[str], tmp_path_factory: pytest.TempPathFactory) -> None:
    """A missing input file or an unwritable output path is a usage error, not a traceback."""
    with workspace(tmp_path_factory):
        outcome = run_cli(argv)
    check_outcome(argv, outcome)
    assert outcome.code == 2


def test_huge_counts_are_infeasible_not_a_crash(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A count far beyond any GPU's capacity plans as infeasible (exit 1)."""
    text = (
        "version: v1\nmig-configs:\n  c:\n    - devices: all\n      mig-enabled: true\n"
        "      mig-devices: {1g.10gb: 1000000000000000000}\n"
    )
    with workspace(tmp_path_factory, config_text=text):
        outcome = run_cli(["plan", "-f", CONFIG, "--gpu", "h100-80gb"])
    assert outcome.code == 1, outcome


def test_a_directory_as_config_file_is_named_in_the_error(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A directory passed as the config file exits 2 with an error naming that path."""
    with workspace(tmp_path_factory):
        outcome = run_cli(["assert", "--valid-config", "-f", "."])
    check_outcome([], outcome)
    assert outcome.code == 2
    assert "<string>" not in outcome.stderr, outcome.stderr
