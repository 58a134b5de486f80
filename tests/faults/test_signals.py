"""Signals during a Lava run: every worker stopped, all shared memory freed, one line, exit 128 + signum.

Before: SIGTERM or SIGHUP killed the CLI and orphaned its 13 Lava workers
and their /dev/shm segments; Ctrl-C printed a KeyboardInterrupt traceback
from every worker.
"""

import signal

import pytest

from tests.faults.conftest import (
    assert_nothing_left,
    assert_one_line,
    lava_running,
    partial_entries,
    printed,
    run_cli,
)

pytestmark = pytest.mark.lava


def _run_lava_args(artifact):
    # The whole digits test split in one Lava run (~1,440 steps): long enough to be caught mid-run.
    return ["run", str(artifact), "--backend", "lava", "--chunk", "400"]


@pytest.mark.parametrize(
    ("signum", "to_group", "status", "name"),
    [
        (signal.SIGTERM, False, 143, "SIGTERM"),  # `kill PID`
        (signal.SIGHUP, True, 129, "SIGHUP"),  # the terminal closed: the whole process group
        (signal.SIGINT, True, 130, "Ctrl-C (SIGINT)"),  # Ctrl-C: the whole process group
    ],
)
def test_a_signal_during_a_lava_run_stops_every_worker_and_frees_shared_memory(
    digits_artifact, tmp_path, signum, to_group, status, name
):
    run = run_cli(_run_lava_args(digits_artifact), tmp_path, send=signum, to_group=to_group, when=lava_running())
    assert run.returncode == status
    line = assert_one_line(run, f"interrupted by {name}", "Lava processes", "shared-memory segments",
                           "nothing was left behind")  # fmt: skip
    assert "KeyboardInterrupt" not in run.stderr
    assert len(run.tree) >= 11 and run.segments, "the signal did not land while Lava's workers ran"
    assert_nothing_left(run)
    assert line.startswith("error: ")


def test_sigterm_during_verify_level_3_leaves_nothing(digits_artifact, tmp_path):
    args = ["verify", str(digits_artifact), "--samples", "120", "--lava-samples", "120"]
    running = lava_running()
    run = run_cli(args, tmp_path, send=signal.SIGTERM, when=lambda w: printed("level 3")(w) and running(w))
    assert run.returncode == 143
    # The progress lines of levels 1 and 2 come before; the last line is the interruption.
    assert "Traceback" not in run.stderr
    assert "interrupted by SIGTERM" in run.error_lines[-1] and "nothing was left behind" in run.error_lines[-1]
    assert run.segments
    assert_nothing_left(run)


def test_sigterm_during_the_compile_smoke_run_leaves_the_artifact_whole_and_nothing_else(tmp_path):
    from inflor_deploy.pretrained import DEFAULT_MODEL

    out = tmp_path / "art"
    # T = 300 makes the one-sample smoke run long enough (~300 Lava steps) to be caught mid-run.
    args = ["compile", str(DEFAULT_MODEL), "-o", str(out), "-T", "300", "--probe-samples", "2"]
    running = lava_running()
    run = run_cli(args, tmp_path, send=signal.SIGTERM, when=lambda w: printed("artifact:")(w) and running(w))
    assert run.returncode == 143
    assert_one_line(run, "interrupted by SIGTERM", "nothing was left behind")
    assert_nothing_left(run)
    # The artifact was complete before the smoke run began; it stays, and nothing half-written beside it.
    assert (out / "manifest.json").is_file()
    assert partial_entries(tmp_path) == []


def test_sigkill_during_a_lava_run_still_takes_the_workers_and_segments_along(digits_artifact, tmp_path):
    # SIGKILL cannot be handled: the workers die with their parent (PR_SET_PDEATHSIG) and Python's
    # resource tracker unlinks the segments once no process holds them.
    run = run_cli(_run_lava_args(digits_artifact), tmp_path, send=signal.SIGKILL, when=lava_running())
    assert run.returncode == -signal.SIGKILL
    assert run.segments
    assert_nothing_left(run)


def test_sigterm_during_a_netx_export_check_leaves_no_worker_no_segment_and_no_file(digits_netx_artifact, tmp_path):
    # lava-dl's NetX network runs inside the same teardown as ours (teardown.guarded_run). 300 samples
    # through the written file (~1,200 recorded steps) are long enough to be caught mid-run.
    out = tmp_path / "model.net"
    args = ["export", str(digits_netx_artifact), "--format", "netx", "--allow-inexact", "--check", "300", "-o", str(out)]
    run = run_cli(args, tmp_path, send=signal.SIGTERM, when=lava_running())
    assert run.returncode == 143
    assert_one_line(run, "interrupted by SIGTERM", "Lava processes", "shared-memory segments",
                    "nothing was left behind")  # fmt: skip
    assert len(run.tree) >= 11 and run.segments, "the signal did not land while lava-dl's network ran"
    assert_nothing_left(run)
    # Neither the file, nor its temporary copy, nor the export's lock stays.
    assert not out.exists() and partial_entries(tmp_path) == []
