"""The rollout's and the cluster view's door to the API server: nodes by label selector (list,
watch, patch), the agents' ConfigMaps and the agents' Events. Objects travel as plain JSON
dicts. Passing errors (connection refused, 5xx, 429) are retried with capped backoff; others
raise :class:`migkit.agent.kube.KubeError` at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import attrs
from kubernetes import client

from migkit.agent.kube import (
    Gone,
    KubeError,
    backoff_delays,
    call_with_retries,
    json_call,
    load_api_client,
    watch_events,
)

T = TypeVar("T")
MANAGED_BY = "app.kubernetes.io/managed-by=migkit-agent"


@attrs.define
class Cluster:
    """The API calls of ``rollout`` and ``cluster status``; ``requests`` counts them."""

    api_client: Any
    retry_timeout: float = 60.0
    request_timeout: float = 30.0
    requests: int = 0
    core: Any = attrs.field(init=False)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)

    def __attrs_post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api_client)

    @classmethod
    def connect(cls, kubeconfig: str | None = None) -> Cluster:
        """``KUBECONFIG`` (or ``kubeconfig``), else the in-cluster config."""
        return cls(load_api_client(kubeconfig))

    def _json(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.requests += 1
        return json_call(func, self.request_timeout, *args, **kwargs)

    def call(self, what: str, func: Callable[[], T]) -> T:
        return call_with_retries(what, func, self.retry_timeout)

    # ------------------------------------------------------------------ nodes

    def list_nodes(self, selector: str) -> tuple[list[dict[str, Any]], str]:
        """The nodes matching a label selector, sorted by name, and the list's resourceVersion."""
        doc = self.call(f"list nodes {selector!r}", lambda: self._json(self.core.list_node, label_selector=selector))
        items = sorted(doc.get("items") or [], key=lambda n: n["metadata"]["name"])
        return items, str(doc["metadata"]["resourceVersion"])

    def watch_nodes(self, selector: str, resource_version: str, timeout_seconds: int) -> Iterator[
            tuple[str, dict[str, Any]]]:
        """Watch events of the selected nodes from ``resource_version``; :class:`Gone` on 410."""
        with self._lock:
            self.requests += 1
        resp = self.core.list_node(
            label_selector=selector, watch=True, resource_version=resource_version,
            allow_watch_bookmarks=True, timeout_seconds=timeout_seconds, _preload_content=False,
            _request_timeout=(self.request_timeout, timeout_seconds + 15),
        )
        yield from watch_events(resp, "watch nodes", 65536)


    def read_node(self, name: str) -> dict[str, Any]:
        return self.call(f"read node {name}", lambda: self._json(self.core.read_node, name))

    def patch_node(self, name: str, body: Mapping[str, Any], what: str) -> dict[str, Any]:
        """One JSON merge patch of a node (None deletes a key)."""
        return self.call(
            f"{what} on {name}",
            lambda: self._json(self.core.patch_node, name, dict(body), _content_type="application/merge-patch+json"),
        )

    # ------------------------------------------------------------------ what the agents publish

    def agent_config_maps(self, namespace: str) -> dict[str, dict[str, Any]]:
        """The agents' ``<node>-mig-config`` ConfigMaps in ``namespace``, by name."""
        doc = self.call(f"list ConfigMaps in {namespace}",
                        lambda: self._json(self.core.list_namespaced_config_map, namespace, label_selector=MANAGED_BY))
        return {cm["metadata"]["name"]: cm for cm in doc.get("items") or []}

    def node_events(self, namespace: str = "default") -> dict[str, dict[str, Any]]:
        """The latest MigConfig* Event about each Node (the agents write them in ``default``)."""
        doc = self.call("list Events",
                        lambda: self._json(self.core.list_namespaced_event, namespace,
                                           field_selector="involvedObject.kind=Node"))
        latest: dict[str, dict[str, Any]] = {}
        for event in doc.get("items") or []:
            if not str(event.get("reason", "")).startswith("MigConfig"):
                continue
            node = event.get("involvedObject", {}).get("name", "")
            key = (event.get("lastTimestamp") or "", event["metadata"]["name"])
            current = latest.get(node)
            if current is None or key > (current.get("lastTimestamp") or "", current["metadata"]["name"]):
                latest[node] = event
        return latest

    def failure_message(self, node: str, since_ns: int, namespace: str = "default", wait: float = 3.0) -> str:
        """The message of the agent's ``MigConfigFailed`` Event about ``node`` written after
        ``since_ns`` (wall clock; the agent writes the Event just after the state label, so it may
        take a moment); else the newest one; '' when there is none."""
        deadline = time.monotonic() + wait
        while True:
            try:
                doc = self.call(f"list Events of {node}", lambda: self._json(
                    self.core.list_namespaced_event, namespace, field_selector=f"involvedObject.name={node}"))
            except KubeError:
                return ""
            failed = [e for e in doc.get("items") or [] if e.get("reason") == "MigConfigFailed"]
            failed.sort(key=lambda e: (e.get("lastTimestamp") or "", e["metadata"]["name"]))
            fresh = [e for e in failed if _event_ns(e) >= since_ns]
            if fresh:
                return str(fresh[-1].get("message", ""))
            if time.monotonic() >= deadline:
                return str(failed[-1].get("message", "")) if failed else ""
            time.sleep(0.2)


def _event_ns(event: Mapping[str, Any]) -> int:
    """When an agent's Event was made: its name is ``<node>.<nanoseconds in hex>``; 0 otherwise."""
    try:
        return int(str(event["metadata"]["name"]).rsplit(".", 1)[1], 16)
    except (KeyError, IndexError, ValueError):
        return 0


# Seconds the server keeps one watch request open: short, so that the watch thread notices a
# stop request soon (one more request every few seconds costs the API server nothing).
_WATCH_WINDOW = 3


@attrs.define
class NodeTracker:
    """The latest copy of every selected node, kept by list + watch in a thread.

    ``wait(timeout)`` returns when something changed (or at the timeout), so a rollout reacts
    to each agent's state change at once instead of polling every node.
    """

    cluster: Cluster
    selector: str
    nodes: dict[str, dict[str, Any]] = attrs.Factory(dict)
    stop: threading.Event = attrs.Factory(threading.Event)
    error: str = ""
    _changed: threading.Condition = attrs.Factory(threading.Condition)
    _version: int = 0
    _thread: threading.Thread | None = None

    def start(self, items: list[dict[str, Any]], resource_version: str) -> NodeTracker:
        with self._changed:
            self.nodes = {n["metadata"]["name"]: n for n in items}
        self._thread = threading.Thread(target=self._run, args=(resource_version,), name="node-watch", daemon=True)
        self._thread.start()
        return self

    def get(self, name: str) -> dict[str, Any] | None:
        with self._changed:
            return self.nodes.get(name)

    def update(self, obj: dict[str, Any]) -> None:
        """Take a node object we just got back from a patch (kept only if at least as new as
        the watch's copy)."""
        self._deliver("MODIFIED", obj)

    def version(self) -> int:
        with self._changed:
            return self._version

    def wait(self, seen: int, timeout: float) -> int:
        """Block until the version moves past ``seen`` or ``timeout`` passes; the new version."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != seen or self.stop.is_set(), timeout)
            return self._version

    def _deliver(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        with self._changed:
            if kind == "DELETED":
                self.nodes.pop(name, None)
            else:
                current = self.nodes.get(name)
                if current is None or int(obj["metadata"]["resourceVersion"]) >= int(
                        current["metadata"]["resourceVersion"]):
                    self.nodes[name] = obj
            self._version += 1
            self._changed.notify_all()

    def _run(self, resource_version: str) -> None:
        version: str | None = resource_version
        delays = backoff_delays(0.5, 10.0)
        while not self.stop.is_set():
            try:
                if version is None:
                    items, version = self.cluster.list_nodes(self.selector)
                    for item in items:
                        self._deliver("MODIFIED", item)
                for kind, obj in self.cluster.watch_nodes(self.selector, version, _WATCH_WINDOW):
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    if kind != "BOOKMARK":
                        self._deliver(kind, obj)
                    if self.stop.is_set():
                        return
                delays = backoff_delays(0.5, 10.0)
            except Gone:
                version = None
            except Exception as err:  # the watch reconnects; the rollout's own calls report errors
                self.error = str(err)
                if self.stop.wait(next(delays)):
                    return

    def close(self) -> None:
        """Stop the watch thread and wait for it: a thread still inside an HTTP read when the
        interpreter shuts down can abort the process. The watch asks the server to end each
        request after a short window, so the thread sees the stop flag within that window."""
        self.stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(_WATCH_WINDOW + 5)


__all__ = ["Cluster", "KubeError", "NodeTracker"]
