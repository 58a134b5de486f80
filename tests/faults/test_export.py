"""`export`: the output is checked before the work, locked against a second writer, and a failed write leaves nothing.

The same guarantees as `compile` (tests/faults/test_outputs.py): a path
that cannot be written is refused before the Lava check runs, a second
export to the same file fails at once naming the first, a full disk while
writing gives one line and no file, and no temporary or lock file stays
beside the output. (A signal during the check: tests/faults/test_signals.py.)
"""

import errno
import os
import time

import pytest
from click.testing import CliRunner

from inflor_deploy.outputs import OutputError, output_lock
from inflor_deploy_cli.main import cli
from tests.faults.conftest import assert_one_line, partial_entries, run_cli

# Soft-reset layers written as hard reset: needs a Lava check of N samples, the work a refusal must precede.
EXPORT = ["--format", "netx", "--allow-inexact", "--check", "2"]


def _invoke(args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def test_an_export_fails_at_once_naming_the_export_that_holds_the_file(digits_artifact, tmp_path):
    out = tmp_path / "model.net"
    with output_lock(out, wait=False):  # this test plays the first export
        run = run_cli(["export", str(digits_artifact), *EXPORT, "-o", str(out)], tmp_path)
    assert run.returncode == 1
    assert_one_line(run, f"{out} is being written by pid {os.getpid()}", "--force")
    assert "NetX HDF5" not in run.stdout  # refused before planning or checking anything
    assert not out.exists() and partial_entries(tmp_path) == []


def test_a_read_only_directory_is_refused_before_the_check(digits_artifact, tmp_path, read_only_dir):
    parent = read_only_dir(tmp_path / "ro")
    started = time.monotonic()
    code, output = _invoke(["export", digits_artifact, *EXPORT, "-o", parent / "model.net"])
    assert code == 1 and "Traceback" not in output
    assert "cannot create the NetX file" in output and ("Read-only" in output or "Permission denied" in output)
    assert "NetX HDF5" not in output and "Loihi2SimCfg" not in output  # no plan printed, no Lava run
    assert time.monotonic() - started < 60
    assert list(parent.iterdir()) == []


def test_a_name_longer_than_name_max_is_refused_before_the_check(digits_artifact, tmp_path):
    code, output = _invoke(["export", digits_artifact, *EXPORT, "-o", tmp_path / ("m" * 300 + ".net")])
    assert code == 1 and "(NAME_MAX) per path component" in output and "Loihi2SimCfg" not in output
    assert list(tmp_path.iterdir()) == []


def test_a_refused_export_leaves_no_lock_and_no_temporary_file(digits_artifact, tmp_path):
    out = tmp_path / "model.net"
    code, output = _invoke(["export", digits_artifact, "--format", "netx", "--check", "0", "-o", out])
    assert code == 1 and "has a soft (subtractive) reset" in output
    assert not out.exists() and partial_entries(tmp_path) == []


def test_a_full_disk_while_writing_the_file_gives_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    from inflor_deploy.backends.netx import export
    from tests.backends.netx.graphs import compile_graph, mlp_graph

    graph = compile_graph(mlp_graph())

    def fill_the_disk(plan, path, source):
        path.write_bytes(b"\x89HDF" * 1000)  # part of the file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(export, "write_netx_file", fill_the_disk)
    out = tmp_path / "sub" / "model.net"
    with pytest.raises(OutputError, match="No space left on device.*the file system is full.*nothing was written"):
        export.export_netx(graph, out)
    assert not out.exists() and partial_entries(tmp_path / "sub") == [] and partial_entries(tmp_path) == []


def test_a_forced_export_replaces_the_file_in_one_step_and_an_unforced_one_never_does(tmp_path, monkeypatch):
    from inflor_deploy.backends.netx import export
    from inflor_deploy.backends.netx.writer import read_netx_metadata
    from tests.backends.netx.graphs import compile_graph, mlp_graph

    graph = compile_graph(mlp_graph())
    out = tmp_path / "model.net"
    out.write_text("keep")
    with pytest.raises(OutputError, match="already exists; choose another -o or pass --force"):
        export.export_netx(graph, out)
    assert out.read_text() == "keep"
    # A file that appears while an unforced export writes (a writer that takes no lock) is kept too.
    real = export.write_netx_file

    def someone_else_writes_first(plan, path, source):
        real(plan, path, source)
        out.write_text("theirs")

    out.unlink()
    monkeypatch.setattr(export, "write_netx_file", someone_else_writes_first)
    with pytest.raises(OutputError, match="appeared while this export ran"):
        export.export_netx(graph, out)
    assert out.read_text() == "theirs" and partial_entries(tmp_path) == []
    monkeypatch.setattr(export, "write_netx_file", real)
    export.export_netx(graph, out, force=True)
    assert read_netx_metadata(out)["model"] == "mlp" and partial_entries(tmp_path) == []
