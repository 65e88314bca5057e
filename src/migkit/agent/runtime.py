"""The running agent: the watch of its Node, the worker that reconciles (:class:`Worker`, reusable
without signals or the server), and ``run_agent`` that adds signals and the HTTP server."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from migkit.agent import labels as L
from migkit.agent.host import Host, PrefixRunner
from migkit.agent.kube import Gone, Kube, KubeError, backoff_delays, describe, load_api_client
from migkit.agent.node_ops import NodeInventory, NodeOps, NodeOpsError, file_digest
from migkit.agent.observe import Health, Metrics, serve, setup_logging
from migkit.agent.reconcile import Handled, Outcome, Reconciler, Trigger, decide_trigger
from migkit.agent.settings import Settings, SettingsError, parse_settings

log = logging.getLogger("migkit.agent")

WATCH_TIMEOUT_S = 240


@attrs.define
class NodeWatch:
    """List, then watch, this one Node; keeps the latest object and wakes the worker on change.

    Resumes from the last resourceVersion, lists again on 410 Gone, reconnects with capped
    backoff on any other error.
    """

    kube: Kube
    stop: threading.Event
    health: Health
    changed: threading.Event = attrs.Factory(threading.Event)
    latest: dict[str, Any] | None = None
    lock: threading.Lock = attrs.Factory(threading.Lock)
    lists: int = 0

    def _deliver(self, obj: dict[str, Any] | None) -> None:
        with self.lock:
            self.latest = obj
        self.changed.set()

    def snapshot(self) -> dict[str, Any] | None:
        with self.lock:
            return self.latest

    def run(self) -> None:
        version: str | None = None
        delays = backoff_delays(0.5, 10.0)
        while not self.stop.is_set():
            self.health.beat("watch")
            try:
                if version is None:
                    obj, version = self.kube.list_node()
                    self.lists += 1
                    self._deliver(obj)
                    self.health.ready.set()
                    if obj is None:
                        log.warning("node %s does not exist (yet)", self.kube.node_name)
                for kind, obj in self.kube.watch_node(version, WATCH_TIMEOUT_S):
                    self.health.beat("watch")
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    if kind == "BOOKMARK":
                        continue
                    self._deliver(None if kind == "DELETED" else obj)
                    if self.stop.is_set():
                        return
                delays = backoff_delays(0.5, 10.0)  # a watch that ended cleanly resets the backoff
            except Gone as err:
                log.info("watch expired (%s); listing again", err)
                version = None
            except Exception as err:
                delay = next(delays)
                log.warning("watch of node %s failed: %s; reconnecting in %.1fs",
                            self.kube.node_name, describe(err), delay)
                if self.stop.wait(delay):
                    return


@attrs.define
class ConfigSource:
    """Where the MIG config comes from: CONFIG_FILE, else the generated one, else DEFAULT_CONFIG_FILE
    (when this node's profiles cannot be listed). Publishes the ``<node>-mig-config`` ConfigMap."""

    settings: Settings
    ops: NodeOps
    kube: Kube
    published: dict[str, str] | None = None

    def inventory(self) -> NodeInventory | None:
        try:
            return self.ops.inventory()
        except NodeOpsError as err:
            log.warning("%s", err)
            return None

    def publish(self, inventory: NodeInventory | None) -> None:
        s = self.settings
        if not s.publish_config or inventory is None:
            return
        data = inventory.config_map_data()
        if data == self.published:
            return
        owner = {"name": s.pod_name, "uid": s.pod_uid} if s.pod_name and s.pod_uid else None
        try:
            if self.kube.put_config_map(s.pod_namespace, f"{s.node_name}-mig-config", data, owner):
                log.info("published ConfigMap %s/%s-mig-config", s.pod_namespace, s.node_name)
            self.published = data
        except KubeError as err:
            log.warning("could not publish the node's config: %s", err)

    def refresh(self) -> NodeInventory | None:
        """Read the GPUs and publish what they say (rewritten when the hardware changed)."""
        inventory = self.inventory()
        self.publish(inventory)
        return inventory

    def load(self) -> tuple[Any, str | None]:
        """(config or None, the error when it cannot be used)."""
        s = self.settings
        inventory = self.refresh()
        if s.config_file:
            path = s.config_file
        elif inventory is not None and inventory.config is not None:
            try:
                return self.ops.load_text(inventory.config, "<generated config>"), None
            except NodeOpsError as err:
                return None, str(err)
        else:
            path = s.default_config_file
            why = inventory.problem if inventory is not None else "the GPUs could not be read"
            log.info("%s; using the default config file %s", why, path)
        try:
            return self.ops.load(path), None
        except NodeOpsError as err:
            return None, str(err)

    def digest(self) -> str | None:
        return file_digest(self.settings.config_file) if self.settings.config_file else None


OutcomeHook = Callable[[str, Trigger, Outcome], None]


@attrs.define
class Worker:
    """The agent's work, without signal handlers or the HTTP server: the watch of its Node (a
    thread) and the loop that runs the reconfiguration on each trigger.

    ``migkit agent`` runs one in its main thread; a process hosting many agents runs one per
    node in threads (:meth:`start`), each with its own ``ops`` (see ``NodeOps.gpu_access``).
    ``on_outcome(config, trigger, outcome)`` is told of every reconfiguration.

    >>> worker = Worker(settings, kube, ops, host).start()   # doctest: +SKIP
    >>> worker.close()                                       # doctest: +SKIP
    """

    settings: Settings
    kube: Kube
    ops: NodeOps
    host: Host
    stop: threading.Event = attrs.Factory(threading.Event)
    health: Health = attrs.Factory(Health)
    metrics: Metrics | None = None
    on_outcome: OutcomeHook | None = None
    watch: NodeWatch = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.watch = NodeWatch(self.kube, self.stop, self.health)

    def wake(self) -> None:
        """Look at the node now (after a change, or to notice ``stop``)."""
        self.watch.changed.set()

    def close(self) -> None:
        self.stop.set()
        self.wake()

    def start_watch(self) -> None:
        threading.Thread(target=self.watch.run, name=f"watch-{self.settings.node_name}", daemon=True).start()

    def start(self) -> Worker:
        """The watch and the loop, each in a daemon thread; :meth:`close` stops both."""
        self.start_watch()
        threading.Thread(target=self.run, name=f"agent-{self.settings.node_name}", daemon=True).start()
        return self

    def run(self) -> None:
        """The loop, until ``stop`` is set: publish the node's config, then reconcile on each trigger."""
        settings, health, metrics = self.settings, self.health, self.metrics
        reconciler = Reconciler(self.kube, self.ops, self.host, settings, self.stop, metrics)
        source = ConfigSource(settings, self.ops, self.kube)
        source.refresh()  # the ConfigMap exists from the start, before any label asks for a change
        handled = Handled()
        rebooting = False
        poll = settings.config_poll_interval if settings.watch_config_file else 30.0
        while not self.stop.is_set():
            health.beat("worker")
            self.watch.changed.wait(poll)
            self.watch.changed.clear()
            if self.stop.is_set() or rebooting:
                continue
            node = self.watch.snapshot()
            if node is None:
                continue
            meta = node.get("metadata", {})
            node_labels = meta.get("labels") or {}
            annotations = meta.get("annotations") or {}
            if metrics is not None:
                metrics.state(node_labels.get(L.STATE_LABEL, ""))
            digest = source.digest() if settings.watch_config_file else None
            trigger = decide_trigger(node_labels, annotations, handled, digest)
            if trigger is Trigger.NONE:
                continue
            selected = node_labels[L.CONFIG_LABEL]
            log.info("reconfiguring to %r (%s)", selected, trigger.value, extra={"config": selected})
            config, error = source.load()
            retry = annotations.get(L.RETRY_ANNOTATION)
            health.busy.add("worker")
            try:
                outcome = reconciler.run(selected, config, error, retry)
            finally:
                health.busy.discard("worker")
                health.beat("worker")
            log.info("reconfiguration to %r ended %s in %.2fs", selected, outcome.state, outcome.seconds,
                     extra={"config": selected, "result": outcome.state, "seconds": round(outcome.seconds, 3)})
            if self.on_outcome is not None:
                self.on_outcome(selected, trigger, outcome)
            handled = Handled(selected, retry, digest, True)
            rebooting = outcome.state == L.STATE_REBOOTING
            self.wake()  # look again at once: the label may have moved while we worked


def run_agent(settings: Settings) -> int:
    setup_logging(settings.log_format, settings.log_level, settings.node_name)
    metrics = Metrics()
    kube = Kube(load_api_client(settings.kubeconfig), settings.node_name, settings.api_retry_timeout)
    host = Host(PrefixRunner(settings.host_prefix), settings.host_root_mount, settings.reboot_command)
    worker = Worker(settings, kube, NodeOps.from_env(), host, metrics=metrics)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s: finishing the current step, then stopping", signal.Signals(signum).name)
        worker.close()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = serve(settings.metrics_address, settings.metrics_port, metrics, worker.health) \
        if settings.metrics_port else None
    if server is not None:
        log.info("serving /metrics, /healthz, /readyz on %s:%d", *server.server_address[:2])
    worker.start_watch()
    worker.run()
    log.info("stopped")
    if server is not None:
        server.shutdown()
    return 0


def main(argv: Sequence[str]) -> int:
    try:
        settings = parse_settings(argv)
    except SettingsError as err:
        print(f"migkit agent: error: {err}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        return run_agent(settings)
    finally:
        log.debug("ran %.1fs", time.monotonic() - started)
