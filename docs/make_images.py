"""Re-make the README's two pictures (needs matplotlib):

    python docs/make_images.py

docs/plot-terminal.png is the coloured terminal output of `diffcli plot`,
drawn character by character in a monospace font on a dark background, as a
terminal shows it; docs/plot-figure.png is what `--output` writes.
"""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from diffcli.cli import cli

HERE = Path(__file__).resolve().parent
TERMINAL_COMMAND = ["plot", "sin(x)", "--over", "x=-3:3", "--order", "2", "--tangent-at", "x=1",
                    "--width", "80", "--height", "24", "--color", "always"]
FIGURE_COMMAND = ["plot", "sin(x)", "--over", "x=-pi:pi", "--order", "2", "--output"]
ANSI = re.compile(r"\x1b\[(\d+)m")
PALETTE = {"30": "#555555", "31": "#ff6b6b", "32": "#8ae234", "33": "#fce94f", "34": "#729fcf",
           "35": "#d98fd0", "36": "#34e2e2", "37": "#eeeeec"}
FOREGROUND, BACKGROUND = "#d3d7cf", "#1e1e1e"


def coloured_cells(text: str) -> list[list[tuple[str, str]]]:
    """Each line as (character, colour) pairs, reading the ANSI colour codes."""
    lines = []
    for line in text.splitlines():
        cells, colour, pos = [], FOREGROUND, 0
        for match in ANSI.finditer(line):
            cells += [(ch, colour) for ch in line[pos:match.start()]]
            colour = PALETTE.get(match.group(1), FOREGROUND)
            pos = match.end()
        cells += [(ch, colour) for ch in line[pos:]]
        lines.append(cells)
    return lines


def terminal_png(path: Path) -> None:
    from matplotlib.figure import Figure

    output = CliRunner().invoke(cli, TERMINAL_COMMAND, color=True).output
    lines = [[("$", "#8ae234"), (" ", FOREGROUND)] + [(ch, FOREGROUND) for ch in "diffcli plot 'sin(x)' "
             "--over x=-3:3 --order 2 --tangent-at x=1"]] + coloured_cells(output)
    columns, rows = max(len(line) for line in lines) + 2, len(lines) + 1
    cell_w, cell_h = 0.085, 0.17  # inches: a terminal cell is about twice as tall as wide
    figure = Figure(figsize=(columns * cell_w, rows * cell_h), dpi=110, facecolor=BACKGROUND)
    for row, cells in enumerate(lines):
        for col, (ch, colour) in enumerate(cells):
            if ch != " ":
                figure.text((col + 1) / columns, 1 - (row + 1) / rows, ch, color=colour,
                            family="DejaVu Sans Mono", fontsize=10.5, va="center", ha="left")
    figure.savefig(path, facecolor=BACKGROUND)


def main() -> None:
    terminal_png(HERE / "plot-terminal.png")
    result = CliRunner().invoke(cli, FIGURE_COMMAND + [str(HERE / "plot-figure.png")])
    assert result.exit_code == 0, result.output


if __name__ == "__main__":
    main()
