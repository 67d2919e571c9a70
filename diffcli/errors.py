"""Errors and diagnostics. Each carries the source span it is about, so that the
CLI can point a caret at the offending text. Only cli.py turns them into
messages and exit statuses; the library just raises them."""

from __future__ import annotations

from collections import namedtuple

# Exit statuses, documented in the README and in `diffcli --help`.
EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_BAD_DATA = 3
EXIT_OUTPUT_FAILED = 4  # stdout could not be written (a full disk, an I/O error)
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # SIGTERM: 128 + 15, as a shell reports a process it ended

Span = tuple[int, int]  # [start, end) character offsets into the source text


class DiffcliError(Exception):
    """Base of every error diffcli raises on purpose."""

    exit_status = EXIT_USAGE

    def __init__(self, message: str, span: Span | None = None, source: str | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.source = source

    def with_source(self, source: str) -> DiffcliError:
        if self.source is None:
            self.source = source
        return self

    def __str__(self) -> str:
        return format_message(self.message, self.span, self.source)


class ExpressionError(DiffcliError):
    """The expression does not parse, names something unknown, or misuses a name."""


class ShapeError(DiffcliError):
    """Operand shapes do not fit the operation; found before any numeric work."""


class UsageError(DiffcliError):
    """Command-line values (--at, --seed, --wrt ...) that do not fit the expression."""


class MissingValuesError(UsageError):
    """Variables of the expression that were given no value."""

    def __init__(self, names: list[str], message: str):
        super().__init__(message)
        self.names = names


class BudgetError(UsageError):
    """A request whose memory estimate exceeds the budget (max_memory, the CLI's
    --max-memory), or whose derivative graph would take too long to build:
    refused before it runs, with the estimate and the limit (exit status 2)."""


class NumericError(DiffcliError):
    """A numeric failure the user asked to be strict about."""

    exit_status = EXIT_CHECK_FAILED


class Diagnostic(namedtuple("Diagnostic", "message span point", defaults=(None, None))):
    """A warning about one operation of the expression (e.g. log of a negative).
    span: where in the source; point: in a batch, the (flat) index of the first
    point concerned."""

    __slots__ = ()

    def format(self, source: str | None) -> str:
        return format_message(self.message, self.span, source)


def format_message(message: str, span: Span | None, source: str | None) -> str:
    """The message, followed (when the span is known) by the source line with a
    caret under the offending columns."""
    if span is None or source is None:
        return message
    start, end = span
    start = max(0, min(start, len(source)))
    line_start = source.rfind("\n", 0, start) + 1
    line_end = source.find("\n", start)
    if line_end == -1:
        line_end = len(source)
    line = source[line_start:line_end]
    column = start - line_start
    width = max(1, min(end, line_end) - start)
    prefix = ""
    if "\n" in source:
        prefix = f"line {source.count(chr(10), 0, start) + 1}: "
    # Very long lines are cut to a window around the caret.
    if len(line) > 100:
        lo = max(0, column - 50)
        shown = line[lo:lo + 100]
        left = "..." if lo > 0 else ""
        right = "..." if lo + 100 < len(line) else ""
        line = left + shown + right
        column = column - lo + len(left)
        width = min(width, 100 - column + len(left))
    line = "".join(ch if ch.isprintable() else "?" for ch in line)
    return f"{message}\n  {prefix}{line}\n  {' ' * len(prefix)}{' ' * column}{'^' * width}"


# A byte that is not UTF-8, as errors="surrogateescape" keeps it in text.
ESCAPED_BYTE = "[\udc80-\udcff]"


def not_utf8(data: bytes) -> tuple[str, str]:
    """('byte 0xNN', UTF-8's reason for refusing it), for bytes that start at it."""
    try:
        data[:4].decode("utf-8")
        reason = "not UTF-8"
    except UnicodeDecodeError as e:
        reason = e.reason
    return f"byte 0x{data[0]:02x}", reason
