"""Many points: chunks from points.py, each evaluated in one vectorised pass of
the API (the graph and plan are built once, for the first chunk), streamed to
a writer from render.py. No click, no terminal: cli.py wires it up."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..api import Function
from ..errors import Diagnostic
from .points import BadRecord, Chunk
from .render import has_nonfinite


@dataclass
class Outcome:
    points: int = 0
    skipped: int = 0
    stopped_at: BadRecord | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)  # the first chunk's warnings
    kinks: dict = field(default_factory=dict)  # the first report per operation (by span)
    failure: Diagnostic | None = None  # why a strict run stopped

    @property
    def had_bad_records(self) -> bool:
        return self.skipped > 0 or self.stopped_at is not None


def run_points(function: Function, kind: str, chunks: Iterable[Chunk], writer, *,
               request: dict | None = None, skip_bad: bool = False, stop_on_kink: bool = False,
               stop_on_nonfinite: bool = False,
               on_bad: Callable[[BadRecord], None] = lambda bad: None,
               on_progress: Callable[[int], None] = lambda n: None) -> Outcome:
    """Evaluate every good record and write it; stop at the first bad record
    (after writing every good one before it) unless skip_bad. request holds
    Function.compute's keyword arguments (wrt, seed, tangents, order).
    stop_on_kink / stop_on_nonfinite: stop before writing a chunk with a kink /
    a non-finite number (--kink error, --strict), with outcome.failure set."""
    outcome = Outcome()
    for chunk in chunks:
        if len(chunk):
            result = function.compute(kind, chunk.values, batch_ndim=1, **(request or {}))
            if not outcome.diagnostics:
                outcome.diagnostics = [_with_line(d, chunk) for d in result.diagnostics]
            for kink in result.kinks:
                outcome.kinks.setdefault(kink.span, _with_line(kink, chunk))
            if stop_on_kink and result.kinks:
                outcome.failure = _with_line(result.kinks[0], chunk)
                break
            if stop_on_nonfinite and has_nonfinite(result):
                outcome.failure = Diagnostic("a result is not finite (--strict)")
                break
            writer.write(result, chunk.kept)
            outcome.points += len(chunk)
            on_progress(outcome.points)
        if chunk.bad is not None:
            on_bad(chunk.bad)
            if not skip_bad:
                outcome.stopped_at = chunk.bad
                break
            writer.error(chunk.bad.line, chunk.bad.message)
            outcome.skipped += 1
    writer.close()
    return outcome


def _with_line(diagnostic: Diagnostic, chunk: Chunk) -> Diagnostic:
    if diagnostic.point is None:
        return diagnostic
    return diagnostic._replace(message=f"{chunk.unit} {chunk.lines[diagnostic.point]}: {diagnostic.message}")
