"""docs/frontends.md is runnable: its Python blocks and its inflor-deploy commands run as written."""

import json
import re
import shlex
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from inflor_deploy_cli.main import cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "frontends.md"


FRAMEWORKS = "## Networks from SpikingJelly and snnTorch"


def blocks(language: str, frameworks: bool = False) -> list[str]:
    """The ``language`` blocks of the user-network part of the page, or of its SpikingJelly/snnTorch section."""
    own, section = DOC.read_text().split(f"\n{FRAMEWORKS}\n")
    text = section.split("\n## ")[0] if frameworks else own
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _run_as_written(python: list[str], commands: list[str], tmp_path, monkeypatch) -> None:
    """Writes the blocks that start with ``# NAME.py`` as files, runs the others in order, then the commands."""
    files = {code.splitlines()[0][2:]: code for code in python if re.match(r"# \w+\.py\n", code)}
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        for code in python:
            if code not in files.values():
                exec(compile(code, str(DOC), "exec"), {"__name__": "__doc_example__"})  # noqa: S102 - our own doc
        for command in commands:
            result = CliRunner().invoke(cli, shlex.split(command)[1:])
            assert result.exit_code == 0, f"{command}\n{result.output}"
    finally:
        for name in files:
            sys.modules.pop(name.removesuffix(".py"), None)


def _commands(frameworks: bool = False) -> list[str]:
    lines = [line for block in blocks("bash", frameworks) for line in block.splitlines()]
    return [line for line in lines if line.startswith("inflor-deploy ")]


@pytest.mark.lava
def test_the_user_network_example_runs_as_written(tmp_path, monkeypatch):
    python = blocks("python")
    assert python[0].startswith("# mynet.py")
    commands = _commands()
    assert len(commands) == 4
    _run_as_written(python, commands, tmp_path, monkeypatch)
    assert (tmp_path / "out" / "verify.json").is_file() and (tmp_path / "out" / "report" / "report.html").is_file()


@pytest.mark.lava
def test_the_spikingjelly_and_snntorch_examples_run_as_written(tmp_path, monkeypatch):
    pytest.importorskip("spikingjelly")  # the extras `make setup` installs
    pytest.importorskip("snntorch")
    python = blocks("python", frameworks=True)
    assert [code.splitlines()[0] for code in python if code.startswith("# ")] == ["# sjnet.py", "# sntnet.py"]
    commands = _commands(frameworks=True)
    assert len(commands) == 4 and len(python) == 4
    _run_as_written(python, commands, tmp_path, monkeypatch)
    for out in ("out-sj", "out-snt"):
        levels = json.loads((tmp_path / out / "verify.json").read_text())["levels"]
        assert [level["ok"] for level in levels] == [True] * 5, levels  # levels 0-4, Lava included
