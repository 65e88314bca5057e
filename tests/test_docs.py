"""The examples in README.md and docs/*.md run on a simulated node and show what they print.

The convention (also in docs/design.md, "Documentation examples"):

- A ```console block is a session: each ``$ `` line is a command, the lines after it up to the
  next ``$ `` line are its output (stdout and stderr together). The test runs the commands in
  order and compares the output exactly, except that runs of per-GPU lines (``GPU 3: ...``),
  which appear as GPUs finish, are compared in sorted order.
- ``<!-- setup: COMMAND -->`` runs COMMAND (through ``sh``) before the next block; its output
  is not shown.
- ``<!-- run -->`` just before a ```sh block: every ``migkit ...`` command in it (commands are
  split at ``&&``; install steps such as ``pip install`` are skipped) must exit 0. Before a
  ```python block: the script runs and must exit 0; a ```text block right after it is its
  output.

Each Markdown file runs in its own empty directory, its blocks in order, so a later block sees
the files and simulated node an earlier one made. Other blocks are prose.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
SETUP = re.compile(r"^<!-- setup: (.*) -->\s*$")
RUN = re.compile(r"^<!-- run -->\s*$")
PER_GPU = re.compile(r"^GPU \d+: ")
MARK = "@@migkit-docs-end@@"


@attrs.frozen
class Command:
    line: int
    text: str
    expected: tuple[str, ...] = ()


@attrs.frozen
class Block:
    """A runnable piece of a document: setup commands, a console session or a run-only block."""

    file: str
    line: int
    kind: str  # "console" | "run" | "setup"
    commands: tuple[Command, ...]


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    run_next = False
    k = 0
    while k < len(lines):
        line = lines[k]
        setup = SETUP.match(line)
        if setup:
            found.append(Block(path.name, k + 1, "setup", (Command(k + 1, setup.group(1)),)))
            k += 1
            continue
        if RUN.match(line):
            run_next = True
            k += 1
            continue
        fence = FENCE.match(line)
        if not fence:
            k += 1
            continue
        language, start = fence.group(1), k + 1
        k += 1
        body: list[tuple[int, str]] = []
        while k < len(lines) and not lines[k].startswith("```"):
            body.append((k + 1, lines[k]))
            k += 1
        k += 1
        if language == "console":
            found.append(Block(path.name, start, "console", tuple(_session(body))))
        elif run_next and language in ("sh", "bash", "shell"):
            found.append(Block(path.name, start, "run", tuple(_run_only(body))))
        elif run_next and language == "python":
            # The script runs as is; a ```text block right after it is its output.
            script = "\n".join(text for _, text in body)
            expected: tuple[str, ...] | None = None
            after = k
            while after < len(lines) and not lines[after].strip():
                after += 1
            if after < len(lines) and lines[after].strip() == "```text":
                end = after + 1
                while end < len(lines) and not lines[end].startswith("```"):
                    end += 1
                expected = tuple(lines[after + 1 : end])
                k = end + 1
            command = Command(start, f"python - <<'MIGKIT_DOCS_EOF'\n{script}\nMIGKIT_DOCS_EOF", expected or ())
            found.append(Block(path.name, start, "console" if expected is not None else "run", (command,)))
        run_next = False
    return found


def _session(body: list[tuple[int, str]]) -> list[Command]:
    commands: list[Command] = []
    current: tuple[int, str] | None = None
    output: list[str] = []
    for number, text in body:
        if current is not None and not output and current[1].endswith("\\"):
            current = (current[0], current[1] + "\n" + text)  # a continued command line
        elif text.startswith("$ "):
            if current is not None:
                commands.append(Command(current[0], current[1], tuple(output)))
            current, output = (number, text[2:]), []
        elif current is not None:
            output.append(text)
    if current is not None:
        commands.append(Command(current[0], current[1], tuple(output)))
    return commands


def _run_only(body: list[tuple[int, str]]) -> list[Command]:
    joined: list[tuple[int, str]] = []
    for number, text in body:
        text = text.split(" #", 1)[0].rstrip() if not text.lstrip().startswith("#") else ""
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + text.strip())
        elif text.strip():
            joined.append((number, text.strip()))
    commands = []
    for number, text in joined:
        for part in text.split("&&"):
            part = part.strip()
            if part.startswith("migkit ") or part.startswith("python -m migkit"):
                commands.append(Command(number, part))
    return commands


def normalise(lines: list[str] | tuple[str, ...]) -> list[str]:
    """Sort each run of per-GPU lines, whose order depends on which GPU finishes first."""
    out: list[str] = []
    run: list[str] = []
    for line in [*lines, ""]:
        if PER_GPU.match(line):
            run.append(line)
            continue
        out.extend(sorted(run))
        run = []
        out.append(line)
    out.pop()
    while out and out[-1] == "":
        out.pop()
    return out


def environment(tmp: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MIGKIT_", "MIG_PARTED_")) and key not in ("COLUMNS", "LINES")
    }
    env.update(
        {
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(tmp),
            "COLUMNS": "100",
            "LC_ALL": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def run_block(block: Block, tmp: Path) -> list[tuple[Command, list[str], int]]:
    """Run the block's commands in one shell, in ``tmp``; each command's output lines and status."""
    script = ["__status=0"]
    for command in block.commands:
        suffix = f" 2>&1; __status=$?; echo; echo {MARK} $__status"
        first, newline, rest = command.text.partition("\n")
        if newline and not first.endswith("\\"):  # a here-document: the suffix ends line one
            script.append(f"(exit $__status); {first}{suffix}\n{rest}")
        else:
            script.append(f"(exit $__status); {command.text}{suffix}")
    done = subprocess.run(
        ["sh", "-c", "\n".join(script)],
        cwd=tmp,
        env=environment(tmp),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    pieces = done.stdout.split(f"{MARK} ")
    results = []
    previous_output = pieces[0]
    for command, piece in zip(block.commands, pieces[1:], strict=False):
        status_text, _, rest = piece.partition("\n")
        output = previous_output[:-1] if previous_output.endswith("\n") else previous_output
        shown = output.split("\n") if output else []
        while shown and not shown[-1]:
            shown.pop()
        results.append((command, shown, int(status_text)))
        previous_output = rest
    assert len(results) == len(block.commands), done.stderr
    return results


def _cases() -> list[object]:
    cases = []
    for path in DOCUMENTS:
        blocks = blocks_of(path)
        if any(b.kind in ("console", "run") for b in blocks):
            cases.append(pytest.param(path, id=str(path.relative_to(ROOT))))
    return cases


@pytest.mark.parametrize("path", _cases())
def test_documented_examples_print_what_the_docs_show(path: Path, tmp_path: Path) -> None:
    """Every console session and run-marked block of the page behaves as written."""
    problems = []
    for block in blocks_of(path):
        for command, output, status in run_block(block, tmp_path):
            where = f"{block.file}:{command.line}: $ {command.text}"
            if block.kind == "console":
                got, wanted = normalise(output), normalise(command.expected)
                if got != wanted:
                    diff = "\n".join(f"  - {w}" for w in wanted) + "\n" + "\n".join(f"  + {g}" for g in got)
                    problems.append(f"{where}\n{diff}")
            elif block.kind == "run" and status != 0:
                problems.append(f"{where}\n  exited {status}:\n" + "\n".join(f"  | {o}" for o in output[-8:]))
    assert not problems, "\n\n".join(problems)


def test_every_command_has_a_tested_example() -> None:
    """Each migkit command appears in at least one tested console session."""
    from migkit.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    shown = set()
    for path in DOCUMENTS:
        for block in blocks_of(path):
            if block.kind != "console":
                continue
            for command in block.commands:
                words = command.text.split()
                if words and words[0] == "migkit":
                    shown.update(w for w in words[1:] if w in commands)
    assert set(commands) - shown == set()
