"""What a request gives back: the value and the derivatives (Result)."""

from __future__ import annotations

import numpy as np


class Result:
    """The value of the expression and its derivatives.

    kind is 'value', 'gradient', 'jacobian', 'vjp', 'hessian' (derivatives[a][b]),
    'derivative' (derivatives[x] is the order-N tensor), 'jvp' (derivatives is
    empty; see `jvp`), 'hvp', 'along' (derivatives[k] is the order-k
    directional derivative) or 'series' (derivatives['coefficients']: the Taylor
    coefficients f^(k)/k!, k = 0..order, on the axis after the batch's). Index a Result by variable name (by order for 'along').
    shapes: each variable's value shape; diagnostics: non-finite values met;
    kinks: points where an operation is not differentiable."""

    __slots__ = ("value", "kind", "derivatives", "diagnostics", "order", "jvp", "shapes", "kinks")

    def __init__(self, value, kind="value", derivatives=None, diagnostics=None, order=1, jvp=None,
                 shapes=None, kinks=None):
        self.value = value
        self.kind = kind
        self.derivatives = {} if derivatives is None else derivatives
        self.diagnostics = [] if diagnostics is None else diagnostics
        self.order = order
        self.jvp = jvp
        self.shapes = {} if shapes is None else shapes
        self.kinks = [] if kinks is None else kinks

    def with_batch_axis(self) -> Result:
        """The same result as a batch of one point (for the streaming writers)."""
        def add_axis(tree):
            return {k: add_axis(v) for k, v in tree.items()} if isinstance(tree, dict) else np.asarray(tree)[None]
        value = None if self.value is None else np.asarray(self.value)[None]  # grad(value=False)
        return self.replace(value=value, derivatives=add_axis(self.derivatives),
                            jvp=None if self.jvp is None else np.asarray(self.jvp)[None], diagnostics=[])

    def replace(self, **changes) -> Result:
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return Result(**fields)

    def __getitem__(self, name: str):
        return self.derivatives[name]

    def __iter__(self):
        return iter(self.derivatives)

    def __len__(self):
        return len(self.derivatives)

    def keys(self):
        return self.derivatives.keys()

    def __repr__(self):
        return f"Result(kind={self.kind!r}, value={self.value!r}, derivatives={self.derivatives!r})"


def materialise(array, shape) -> np.ndarray:
    """A writable float64 array of the full shape that no one else holds (results
    may be broadcast views, or constants shared by the graph)."""
    array = np.asarray(array)
    if array.shape == shape and array.dtype == np.float64 and array.flags.writeable \
            and array.flags.owndata:
        return array
    return np.array(np.broadcast_to(array, shape), dtype=np.float64)
