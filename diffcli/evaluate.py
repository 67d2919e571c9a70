"""NumPy evaluation of a graph over leading batch axes.

A Plan is compiled once per set of outputs: a flat list of steps, each a
prebuilt kernel with the slots it reads and writes, and the slots whose last
use it is (released right after, so big batches do not keep every
intermediate alive). Running it is a loop over that list: no graph walk, no
dictionary look-ups, no work per node that depends on the batch size.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .errors import Diagnostic
from .graph import Node, derivative_diagnostic, nonfinite_diagnostic, topological_order
from .ops import OPS


class Plan:
    def __init__(self, outputs: list[Node], inputs: list[Node]):
        self.outputs = outputs
        self.inputs = inputs
        order = topological_order(outputs)
        self.order = order
        slot = self._slot = {node.id: i for i, node in enumerate(order)}
        self._size = len(order)
        self._constants = [(slot[n.id], n.value) for n in order if n.op == "const"]
        self._input_slots = [slot.get(n.id) for n in inputs]
        self._output_slots = [slot[n.id] for n in outputs]
        keep = set(self._output_slots)
        last_use: dict[int, int] = {}
        computed = [n for n in order if n.op not in ("const", "var")]
        for step, node in enumerate(computed):
            for a in node.args:
                last_use[slot[a.id]] = step
        releases: list[list[int]] = [[] for _ in computed]
        for s, step in last_use.items():
            if s not in keep and order[s].op != "const":
                releases[step].append(s)
        self._steps = [(OPS[n.op].kernel(n), tuple(slot[a.id] for a in n.args), slot[n.id],
                        tuple(releases[i])) for i, n in enumerate(computed)]
        self._nodes = computed

    def run(self, values: list[np.ndarray]) -> list[np.ndarray]:
        """Outputs for the given input arrays (one per input node, batch axes first)."""
        slots: list = [None] * self._size
        for s, v in self._constants:
            slots[s] = v
        for s, v in zip(self._input_slots, values):
            if s is not None:
                slots[s] = v
        with np.errstate(all="ignore"):
            for kernel, args, out, release in self._steps:
                slots[out] = kernel(*[slots[a] for a in args])
                for r in release:
                    slots[r] = None
        return [slots[s] for s in self._output_slots]

    def first_nonfinite(self, values: list[np.ndarray], batch: tuple = ()):
        """Where a non-finite output came from: walking back from the first
        non-finite output through non-finite arguments to the operation that
        made a non-finite value out of finite inputs (so a nan in a branch of
        where that was not taken is never blamed). A Diagnostic naming that
        operation (and the point, in a batch), or None."""
        slots: list = [None] * self._size
        for s, v in self._constants:
            slots[s] = v
        for s, v in zip(self._input_slots, values):
            if s is not None:
                slots[s] = v
        with np.errstate(all="ignore"):
            for kernel, args, out, _ in self._steps:
                slots[out] = kernel(*[slots[a] for a in args])
        finite = [None if v is None else bool(np.all(np.isfinite(v))) for v in slots]
        node = next((n for n, s in zip(self.outputs, self._output_slots) if finite[s] is False), None)
        while node is not None:
            bad_args = [a for a in node.args if finite[self._slot[a.id]] is False]
            if not bad_args:
                return self._diagnose(node, slots, batch)
            node = bad_args[0]
        return None

    def _diagnose(self, node, slots, batch):
        result = slots[self._slot[node.id]]
        inputs = [slots[self._slot[a.id]] for a in node.args]
        culprits = ~np.isfinite(result)
        if node.op == "const":
            return None  # a nan or inf written on purpose (or put at a kink by kink='nan')
        if node.op == "var":
            found = Diagnostic(f"the value given for {node.attr} is not finite", node.span)
        elif node.origin is None:
            found = nonfinite_diagnostic(node.op, result, inputs, node.span, culprits)
        else:
            forward_inputs = [slots[self._slot[a.id]] if a.id in self._slot else None
                              for a in node.origin.args]
            found = derivative_diagnostic(node.origin, result, forward_inputs, culprits)
        return replace(found, point=_point_of(np.broadcast_to(culprits, np.shape(result)), batch))


def _point_of(mask: np.ndarray, batch: tuple) -> int | None:
    """The batch index of the first entry of mask, when its leading axes are the batch."""
    if not batch or mask.shape[:len(batch)] != batch:
        return None
    position = np.unravel_index(int(np.flatnonzero(mask.ravel())[0]), mask.shape)
    return int(np.ravel_multi_index(position[:len(batch)], batch))
