"""docs/frontends.md is runnable: its Python blocks and its inflor-deploy commands run as written."""

import re
import shlex
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from inflor_deploy_cli.main import cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "frontends.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.lava
def test_the_user_network_example_runs_as_written(tmp_path, monkeypatch):
    python = blocks("python")
    assert python[0].startswith("# mynet.py")
    (tmp_path / "mynet.py").write_text(python[0])
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        for code in python[1:]:
            exec(compile(code, str(DOC), "exec"), {"__name__": "__doc_example__"})  # noqa: S102 - our own doc
        commands = [line for block in blocks("bash") for line in block.splitlines() if line.startswith("inflor-deploy ")]
        assert len(commands) == 4
        for command in commands:
            result = CliRunner().invoke(cli, shlex.split(command)[1:])
            assert result.exit_code == 0, f"{command}\n{result.output}"
    finally:
        sys.modules.pop("mynet", None)
    assert (tmp_path / "out" / "verify.json").is_file() and (tmp_path / "out" / "report" / "report.html").is_file()
