"""Composing YAML as nvidia-mig-parted's go-yaml v2 reads it, into a node tree that keeps
every value's position: the resolvers (``y``/``n`` are booleans, ``1e0`` is a float), libyaml's
fast composer where it agrees with the pure-Python one, and the collector paused meanwhile."""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Iterator
from typing import Any, ClassVar

import yaml
from yaml.nodes import Node

__all__ = [
    "GO_YAML_BOOL",
    "GO_YAML_FLOAT",
    "SCALARS",
    "TAG",
    "GoYamlLoader",
    "collector_paused",
    "compose_fast",
    "join_surrogates",
]

TAG = "tag:yaml.org,2002:"
# What go-yaml v2 reads that YAML 1.1 (PyYAML) does not: y/n as booleans, an exponent
# without a dot (1e0, 7E+0) as a float. A writer must quote strings that match these.
GO_YAML_BOOL = re.compile(r"^(?:y|Y|n|N)$")
GO_YAML_FLOAT = re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$")


class GoYamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.1's ``y``/``n`` as booleans, as go-yaml v2 does."""

    bool_values: ClassVar[dict[str, bool]] = {**yaml.SafeLoader.bool_values, "y": True, "n": False}


SCALARS = yaml.constructor.SafeConstructor()
GoYamlLoader.add_implicit_resolver(TAG + "bool", GO_YAML_BOOL, list("yYnN"))
GoYamlLoader.add_implicit_resolver(TAG + "float", GO_YAML_FLOAT, list("-+0123456789"))

# libyaml's parser and composer (PyYAML's C extension) with the same resolvers: it builds the
# node tree, marks included, several times faster than the pure-Python reader. Where the C
# extension is missing, or it refuses a document, the pure-Python loader composes instead (so
# errors read exactly as before and nothing the pure-Python loader accepts is refused).
_FastLoader: type[Any] | None = None
if hasattr(yaml, "CSafeLoader"):

    class _CLoader(yaml.CSafeLoader):
        bool_values: ClassVar[dict[str, bool]] = GoYamlLoader.bool_values

    _CLoader.yaml_implicit_resolvers = GoYamlLoader.yaml_implicit_resolvers
    _FastLoader = _CLoader


# libyaml and the pure-Python composer differ on tags ("!", "!!str"), tabs, some non-ASCII
# characters (a BOM inside the text, NEL, ...), edge cases of block scalars ("|#"),
# directives and escapes. Configs are printable ASCII without these; anything else takes the
# pure-Python path, so both paths always agree.
_NOT_PLAIN = re.compile(r"[^\n\r\x20-\x7e]|[!|>%\\@`]")


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a big, acyclic node tree is built.

    Composing allocates millions of objects that all stay alive; each full collection walks
    all of them, which made loading quadratic in the file size (3.4 MB: 105 s). The tree has
    no cycles to collect, so pausing costs nothing; the previous state is restored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compose_fast(text: str) -> Node | None:
    """The node tree from libyaml, or raises ``LookupError`` when it cannot give one."""
    if _FastLoader is None:
        raise LookupError("the C loader is not available")
    if _NOT_PLAIN.search(text) is not None:
        raise LookupError("the document has characters the two composers treat differently")
    try:
        loader = _FastLoader(text)
    except (yaml.YAMLError, ValueError, UnicodeError):
        raise LookupError("the C loader refused the document") from None
    try:
        root: Node | None = loader.get_single_node()
    except (yaml.YAMLError, RecursionError, ValueError, UnicodeError):
        raise LookupError("the C loader refused the document") from None
    finally:
        loader.dispose()
    return root


_SURROGATE = re.compile("[\ud800-\udfff]")


def join_surrogates(text: str) -> str:
    """Combine JSON-style surrogate pairs (``\\ud800\\udc00``), which YAML leaves apart."""
    if _SURROGATE.search(text) is None:
        return text
    try:
        return text.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        return text
