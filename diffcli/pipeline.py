"""Many points: chunks from points.py, each evaluated in one vectorised pass of
the API (the graph and plan are built once, for the first chunk), streamed to
a writer from render.py. No click, no terminal: cli.py wires it up."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from .api import Function
from .errors import Diagnostic
from .points import BadRecord, Chunk


@dataclass
class Outcome:
    points: int = 0
    skipped: int = 0
    stopped_at: BadRecord | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def had_bad_records(self) -> bool:
        return self.skipped > 0 or self.stopped_at is not None


def run_points(function: Function, kind: str, chunks: Iterable[Chunk], writer, *,
               request: dict | None = None, skip_bad: bool = False,
               on_bad: Callable[[BadRecord], None] = lambda bad: None,
               on_progress: Callable[[int], None] = lambda n: None) -> Outcome:
    """Evaluate every good record and write it; stop at the first bad record
    (after writing every good one before it) unless skip_bad. request holds
    Function.compute's keyword arguments (wrt, seed, tangents, order)."""
    outcome = Outcome()
    for chunk in chunks:
        if len(chunk):
            result = function.compute(kind, chunk.values, batch_ndim=1, **(request or {}))
            if not outcome.diagnostics:
                outcome.diagnostics = [_with_line(d, chunk) for d in result.diagnostics]
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
    return replace(diagnostic, message=f"line {chunk.lines[diagnostic.point]}: {diagnostic.message}")
