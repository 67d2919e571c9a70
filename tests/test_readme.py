"""The README is executable documentation: every `$ diffcli ...` line in a
```console block is run, and its output must be what the README shows; so is
every ```pycon session (as a doctest)."""

from __future__ import annotations

import doctest
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from diffcli import cli as cli_module

README = Path(__file__).resolve().parent.parent / "README.md"
CI_RUN = Path(__file__).resolve().parent.parent / ".ci" / "run"


def _examples():
    text = README.read_text(encoding="utf-8")
    examples = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        command, output = None, []
        for line in block.splitlines():
            if line.startswith("$ "):
                if command:
                    examples.append((command, output))
                command, output = line[2:], []
            else:
                output.append(line)
        if command:
            examples.append((command, output))
    return examples


EXAMPLES = _examples()


def test_readme_has_examples():
    assert len(EXAMPLES) >= 8


@pytest.mark.parametrize("command,expected", EXAMPLES, ids=[c for c, _ in EXAMPLES])
def test_readme_example(command, expected, monkeypatch):
    # README examples show what a person sees on an 80-column terminal.
    monkeypatch.setattr(cli_module, "_stdout_is_terminal", lambda: True)
    monkeypatch.chdir(README.parent)  # examples/ files are named relative to the repository
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("NO_COLOR", raising=False)
    args = shlex.split(command)
    assert args[0] == "diffcli"
    result = CliRunner().invoke(cli_module.cli, args[1:], color=False)
    got = [line.rstrip() for line in result.output.splitlines()]
    want = [line.rstrip() for line in expected]
    while got and not got[-1]:
        got.pop()
    while want and not want[-1]:
        want.pop()
    assert got == want


def test_ci_runs_the_test_command_written_in_the_readme():
    text = README.read_text(encoding="utf-8")
    setup = re.findall(r"```sh\n(.*?)\n```", text, flags=re.S)
    assert setup[0].startswith("pip install . && diffcli grad")
    test_command = setup[1]
    assert test_command in CI_RUN.read_text(encoding="utf-8")


def test_readme_python_sessions():
    text = README.read_text(encoding="utf-8")
    sessions = re.findall(r"```pycon\n(.*?)```", text, flags=re.S)
    assert sessions
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for i, session in enumerate(sessions):
        test = parser.get_doctest(session, {}, f"README session {i + 1}", str(README), 0)
        assert test.examples
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_the_exit_status_table_is_the_one_the_code_uses():
    from diffcli import errors

    text = README.read_text(encoding="utf-8")
    section = text.split("## Errors and exit statuses", 1)[1].split("\n## ", 1)[0]
    documented = {int(status) for status in re.findall(r"^\| (\d+) \|", section, flags=re.M)}
    used = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    assert documented == used
