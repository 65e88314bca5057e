"""``migkit rollout``: change the MIG config of many nodes, safely, in waves.

1. Select the nodes (label selector) and decide, offline, whether the config fits each one's
   GPUs (:mod:`migkit.fleet.fit`); nodes it does not fit, and nodes mid-change, are skipped
   and named before anything is touched.
2. Label the rest in waves of ``--max-unavailable`` nodes (optionally cordoned first), each
   label change written with its progress record in one patch (:mod:`migkit.fleet.progress`).
3. Wait for each node's agent to report the outcome of *this* change (per-node timeout);
   record it on the node; uncordon after ``success`` if the rollout cordoned it.
4. Stop before the next wave once more than ``--max-failures`` nodes failed; nodes of later
   waves are never touched. A rerun continues where a crash or Ctrl-C left off and never
   relabels a finished node.

Exit codes: 0 every selected node is at the config; 1 some node failed, timed out or was
skipped or left untouched; 2 nothing was changed (usage or config error, no node selected,
every node refused); 130 interrupted (rerun to continue).
"""

from __future__ import annotations

import datetime
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, TextIO

import attrs

from migkit.agent import labels as L
from migkit.config import MigConfigFile, load_config
from migkit.errors import MigkitError
from migkit.fleet.fit import UnknownGpus, fit_problem, inventory_from_published
from migkit.fleet.kube import Cluster, KubeError, NodeTracker
from migkit.fleet.progress import (
    PHASE_APPLYING,
    PHASE_FAILED,
    PHASE_SUCCESS,
    Progress,
    Standing,
    assess,
    finish_patch,
    label_patch,
    outcome,
    plan_waves,
    wave_size,
)

# results in the final table
SUCCESS = "success"
ALREADY = "already"
FAILED = "failed"
TIMEOUT = "timeout"
SKIPPED = "skipped"
UNTOUCHED = "untouched"
INTERRUPTED = "in flight"
PLANNED = "planned"
AT_CONFIG = frozenset({SUCCESS, ALREADY})
FAILURES = frozenset({FAILED, TIMEOUT})

EXIT_OK, EXIT_FAILED, EXIT_NOTHING, EXIT_INTERRUPTED = 0, 1, 2, 130


class RolloutError(Exception):
    """The rollout cannot start (the message says why); nothing was changed."""


@attrs.frozen
class RolloutOptions:
    selector: str
    config: str
    max_unavailable: str = "1"
    cordon: bool = False
    timeout: float = 600.0
    max_failures: int = 0
    dry_run: bool = False
    namespace: str = "gpu-operator"
    config_file: str | None = None
    retry_failed: bool = False
    output: str = "text"


@attrs.define
class NodeResult:
    name: str
    result: str
    wave: int | None = None
    seconds: float | None = None
    detail: str = ""
    previous: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"node": self.name, "result": self.result, "wave": self.wave,
                "seconds": None if self.seconds is None else round(self.seconds, 3),
                "detail": self.detail, "previous": self.previous}


@attrs.define
class Report:
    options: RolloutOptions
    results: dict[str, NodeResult] = attrs.Factory(dict)
    waves: list[list[str]] = attrs.Factory(list)
    wave_size: int = 0
    stopped: str = ""
    changed: int = 0
    seconds: float = 0.0
    api_requests: int = 0

    def set(self, result: NodeResult) -> None:
        self.results[result.name] = result

    def count(self, *results: str) -> int:
        return sum(1 for r in self.results.values() if r.result in results)

    def exit_code(self, interrupted: bool) -> int:
        if interrupted:
            return EXIT_INTERRUPTED
        if self.options.dry_run:
            return EXIT_NOTHING if not self.waves and self.count(*AT_CONFIG) < len(self.results) else EXIT_OK
        if self.results and all(r.result in AT_CONFIG for r in self.results.values()):
            return EXIT_OK
        if self.changed == 0 and not self.count(*FAILURES):
            return EXIT_NOTHING
        return EXIT_FAILED

    def summary(self) -> str:
        words = [f"{self.count(r)} {r}" for r in (SUCCESS, ALREADY, FAILED, TIMEOUT, SKIPPED, UNTOUCHED,
                                                  INTERRUPTED, PLANNED) if self.count(r)]
        waves = f"{len(self.waves)} wave{'s' if len(self.waves) != 1 else ''} of up to {self.wave_size}"
        text = f"rollout of {self.options.config} to {len(self.results)} node(s): {', '.join(words) or 'nothing'}"
        text += f" ({waves}, {self.seconds:.1f}s)"
        if self.stopped:
            text += f"\nstopped: {self.stopped}"
        return text

    def table(self) -> str:
        rows = [("NODE", "RESULT", "WAVE", "SECONDS", "DETAIL")]
        for r in sorted(self.results.values(), key=lambda r: (r.wave or 10**9, r.name)):
            rows.append((r.name, r.result, "-" if r.wave is None else str(r.wave),
                         "-" if r.seconds is None else f"{r.seconds:.1f}", r.detail))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
                         for row in rows).rstrip() + "\n"

    def to_json(self, exit_code: int) -> str:
        doc = {
            "config": self.options.config,
            "selector": self.options.selector,
            "dry_run": self.options.dry_run,
            "wave_size": self.wave_size,
            "waves": self.waves,
            "nodes": [r.as_json() for r in sorted(self.results.values(), key=lambda r: r.name)],
            "counts": {k: self.count(k) for k in (SUCCESS, ALREADY, FAILED, TIMEOUT, SKIPPED, UNTOUCHED,
                                                  INTERRUPTED, PLANNED)},
            "stopped": self.stopped or None,
            "seconds": round(self.seconds, 3),
            "api_requests": self.api_requests,
            "exit_code": exit_code,
        }
        return json.dumps(doc, indent=2) + "\n"


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.define
class Progressor:
    """Progress for people: a live line per wave on a terminal, plain lines otherwise, nothing
    for ``-o json`` (the document at the end is the output)."""

    out: TextIO
    live: bool
    quiet: bool
    _open: bool = False

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if self._open:
            self.out.write("\n")
            self._open = False
        self.out.write(text + "\n")
        self.out.flush()

    def status(self, text: str) -> None:
        """A line rewritten in place on a terminal; printed only when final otherwise."""
        if self.quiet or not self.live:
            return
        self.out.write("\r\033[K" + text)
        self.out.flush()
        self._open = True

    def event(self, text: str) -> None:
        """A per-node event: its own line when not on a terminal (the live line covers it there)."""
        if not self.live:
            self.line(text)

    def end_wave(self, text: str) -> None:
        if self.quiet:
            return
        if self.live:
            self.out.write("\r\033[K" + text + "\n")
            self._open = False
            self.out.flush()
        else:
            self.line(text)


@attrs.define
class Rollout:
    cluster: Cluster
    options: RolloutOptions
    progress: Progressor
    clock: Callable[[], float] = time.monotonic
    _configs: dict[str, MigConfigFile | str] = attrs.Factory(dict)

    # ------------------------------------------------------------------ the offline check

    def _config_for(self, node: str, config_maps: dict[str, dict[str, Any]], shared: MigConfigFile | None) -> (
            MigConfigFile | str):
        """The config file the node's agent uses (or the reason it cannot be known)."""
        if shared is not None:
            return shared
        cm = config_maps.get(f"{node}-mig-config")
        if cm is None:
            return (f"no ConfigMap {self.options.namespace}/{node}-mig-config "
                    "(is migkit's agent running on the node?)")
        text = (cm.get("data") or {}).get("config.yaml")
        if not text:
            return f"ConfigMap {self.options.namespace}/{node}-mig-config has no config.yaml"
        cached = self._configs.get(text)
        if cached is None:
            try:
                cached = load_config(text, name=f"ConfigMap {self.options.namespace}/{node}-mig-config")
            except MigkitError as err:
                cached = f"ConfigMap {self.options.namespace}/{node}-mig-config: {err}"
            self._configs[text] = cached
        return cached

    def fit(self, node: dict[str, Any], config_maps: dict[str, dict[str, Any]], shared: MigConfigFile | None) -> (
            str | None):
        """Why the config cannot go on this node; None when it fits."""
        labels = node["metadata"].get("labels") or {}
        published = (config_maps.get(f"{node['metadata']['name']}-mig-config") or {}).get("data") or {}
        try:
            gpus = inventory_from_published(published, labels)
        except UnknownGpus as err:
            return str(err)
        config = self._config_for(node["metadata"]["name"], config_maps, shared)
        if isinstance(config, str):
            return config
        return fit_problem(config, self.options.config, gpus)

    # ------------------------------------------------------------------ the run

    def run(self, report: Report) -> bool:
        """Fill ``report``; True when interrupted (Ctrl-C or SIGTERM)."""
        o = self.options
        started = self.clock()
        items, version = self.cluster.list_nodes(o.selector)
        if not items:
            raise RolloutError(f"no node matches the selector {o.selector!r}")
        shared: MigConfigFile | None = None
        if o.config_file:
            try:
                shared = load_config(o.config_file)
            except (MigkitError, OSError) as err:
                raise RolloutError(f"config file {o.config_file}: {err}") from None
            if o.config not in shared.configs:
                raise RolloutError(f"no config {o.config!r} in {o.config_file}")
        config_maps = self.cluster.agent_config_maps(o.namespace)  # the GPUs each agent read, and its config

        in_flight: dict[str, Progress] = {}
        todo: list[str] = []
        for node in items:
            name = node["metadata"]["name"]
            meta = node["metadata"]
            a = assess(meta.get("labels") or {}, meta.get("annotations") or {}, o.config)
            previous = (meta.get("labels") or {}).get(L.CONFIG_LABEL)
            if a.standing in (Standing.DONE, Standing.ALREADY):
                report.set(NodeResult(name, SUCCESS if a.standing is Standing.DONE else ALREADY,
                                      a.progress.wave if a.progress else None, detail=a.detail,
                                      previous=a.progress.previous if a.progress else previous))
            elif a.standing is Standing.FAILED and not o.retry_failed:
                report.set(NodeResult(name, FAILED, a.progress.wave if a.progress else None,
                                      detail=a.detail + " (rerun with --retry-failed to try again)",
                                      previous=a.progress.previous if a.progress else None))
            elif a.standing is Standing.BUSY:
                report.set(NodeResult(name, SKIPPED, detail=a.detail, previous=previous))
            elif a.standing is Standing.IN_FLIGHT:
                assert a.progress is not None
                in_flight[name] = a.progress
            else:
                problem = self.fit(node, config_maps, shared)
                if problem is not None:
                    report.set(NodeResult(name, SKIPPED, detail=f"does not fit: {problem}", previous=previous))
                else:
                    todo.append(name)
        for r in sorted(report.results.values(), key=lambda r: r.name):
            if r.result == SKIPPED:
                self.progress.line(f"skip {r.name}: {r.detail}")

        report.wave_size = wave_size(o.max_unavailable, len(items))
        report.waves = plan_waves(list(in_flight), todo, report.wave_size)
        for number, wave in enumerate(report.waves, 1):
            for name in wave:
                resumed = name in in_flight
                detail = "resuming: labelled by an earlier run" if resumed else "to label"
                result = PLANNED if o.dry_run else INTERRUPTED if resumed else UNTOUCHED
                report.set(NodeResult(name, result, number, detail=detail))
        if o.dry_run:
            for number, wave in enumerate(report.waves, 1):
                self.progress.line(f"wave {number}/{len(report.waves)}: {' '.join(wave)}")
            report.seconds = self.clock() - started
            return False

        failures = report.count(*FAILURES)
        if failures > o.max_failures and report.waves:
            report.stopped = (f"{failures} node(s) of this rollout already failed (--max-failures {o.max_failures}); "
                              "fix them and rerun with --retry-failed, or raise --max-failures")
            report.seconds = self.clock() - started
            return False

        tracker = NodeTracker(self.cluster, o.selector).start(items, version)
        try:
            for number, wave in enumerate(report.waves, 1):
                self._wave(report, number, wave, in_flight, tracker)
                failures = report.count(*FAILURES)
                if failures > o.max_failures:
                    if number < len(report.waves):
                        report.stopped = (f"{failures} node(s) failed, more than --max-failures {o.max_failures}; "
                                          f"waves {number + 1}-{len(report.waves)} not started")
                    break
        except KeyboardInterrupt:
            report.stopped = "interrupted; run the same command again to continue"
            for r in report.results.values():
                if r.result == PLANNED:
                    r.result = INTERRUPTED
            return True
        finally:
            tracker.close()
            report.seconds = self.clock() - started
        return False

    def _wave(self, report: Report, number: int, wave: list[str], in_flight: dict[str, Progress],
              tracker: NodeTracker) -> None:
        o = self.options
        total = len(report.waves)
        waiting: dict[str, tuple[Progress, float, float]] = {}  # name -> (progress, started, deadline)
        wall_started = time.time_ns()
        for name in wave:
            now = self.clock()
            progress = in_flight.get(name)
            if progress is None:
                progress = self._label(report, number, name, tracker)
                if progress is None:
                    continue
            else:
                report.results[name].result = PLANNED
                self.progress.event(f"wave {number}/{total}: waiting for {name} (labelled by an earlier run)")
            report.results[name].previous = progress.previous
            waiting[name] = (progress, now, now + o.timeout)

        seen = tracker.version()
        wave_started = self.clock()
        while waiting:
            for name in sorted(waiting):
                progress, started, deadline = waiting[name]
                node = tracker.get(name)
                state = None
                if node is None:
                    state, detail = FAILED, "the node was deleted"
                else:
                    meta = node["metadata"]
                    ended = outcome(meta.get("labels") or {}, meta.get("annotations") or {}, progress.token)
                    if ended is not None:
                        state, detail = ended, ""
                    elif self.clock() >= deadline:
                        state = TIMEOUT
                        detail = (f"no {L.STATE_LABEL} outcome after {o.timeout:g}s "
                                  f"(now {(meta.get('labels') or {}).get(L.STATE_LABEL) or 'unset'})")
                if state is None:
                    continue
                seconds = self.clock() - started
                if state == L.STATE_SUCCESS:
                    detail = f"{progress.previous or 'no config'} -> {o.config}"
                elif state == L.STATE_FAILED:
                    detail = self.cluster.failure_message(name, wall_started) or f"{L.STATE_LABEL}=failed"
                if state != L.STATE_SUCCESS and progress.cordoned:
                    detail += " (left cordoned)"
                if state == TIMEOUT:
                    detail += "; rerun to wait for it again"
                self._record(name, progress, state, detail, tracker)
                report.set(NodeResult(name, SUCCESS if state == L.STATE_SUCCESS else state, number, seconds,
                                      detail, progress.previous))
                self.progress.event(f"  {name}: {report.results[name].result} in {seconds:.1f}s"
                                    + (f": {detail}" if state != L.STATE_SUCCESS else ""))
                del waiting[name]
            done = [report.results[n].result for n in wave]
            line = (f"wave {number}/{total}: {sum(r == SUCCESS for r in done)} success, "
                    f"{sum(r in FAILURES for r in done)} failed, {len(waiting)} waiting "
                    f"[{self.clock() - wave_started:.0f}s]")
            if not waiting:
                self.progress.end_wave(line)
                return
            self.progress.status(line)
            nearest = min(deadline for _, _, deadline in waiting.values())
            seen = tracker.wait(seen, max(0.05, min(1.0, nearest - self.clock())))

    def _label(self, report: Report, number: int, name: str, tracker: NodeTracker) -> Progress | None:
        """Label one node, judged afresh from its latest copy; the progress to wait on, or None
        when the node needs no waiting (its result is set). The patch carries the copy's
        resourceVersion: if the node changed meanwhile (another rollout, an admin), it is read
        and judged again rather than overwritten."""
        o = self.options
        total = len(report.waves)
        for _attempt in range(3):
            current = tracker.get(name)
            if current is None:
                report.set(NodeResult(name, FAILED, number, 0.0, "the node was deleted"))
                return None
            meta = current["metadata"]
            labels = meta.get("labels") or {}
            a = assess(labels, meta.get("annotations") or {}, o.config)
            if a.standing is Standing.IN_FLIGHT:
                assert a.progress is not None
                report.results[name].result = PLANNED
                self.progress.event(f"wave {number}/{total}: waiting for {name} (labelled by another run)")
                return a.progress
            if a.standing in (Standing.DONE, Standing.ALREADY):
                report.set(NodeResult(name, SUCCESS if a.standing is Standing.DONE else ALREADY, number,
                                      detail=a.detail, previous=labels.get(L.CONFIG_LABEL)))
                return None
            if not (a.standing is Standing.TODO or (a.standing is Standing.FAILED and o.retry_failed)):
                report.set(NodeResult(name, SKIPPED, number, detail=f"changed while the rollout ran: {a.detail}",
                                      previous=labels.get(L.CONFIG_LABEL)))
                return None
            cordon = o.cordon and not (current.get("spec") or {}).get("unschedulable", False)
            progress = Progress(config=o.config, token=uuid.uuid4().hex, phase=PHASE_APPLYING,
                                previous=labels.get(L.CONFIG_LABEL), cordoned=cordon, wave=number, started=now_iso())
            report.results[name].result = PLANNED  # from here on, an interrupt leaves it in flight
            body = label_patch(o.config, progress, cordon=cordon, resource_version=str(meta["resourceVersion"]))
            try:
                tracker.update(self.cluster.patch_node(name, body, f"label {L.CONFIG_LABEL}={o.config}"))
            except KubeError as err:
                if err.status == 409:
                    tracker.update(self.cluster.read_node(name))
                    continue
                report.set(NodeResult(name, FAILED, number, 0.0, f"could not label: {err}", progress.previous))
                return None
            report.changed += 1
            self.progress.event(f"wave {number}/{total}: labelled {name}" + (" (cordoned)" if cordon else ""))
            return progress
        report.set(NodeResult(name, SKIPPED, number, detail="kept changing under the rollout; rerun to pick it up"))
        return None

    def _record(self, name: str, progress: Progress, state: str, detail: str, tracker: NodeTracker) -> None:
        """Write the outcome on the node (best effort: a lost write is redone by a rerun, which
        finds the agent's answer still there)."""
        if state == TIMEOUT:
            # No outcome yet is not a failure of the node: the record stays `applying`, so a
            # rerun waits for it again and takes the agent's answer when it comes.
            final = attrs.evolve(progress, message=detail[:500])
            phase = PHASE_APPLYING
        else:
            phase = PHASE_SUCCESS if state == L.STATE_SUCCESS else PHASE_FAILED
            final = attrs.evolve(progress, phase=phase, finished=now_iso(), message=detail[:500])
        uncordon = phase == PHASE_SUCCESS and progress.cordoned
        try:
            tracker.update(self.cluster.patch_node(name, finish_patch(final, uncordon=uncordon),
                                                   f"record {phase}"))
        except KubeError as err:
            self.progress.line(f"warning: could not record the outcome on {name}: {err}")


def run(options: RolloutOptions, cluster: Cluster, out: TextIO = sys.stdout) -> int:
    """Run a rollout and print its report; the exit code."""
    json_out = options.output == "json"
    progress = Progressor(out if not json_out else sys.stderr, live=out.isatty() and not json_out, quiet=json_out)
    report = Report(options)
    interrupted = False
    try:
        interrupted = Rollout(cluster, options, progress).run(report)
    except (RolloutError, ValueError) as err:
        print(f"migkit rollout: error: {err}", file=sys.stderr)
        return EXIT_NOTHING
    except KubeError as err:
        print(f"migkit rollout: error: {err}", file=sys.stderr)
        return EXIT_NOTHING if report.changed == 0 else EXIT_FAILED
    except KeyboardInterrupt:  # before the first wave: nothing was changed
        print("migkit rollout: interrupted before any change", file=sys.stderr)
        return EXIT_INTERRUPTED
    report.api_requests = cluster.requests
    code = report.exit_code(interrupted)
    if json_out:
        out.write(report.to_json(code))
    else:
        progress.line("")
        out.write(report.table())
        out.write(report.summary() + "\n")
    out.flush()
    return code


__all__ = ["Report", "RolloutError", "RolloutOptions", "run"]
