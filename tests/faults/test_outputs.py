"""Outputs: checked before the work, one writer at a time, and a failed write leaves nothing.

Before: two compiles to the same directory both reported success (one
silently replaced the other); a read-only directory or a 250-character
name gave a traceback, and only after the whole compile; a full disk gave
a traceback; a read-only artifact made `verify` fail before printing the
ladder.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from inflor_deploy.artifact import load_artifact
from inflor_deploy.outputs import output_lock
from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy_cli.main import cli
from tests.faults.conftest import CLI, assert_nothing_left, assert_one_line, partial_entries, run_cli

COMPILE = ["compile", str(DEFAULT_MODEL), "--no-lava-smoke", "--probe-samples", "2"]


def _invoke(args):
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


def _assert_complete(artifact_dir):
    artifact = load_artifact(artifact_dir)
    for rel in [*artifact.manifest["files"]["ir_steps"], artifact.manifest["files"]["fixed_point_ir"]]:
        assert (artifact_dir / rel).is_file(), rel
    artifact.fixed_graph  # loads


# --------------------------------------------------------------------------- two writers


def test_two_compiles_to_the_same_output_without_force_exactly_one_succeeds(tmp_path):
    out = tmp_path / "art"
    args = [*CLI, *COMPILE, "-o", str(out)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    _, _, stderr = next(r for r in results if r[0] == 1)
    assert "Traceback" not in stderr and "--force" in stderr
    # Whichever way the race went: it names the running compile, or the output it finished.
    assert "is being written by pid" in stderr or "already exists" in stderr
    _assert_complete(out)
    assert partial_entries(tmp_path) == []


def test_a_compile_fails_at_once_naming_the_compile_that_holds_the_output(tmp_path):
    out = tmp_path / "art"
    with output_lock(out, wait=False):  # this test plays the first compile
        run = run_cli([*COMPILE, "-o", str(out)], tmp_path)
    assert run.returncode == 1
    assert_one_line(run, f"is being written by pid {os.getpid()}", "--force")
    assert not out.exists() and partial_entries(tmp_path) == []


def test_a_lock_file_left_by_a_killed_compile_does_not_block_the_next(tmp_path):
    out = tmp_path / "art"
    (tmp_path / ".art.lock").write_text(json.dumps({"pid": 999999, "command": "killed", "started": 0}))
    code, output = _invoke([*COMPILE, "-o", str(out)])
    assert code == 0, output
    _assert_complete(out)
    assert partial_entries(tmp_path) == []


def test_concurrent_forced_compiles_all_succeed_and_leave_one_whole_artifact(tmp_path):
    out = tmp_path / "art"
    procs = [
        subprocess.Popen([*CLI, *COMPILE, "-o", str(out), "--force", "-T", str(t)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
        for t in (2, 3, 5)
    ]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0, 0, 0], results
    _assert_complete(out)
    assert load_artifact(out).manifest["timesteps"] in (2, 3, 5)
    assert partial_entries(tmp_path) == []


def test_verify_json_writers_never_corrupt_it(digits_artifact, tmp_path):
    import shutil

    art = tmp_path / "art"
    shutil.copytree(digits_artifact, art)
    writer = (
        "import sys; from inflor_deploy.artifact import load_artifact; a = load_artifact(sys.argv[1]);"
        "[a.write_json('verify.json', {'writer': int(sys.argv[2]), 'i': i, 'pad': 'x' * 200000}) for i in range(15)]"
    )
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(art), str(k)]) for k in range(3)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    last = json.loads((art / "verify.json").read_text())
    assert last["i"] == 14 and len(last["pad"]) == 200000
    assert partial_entries(art) == []


def test_verify_json_is_not_written_into_an_artifact_replaced_meanwhile(tmp_path):
    from inflor_deploy.artifact import ArtifactError

    out = tmp_path / "art"
    assert _invoke([*COMPILE, "-o", str(out)])[0] == 0
    loaded = load_artifact(out)
    assert _invoke([*COMPILE, "-o", str(out), "--force"])[0] == 0  # another compile --force
    with pytest.raises(ArtifactError, match="was replaced while this command ran"):
        loaded.write_json("verify.json", {"ok": True})
    assert not (out / "verify.json").exists()


# --------------------------------------------------------------------------- checked before the work


def test_a_read_only_directory_is_refused_before_compiling(tmp_path, read_only_dir):
    parent = read_only_dir(tmp_path / "ro")
    started = time.monotonic()
    code, output = _invoke([*COMPILE, "-o", str(parent / "sub" / "art")])
    assert code == 1
    assert "cannot create the output" in output and ("Read-only" in output or "Permission denied" in output)
    assert "compiled" not in output  # refused before the compile ran
    assert "Traceback" not in output
    assert time.monotonic() - started < 60
    assert list(parent.iterdir()) == []


@pytest.mark.parametrize("length", [250, 255])
def test_a_long_but_legal_name_compiles(tmp_path, length):
    out = tmp_path / ("a" * length)
    code, output = _invoke([*COMPILE, "-o", str(out)])
    assert code == 0, output
    _assert_complete(out)
    assert partial_entries(tmp_path) == []


def test_a_name_longer_than_name_max_is_refused_before_compiling(tmp_path):
    code, output = _invoke([*COMPILE, "-o", str(tmp_path / ("a" * 256))])
    assert code == 1 and "NAME_MAX" in output and "256 bytes long" in output and "compiled" not in output
    assert list(tmp_path.iterdir()) == []


def test_a_path_longer_than_path_max_is_refused_before_compiling(tmp_path):
    deep = tmp_path.joinpath(*["d" * 200] * 21)
    code, output = _invoke([*COMPILE, "-o", str(deep)])
    assert code == 1 and "PATH_MAX" in output and "compiled" not in output
    assert list(tmp_path.iterdir()) == []


def test_too_little_free_space_is_refused_before_compiling(tmp_path, monkeypatch):
    from inflor_deploy import outputs

    real = os.statvfs

    class Full:
        def __init__(self, stats):
            self.f_frsize, self.f_bavail = stats.f_frsize, 10  # ten blocks free

    monkeypatch.setattr(outputs.os, "statvfs", lambda path: Full(real(path)))
    code, output = _invoke([*COMPILE, "-o", str(tmp_path / "art")])
    assert code == 1 and "it needs about" in output and "is free on the file system" in output
    assert "compiled" not in output and list(tmp_path.iterdir()) == []


def test_the_free_space_estimate_covers_what_a_compile_writes(digits_artifact):
    from inflor_deploy.outputs import artifact_bytes_per_checkpoint_byte

    written = sum(p.stat().st_size for p in digits_artifact.rglob("*") if p.is_file())
    checkpoint = DEFAULT_MODEL.stat().st_size
    # Without the fixed overhead: the per-file ratios alone must cover every IR step the pipeline writes.
    assert written <= artifact_bytes_per_checkpoint_byte() * checkpoint, (written / checkpoint)


# --------------------------------------------------------------------------- failing while writing


def test_a_full_disk_while_writing_gives_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    from inflor_deploy.ir import serialize

    save = serialize.save_graph
    calls = []

    def filling_up(graph, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        save(graph, path)

    monkeypatch.setattr("inflor_deploy.artifact.save_graph", filling_up)
    out = tmp_path / "new" / "art"
    code, output = _invoke([*COMPILE, "-o", str(out)])
    assert code == 1, output
    assert f"cannot write {out}: No space left on device" in output and "nothing was written" in output
    assert "Traceback" not in output
    assert list(tmp_path.iterdir()) == []  # not even the parent it created


def test_a_real_enospc_from_a_small_file_system_leaves_nothing(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,nr_inodes=8", "tmpfs", str(mount)], capture_output=True
    ).returncode:
        pytest.skip("needs root and permission to mount a tmpfs")
    try:
        # 16 MB is enough room (the estimate passes); 8 inodes are not enough files: ENOSPC mid-write.
        run = run_cli([*COMPILE, "-o", str(mount / "x" / "art")], tmp_path)
        assert run.returncode == 1
        assert_one_line(run, "No space left on device", "nothing was written")
        assert list(mount.iterdir()) == []
        assert_nothing_left(run)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_sigterm_while_the_artifact_is_written_leaves_no_partial_output(tmp_path, monkeypatch):
    from inflor_deploy.ir import serialize

    save = serialize.save_graph
    calls = []

    def terminated(graph, path):
        calls.append(path)
        save(graph, path)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, half-way through the files

    monkeypatch.setattr("inflor_deploy.artifact.save_graph", terminated)
    code, output = _invoke([*COMPILE, "-o", str(tmp_path / "art")])
    assert code == 143
    assert "interrupted by SIGTERM" in output and "nothing was left behind" in output
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- read-only artifacts


def test_verify_on_a_read_only_artifact_prints_the_ladder_and_says_why_it_was_not_saved(
    digits_artifact, tmp_path, read_only_dir
):
    import shutil

    art = tmp_path / "art"
    shutil.copytree(digits_artifact, art)
    read_only_dir(art)
    run = run_cli(["verify", str(art), "--samples", "40", "--lava-samples", "0"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert "parity ladder:" in run.stdout and "  2  PASS" in run.stdout
    warnings = [line for line in run.error_lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "verify.json" in warnings[0]
    assert "Read-only" in warnings[0] or "Permission denied" in warnings[0]
    assert "Traceback" not in run.stderr
    assert not (art / "verify.json").exists()


def test_report_on_a_read_only_artifact_is_refused_up_front_or_written_elsewhere(
    digits_artifact, tmp_path, read_only_dir
):
    import shutil

    art = tmp_path / "art"
    shutil.copytree(digits_artifact, art)
    read_only_dir(art)
    code, output = _invoke(["report", str(art), "--samples", "8"])
    assert code == 1 and "--output-dir" in output and "report:" not in output  # nothing simulated
    elsewhere = tmp_path / "report-elsewhere"
    code, output = _invoke(["report", str(art), "--samples", "8", "--output-dir", str(elsewhere)])
    assert code == 0, output
    assert sorted(p.name for p in elsewhere.iterdir()) == ["report.html", "report.json", "report.md"]


def test_concurrent_report_writers_leave_one_whole_report(digits_artifact, tmp_path):
    import shutil
    import threading

    from inflor_deploy.report import build_report, write_report

    art = tmp_path / "art"
    shutil.copytree(digits_artifact, art)
    report = build_report(art, "digits", samples=4)
    errors = []

    def writer():
        try:
            for _ in range(5):
                write_report(report, art)
        except BaseException as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(p.name for p in (art / "report").iterdir()) == ["report.html", "report.json", "report.md"]
    json.loads((art / "report" / "report.json").read_text())
    assert partial_entries(art) == []


def test_train_refuses_a_checkpoint_name_longer_than_name_max_before_training(tmp_path):
    code, output = _invoke(["train", "--epochs", "1", "-o", str(tmp_path / ("m" * 300))])
    assert code == 1 and "NAME_MAX" in output and "test accuracy" not in output and "Traceback" not in output
    assert list(tmp_path.iterdir()) == []
