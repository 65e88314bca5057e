"""The NVML layer: the cffi boundary (``_binding``) and ``Node`` (snapshot -> models, bulk ops).

Imports nothing from the domain beyond ``models``, ``names`` and ``errors``.
"""

from migkit.nvml.node import Node, open_node

__all__ = ["Node", "open_node"]
