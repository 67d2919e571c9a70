"""NumPy evaluation of a graph over leading batch axes.

A Plan is compiled once per set of outputs: a flat list of steps, each a
prebuilt kernel with the slots it reads and writes, and the slots whose last
use it is (released right after, so big batches do not keep every
intermediate alive). Running it is a loop over that list: no graph walk, no
dictionary look-ups, no work per node that depends on the batch size.
"""

from __future__ import annotations

import math
import os
from _thread import allocate_lock
from collections.abc import Callable
from functools import lru_cache
from operator import itemgetter
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

from .. import switches
from ..errors import Diagnostic
from ..graph.nodes import Node, derivative_diagnostic, nonfinite_diagnostic, topological_order
from ..graph.ops import OPS


# Big batches are cut into blocks of about this many elements per array: small
# enough to stay in cache, large enough that NumPy's per-call overhead is noise.
# With enough work, every thread (DIFFCLI_THREADS, default every core) claims
# blocks in turn and runs them, since ufuncs release the GIL.
BLOCK_ELEMENTS = 1 << 16
# Below about this many elements per array, a block is mostly Python overhead:
# smaller batches are not cut further just to give every thread a block.
MIN_BLOCK_ELEMENTS = 1 << 12
# Handing work to another thread costs up to half a millisecond on a busy
# virtual machine: a batch is only spread over threads when its plan does at
# least this many element operations (steps x elements), a few milliseconds.
PARALLEL_MIN_WORK = 1 << 22
# Smaller batches never use native.py's compiled kernels (nor import it).
NATIVE_MIN_ELEMENTS = 1 << 15
_pool = None


def quiet_floating_point():
    """A context in which NumPy ignores floating-point errors: a plan looks for
    non-finite results itself. Entered once per run (about 1.4 us), never per step."""
    return np.errstate(all="ignore")


def _threads() -> int:
    return max(1, int(os.environ.get("DIFFCLI_THREADS", os.cpu_count() or 1)))


def _forget_pool() -> None:
    """A forked child has none of the pool's threads: it makes its own pool."""
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _executor():
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor  # only big batches need threads

        _pool = ThreadPoolExecutor(max_workers=_threads(), thread_name_prefix="diffcli")
    return _pool


class Step(NamedTuple):
    """One operation of a plan, as the back-ends (diagonal, windows, native) read it.

    op: the operation's name (a key of ops.OPS); inputs: the slots it reads, in
    argument order; output: the slot it writes; shape: its value's shape
    (behind any seed and batch axes); releases: the slots whose last use it is
    (dropped right after it, outputs and constants never); node: the graph node
    it computes; kernel: the NumPy function computing it, called as
    kernel(arguments(slots)) when unary, else kernel(*arguments(slots));
    arguments: picks its operands out of the list of slots."""

    op: str
    inputs: tuple
    output: int
    shape: tuple
    releases: tuple
    node: Node
    kernel: Callable
    unary: bool
    arguments: Callable

    def run(self, slots: list, target: np.ndarray | None = None) -> None:
        """Computes slots[output] from the slots (into target when it is given
        and the kernel can write there)."""
        if target is not None:
            apply_into(self.kernel, self.unary, self.arguments, self.output, slots, target)
        else:
            slots[self.output] = self.kernel(self.arguments(slots)) if self.unary else self.kernel(*self.arguments(slots))


def _step(node: Node, slot: dict, releases: tuple) -> Step:
    inputs = tuple(slot[a.id] for a in node.args)
    return Step(node.op, inputs, slot[node.id], node.shape, releases, node, OPS[node.op].kernel(node),
                len(inputs) == 1, itemgetter(*inputs))


def _executable(steps) -> list[tuple]:
    """The steps as the plain tuples the run loop unpacks (a tuple unpacks several
    times faster than a NamedTuple, and the loop does it for every step)."""
    return [(s.kernel, s.unary, s.arguments, s.output, s.releases) for s in steps]


class Plan:
    """A graph's outputs compiled into steps over numbered slots (one per node).

    The interface the back-ends read (none reads the fields that start with _):
    inputs, outputs: the graph's input and output nodes; order: every node,
    slot i holding order[i]; slot: node id -> its slot (read-only); steps: a
    tuple of Step, in the order they run; input_slots: the slot of each input
    (None for an input no output depends on); output_slots: the slot of each
    output; fresh_slots(), targets() and collect(): a run's slot list, the
    arrays its output steps may write into, and its outputs."""

    def __init__(self, outputs: list[Node], inputs: list[Node]):
        self.outputs = outputs
        self.inputs = inputs
        order = topological_order(outputs)
        self.order = order
        slot = self._slot = {node.id: i for i, node in enumerate(order)}
        self.slot = MappingProxyType(slot)
        self._size = len(order)
        self._constants = [(slot[n.id], n.value) for n in order if n.op == "const"]
        self.input_slots = tuple(slot.get(n.id) for n in inputs)
        self.output_slots = tuple(slot[n.id] for n in outputs)
        # An output that is an input, or the same node as an earlier output
        # (d exp(x)/dx is exp(x)), is copied: results must not alias each other or
        # the caller's arrays.
        seen: set[int] = set()
        self._copy_output = []
        for n in outputs:
            self._copy_output.append(n.op == "var" or n.id in seen)
            seen.add(n.id)
        keep = set(self.output_slots)
        last_use: dict[int, int] = {}
        computed = [n for n in order if n.op not in ("const", "var")]
        for step, node in enumerate(computed):
            for a in node.args:
                last_use[slot[a.id]] = step
        releases: list[list[int]] = [[] for _ in computed]
        for s, step in last_use.items():
            if s not in keep and order[s].op != "const":
                releases[step].append(s)
        self.steps = tuple(_step(n, slot, tuple(releases[i])) for i, n in enumerate(computed))
        self._steps = _executable(self.steps)
        self._structured: dict[tuple, list] = {}
        self._windowed: list | None = None
        self._fusion = None  # native.Fusion, False where it does not apply, None before asked
        self._point_size = max((n.size for n in order), default=1)
        self._peaks: dict[tuple, int] = {}  # peak_bytes by input layout
        self._diagonal_slots: dict[tuple, set[int]] = {}  # slots that may hold a Diagonal, by which inputs do

    def run_batched(self, values: list[np.ndarray], batch: tuple) -> list[np.ndarray]:
        """run(), in blocks along the first batch axis when the batch is large.
        Every operation acts on each point separately, so the numbers are the
        same, bit for bit, whatever the blocking."""
        return self._run_batched(values, batch, check=False)[0]

    def run_checked(self, values: list[np.ndarray], batch: tuple) -> tuple[list[np.ndarray], list[bool]]:
        """run_batched(), and per output whether every entry is finite. Checked
        block by block while each block is still in cache, instead of another
        pass over every output afterwards."""
        if not batch:
            with quiet_floating_point():  # once for the run and the check (a sum of big finite numbers may overflow)
                outputs = self._run(values)
                return outputs, [_sum_is_finite(a) for a in outputs]
        outputs, finite = self._run_batched(values, batch, check=True)
        if finite is None:
            with quiet_floating_point():  # a sum of big finite numbers may overflow: no warning for that
                finite = [_sum_is_finite(a) for a in outputs]
        return outputs, finite

    def _run_batched(self, values, batch, check: bool) -> tuple[list[np.ndarray], list[bool] | None]:
        if not batch:
            return self.run(values), None
        sliced, per_point, block, threads = self._blocking(values, batch)
        n = batch[0]
        fusion = self._fusion_for(values, sliced, n * per_point)
        if fusion is not None:
            run_whole = fusion.run
        else:
            windows = switches.enabled("windows")

            def run_whole(values, into=None):
                return self.run(values, into, windows=windows)
        if block is None:
            return run_whole(values), None
        return self._run_blocks(values, sliced, len(batch), n, block, threads, check, run_whole)

    def _blocking(self, values, batch) -> tuple[list[bool], int, int | None, int]:
        """How a batch runs: (which inputs are cut into blocks, elements per point
        of the largest array, rows per block or None to run it whole, threads)."""
        sliced = self._sliced(values, batch)
        lead = max((int(np.prod(np.shape(v)[:np.ndim(v) - len(node.shape) - len(batch)]))
                    for v, node, s in zip(values, self.inputs, sliced) if not s and np.ndim(v) > len(node.shape)),
                   default=1)
        per_point = max(1, self._point_size * lead * int(np.prod(batch[1:], dtype=np.int64)))
        n, threads = batch[0], _threads()
        block = max(2, BLOCK_ELEMENTS // per_point)
        parallel = threads > 1 and len(self._steps) * n * per_point >= PARALLEL_MIN_WORK
        if parallel:
            # Enough work to keep every thread busy for a while, unless blocks
            # would get too small to pay: each thread claims blocks in turn.
            block = min(block, max(-(-n // threads), MIN_BLOCK_ELEMENTS // per_point, 2))
        elif n <= 4 * block:
            return sliced, per_point, None, 1
        if n <= block:
            return sliced, per_point, None, 1
        return sliced, per_point, block, threads if parallel else 1

    def _fusion_for(self, values, sliced, elements: int):
        """native.Fusion for this batch when it applies and its kernels are built
        (a big enough batch waits for them), else None."""
        if self._fusion is False or elements < NATIVE_MIN_ELEMENTS:
            return None
        from . import native

        if self._fusion is None:
            self._fusion = (native.enabled() and native.fusion_of(self)) or False
        fusion = self._fusion
        if fusion is False or not fusion.accepts(values, sliced):
            return None
        return fusion if fusion.ready(native.patience(len(self._steps) * elements, len(self._steps))) else None

    def _run_blocks(self, values, sliced, batch_ndim, n, block, threads, check, run):
        """The batch block by block: the first on this thread, the rest claimed in
        turn by this thread and threads - 1 pool threads (one hand-off per thread,
        not per block; a thread slowed down by the machine just claims fewer
        blocks). The first block shows each output's layout; blocks finished
        before the full-size outputs exist are copied into them, later ones
        compute straight into them. With check, also per output whether every
        block's sum was finite (each thread keeps its own flags, combined at the end)."""
        def run_block(start, stop, into=None):
            return run([v[start:stop] if s else v for v, s in zip(values, sliced)], into)

        def block_of(start, stop):
            """Where each output of the block start:stop goes in the full outputs."""
            return [None if axis is None else out[(slice(None),) * axis + (slice(start, stop),)]
                    for out, axis in zip(outputs, layout)]

        def fill(start, stop, results):
            for place, part in zip(block_of(start, stop), results):
                if place is not None and part is not place:
                    place[...] = part

        def claim() -> int:
            """The start of the next block nobody has taken (n once there is none)."""
            with claiming:
                start = next_start[0]
                next_start[0] = min(start + block, n)
            return start

        def stop_claiming():
            with claiming:
                next_start[0] = n

        def run_claimed():
            finite = [True] * len(self.outputs)
            try:
                while (start := claim()) < n:
                    stop = min(start + block, n)
                    if ready is None or (ready.is_set() and outputs is not None):
                        results = run_block(start, stop, block_of(start, stop))
                    else:
                        results = run_block(start, stop)
                        ready.wait()
                        if outputs is None:  # the first block failed, and its error is raised
                            return finite
                    fill(start, stop, results)
                    if check:
                        _check_block(finite, results, layout)
            except BaseException:
                stop_claiming()  # an error or Ctrl-C reaches the caller without the rest of the batch
                raise
            return finite

        outputs = layout = ready = None
        first_stop = block
        next_start, claiming = [first_stop], allocate_lock()
        pending = []
        try:
            if threads > 1:
                import threading  # only big batches need it

                ready = threading.Event()
                helpers = min(threads - 1, -(-(n - first_stop) // block))
                pending = [_executor().submit(run_claimed) for _ in range(helpers)]
            first = run_block(0, first_stop)
            layout = [_batch_axis(np.asarray(a), node, batch_ndim, first_stop) for a, node in zip(first, self.outputs)]
            outputs = [np.asarray(a) if axis is None else
                       np.empty(a.shape[:axis] + (n,) + a.shape[axis + 1:]) for a, axis in zip(first, layout)]
            fill(0, first_stop, first)
            finite = [True] * len(self.outputs)
            if check:
                _check_block(finite, first, None)
        except BaseException:
            stop_claiming()
            raise
        finally:
            if ready is not None:
                ready.set()
        shares = []
        try:
            shares.append(run_claimed())
        finally:
            shares += [future.result() for future in pending]
        if not check:
            return outputs, None
        return outputs, [f and all(share[i] for share in shares) for i, f in enumerate(finite)]

    def _sliced(self, values, batch) -> list[bool]:
        """Which inputs carry the first batch axis (and are cut into blocks); the
        others (constants, seeds, axes of size 1) broadcast against every block."""
        return [np.ndim(v) == len(batch) + len(node.shape) and np.shape(v)[0] == batch[0]
                for v, node in zip(values, self.inputs)]

    def run(self, values: list[np.ndarray], into: list | None = None, windows: bool = False) -> list[np.ndarray]:
        """Outputs for the given input arrays (one per input node, batch axes first).
        into: an array (or None) per output, which a ufunc computing that output
        writes its result into instead of a fresh array (saving a copy).
        windows: let steps on windows of rows run over their spans (windows.py),
        which pays for batches, not for one point."""
        with quiet_floating_point():
            return self._run(values, into, windows)

    def _run(self, values: list[np.ndarray], into: list | None = None, windows: bool = False) -> list[np.ndarray]:
        """run(), for a caller that quiets floating-point errors."""
        steps = self._steps_for(values, windows)
        slots = self._execute(values, release=True, targets=self.targets(into), steps=steps)
        if steps is not self._steps:
            for s in self.output_slots:
                slots[s] = np.asarray(slots[s])  # a Diagonal output made full, a Window output its view
        return self.collect(slots)

    def targets(self, into: list | None) -> dict | None:
        """slot -> the array (of `into`) a step making that output may write into."""
        if into is None:
            return None
        return {s: place for s, place, copy in zip(self.output_slots, into, self._copy_output)
                if place is not None and not copy}

    def collect(self, slots: list) -> list:
        """The outputs from the slots: copies where an output is an input or an
        earlier output, so that results never alias each other or the caller's arrays."""
        return [slots[s].copy() if copy else slots[s] for s, copy in zip(self.output_slots, self._copy_output)]

    def fresh_slots(self, values: list) -> list:
        """A slot per node: constants and the given inputs filled in, the rest None."""
        slots: list = [None] * self._size
        for s, v in self._constants:
            slots[s] = v
        for s, v in zip(self.input_slots, values):
            if s is not None:
                slots[s] = v
        return slots

    def _steps_for(self, values, windows: bool = False) -> list:
        """The plain steps, or, when some inputs are diagonal.Diagonal seeds, steps
        that keep them diagonal as far as they stay so (compiled once per set of
        such inputs), or with windows, steps that use windows.Window (compiled once)."""
        for v in values:
            if type(v) is not np.ndarray:
                from .diagonal import Diagonal

                which = tuple(i for i, v in enumerate(values) if type(v) is Diagonal)
                if which:
                    steps = self._structured.get(which)
                    if steps is None:
                        steps = self._structured[which] = self._structured_steps(which)
                    return steps
                break
        return self._windowed_steps() if windows else self._steps

    def _windowed_steps(self) -> list:
        if self._windowed is None:
            from .windows import wrap_step

            self._windowed = self._specialised_steps(set(), wrap_step)[0]
        return self._windowed

    def _structured_steps(self, which: tuple) -> list:
        from .diagonal import wrap_step

        steps, self._diagonal_slots[which] = self._specialised_steps({self.input_slots[i] for i in which} - {None},
                                                                     wrap_step)
        return steps

    def _specialised_steps(self, special: set[int], wrap) -> tuple[list, set[int]]:
        """The steps, each one that may receive a special operand (a Diagonal, a
        Window: from the slots in special, or from a step that passes one on)
        replaced as wrap(node, kernel, unary, receives: a bool per argument)
        says; wrap returns the kernel to use and whether its result may be special.
        Also the slots that may hold a special operand."""
        special = set(special)
        steps = []
        for step in self.steps:
            wrapped, passes_on = wrap(step.node, step.kernel, step.unary, [s in special for s in step.inputs])
            if passes_on:
                special.add(step.output)
            steps.append(step if wrapped is step.kernel else step._replace(kernel=wrapped))
        return _executable(steps), special

    # ------------------------------------------------------------ memory estimate

    def peak_bytes(self, values: list, batch: tuple = ()) -> int:
        """An estimate, made without evaluating anything, of the most memory a run
        with these inputs holds at once: the inputs, plus the arrays alive together
        as the steps run (a step's result lives until its last use). A batch run
        in blocks counts its threads' blocks in flight and the full-size outputs.
        A node's array has the node's shape behind the leading (seed and batch)
        axes its arguments broadcast to; a seed kept diagonal (diagonal.py) counts
        as its diagonal, views as copies (so it errs high); temporaries inside one
        NumPy call are not counted. Cached per layout of the inputs."""
        key = (batch, tuple([(v.shape, type(v)) for v in values]))
        found = self._peaks.get(key)
        if found is None:
            found = self._peaks[key] = self._estimate(values, batch)
        return found

    def _estimate(self, values: list, batch: tuple) -> int:
        leads = [_leading_axes(v, node) for v, node in zip(values, self.inputs)]
        diagonal = self._diagonal_inputs(values)
        inputs = sum(_array_bytes(lead, node.size, i in diagonal)
                     for i, (lead, node) in enumerate(zip(leads, self.inputs)))
        if diagonal:
            self._steps_for(values)  # finds which slots may hold a Diagonal
        special = self._diagonal_slots.get(diagonal, set())
        peak, outputs = self._live_peak(leads, special)
        if not batch:
            return inputs + peak
        sliced, _, block, threads = self._blocking(values, batch)
        if block is None:
            return inputs + peak
        block_leads = [(block,) + lead[1:] if s else lead for lead, s in zip(leads, sliced)]
        return inputs + outputs + threads * self._live_peak(block_leads, special)[0]

    def _diagonal_inputs(self, values) -> tuple:
        if all(type(v) is np.ndarray for v in values):
            return ()
        from .diagonal import Diagonal

        return tuple(i for i, v in enumerate(values) if type(v) is Diagonal)

    def _live_peak(self, leads: list[tuple], special: set[int]) -> tuple[int, int]:
        """(the most bytes the steps hold at once, the outputs' bytes), for inputs
        with these leading axes (the inputs themselves not counted)."""
        slot = self._slot
        lead_of: list[tuple] = [()] * self._size
        for s, lead in zip(self.input_slots, leads):
            if s is not None:
                lead_of[s] = lead
        held = [0] * self._size  # inputs and constants: 0, they exist before the run
        # A view (an op whose kernel returns_view) holds no memory of its own but
        # keeps its source's alive. Memory is counted per array (an id), freed when the last
        # slot that shows it is released; ids below _size are the inputs' own.
        array_of = list(range(self._size))
        array_bytes: dict[int, int] = {}
        showing: dict[int, int] = {}
        views = set()
        live = peak = 0
        for step, (node, out, releases) in enumerate((s.node, s.output, s.releases) for s in self.steps):
            lead = ()
            for a in node.args:
                other = lead_of[slot[a.id]]
                if other and other != lead:
                    lead = _broadcast(lead, other) if lead else other
            lead_of[out] = lead
            source = slot[node.args[0].id] if getattr(OPS[node.op].kernel, "returns_view", False) else None
            if source is not None and source not in special:
                views.add(out)
                held[out] = 0
                array_of[out] = array_of[source]
                showing[array_of[out]] = showing.get(array_of[out], 1) + 1
            else:
                held[out] = _array_bytes(lead, node.size, out in special)
                array_of[out] = self._size + step
                array_bytes[array_of[out]], showing[array_of[out]] = held[out], 1
                live += held[out]
            peak = max(peak, live)
            for r in releases:
                shown = array_of[r]
                showing[shown] = showing.get(shown, 1) - 1
                if showing[shown] == 0:
                    live -= array_bytes.get(shown, 0)
        # Outputs are made dense, and copied where they are inputs, views or repeat an output.
        outputs = [_array_bytes(lead_of[s], node.size, False) for s, node in zip(self.output_slots, self.outputs)]
        extra = sum(size - held[s] if s in special or s in views else size * copy
                    for s, size, copy in zip(self.output_slots, outputs, self._copy_output))
        return max(peak, live + extra), sum(outputs)

    def _execute(self, values: list[np.ndarray], release: bool, targets: dict | None = None,
                 steps: list | None = None) -> list:
        """Every step in order; with release, each intermediate is dropped after its
        last use (without, all are kept, for diagnosis); targets: slot -> array that
        a ufunc step (or a kernel marked writes_into) making that slot writes into.
        The caller quiets floating-point errors (once for the whole run)."""
        if steps is None:
            steps = self._steps_for(values)
        slots = self.fresh_slots(values)
        for kernel, unary, arguments, out, releases in steps:
            if targets and out in targets:
                apply_into(kernel, unary, arguments, out, slots, targets[out])
            else:
                slots[out] = kernel(arguments(slots)) if unary else kernel(*arguments(slots))
            if release:
                for r in releases:
                    slots[r] = None
        return slots

    def first_nonfinite(self, values: list[np.ndarray], batch: tuple = (), outputs=None):
        """Where a non-finite output came from: walking back from the first
        non-finite output through non-finite arguments to the operation that
        made a non-finite value out of finite inputs (so a nan in a branch of
        where that was not taken is never blamed). A Diagnostic naming that
        operation (and the point, in a batch), or None. In a batch, only the
        first point with a non-finite output is evaluated again (with every
        intermediate kept), so memory stays that of one point."""
        point = self._first_bad_point(outputs, batch) if batch and outputs is not None else None
        if point is not None:
            values = [v[point:point + 1] if s else v for v, s in zip(values, self._sliced(values, batch))]
            batch = (1,) + tuple(batch[1:])
        found = self._trace(values, batch)
        if found is not None and point is not None:
            found = found._replace(point=point if found.point is None else point + found.point)
        return found

    def _first_bad_point(self, outputs, batch) -> int | None:
        for array, node in zip(outputs, self.outputs):
            array = np.asarray(array)
            axis = array.ndim - len(node.shape) - len(batch)
            if axis < 0 or array.shape[axis] != batch[0]:
                continue
            bad = ~np.isfinite(np.moveaxis(array, axis, 0).reshape(batch[0], -1)).all(axis=1)
            if bad.any():
                return int(np.argmax(bad))
        return None

    def _trace(self, values, batch):
        with quiet_floating_point():
            slots = self._execute(values, release=False)
        finite = [None if v is None else bool(np.all(np.isfinite(v))) for v in slots]
        node = next((n for n, s in zip(self.outputs, self.output_slots) if finite[s] is False), None)
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
        return found._replace(point=_point_of(np.broadcast_to(culprits, np.shape(result)), batch))


# The bytes of an ndarray besides its data (sys.getsizeof(np.empty(0))).
ARRAY_OVERHEAD = 112


def _leading_axes(value, node: Node) -> tuple:
    """The axes of an input's array in front of its node's shape (seed and batch axes)."""
    shape = value.shape
    return tuple(shape[:len(shape) - len(node.shape)])


def _array_bytes(lead: tuple, size: int, diagonal: bool) -> int:
    """The bytes of a node's array with these leading axes (as a diagonal.Diagonal,
    without its row axis, the first)."""
    elements = math.prod(lead[1:] if diagonal and lead else lead) * size
    return 8 * elements + ARRAY_OVERHEAD


@lru_cache(maxsize=1024)
def _broadcast(a: tuple, b: tuple) -> tuple:
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError:  # not expected; an estimate errs high
        n = max(len(a), len(b))
        a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
        return tuple(max(x, y) for x, y in zip(a, b))


def _sum_is_finite(array) -> bool:
    """Whether every entry of array is finite: a finite sum says so in one cheap
    pass; a sum that is not (or overflowed) is confirmed entry by entry, so the
    answer never depends on how a batch was cut into blocks."""
    array = np.asarray(array)
    if array.size == 1:
        return math.isfinite(array.item())
    return math.isfinite(np.add.reduce(array, axis=None)) or bool(np.isfinite(array).all())


def _check_block(finite: list, results, layout) -> None:
    """finite[i] &= every entry of output i of a block is finite; outputs that do
    not vary over the batch (layout None) are the first block's, checked there only."""
    with quiet_floating_point():
        for i, part in enumerate(results):
            if finite[i] and (layout is None or layout[i] is not None):
                finite[i] = _sum_is_finite(part)


def apply_into(kernel, unary: bool, arguments, out: int, slots: list, target: np.ndarray) -> None:
    """A step whose result is an output: a ufunc (or a kernel marked writes_into)
    writes it straight into target; any other kernel makes a fresh array."""
    if type(kernel) is np.ufunc or getattr(kernel, "writes_into", False):
        slots[out] = _into(kernel, (arguments(slots),) if unary else arguments(slots), target)
    else:
        slots[out] = kernel(arguments(slots)) if unary else kernel(*arguments(slots))


def _into(ufunc, arguments: tuple, target: np.ndarray) -> np.ndarray:
    """ufunc(*arguments) written into target, or a fresh array when its shape
    differs (ufunc: a NumPy ufunc, or a kernel marked writes_into that takes out=)."""
    try:
        return ufunc(*arguments, out=target)
    except ValueError:  # the result broadcasts to another shape than the target's
        return ufunc(*arguments)


def _batch_axis(first: np.ndarray, node: Node, batch_ndim: int, block: int) -> int | None:
    """Where an output's batch axis is (after any seed axes), or None for an
    output that does not vary over the batch (the same in every block)."""
    axis = first.ndim - len(node.shape) - batch_ndim
    if axis < 0 or first.shape[axis] != block:
        return None
    return axis


def _point_of(mask: np.ndarray, batch: tuple) -> int | None:
    """The batch index of the first entry of mask, when its leading axes are the batch."""
    if not batch or mask.shape[:len(batch)] != batch:
        return None
    position = np.unravel_index(int(np.flatnonzero(mask.ravel())[0]), mask.shape)
    return int(np.ravel_multi_index(position[:len(batch)], batch))
