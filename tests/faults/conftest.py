"""Shared helpers of the fault-injection suite (``pytest tests/faults``).

Every case runs the real CLI and checks three things: the exit code, the
one-line message, and that nothing is left behind (no partial output, no
child process, no ``/dev/shm`` segment).

* :func:`run_cli` runs ``python -m inflor_deploy_cli.main ARGS`` under
  ``reaper.py`` (a child subreaper, so even a process the command abandons
  is found), optionally sends a signal once a condition holds (a marker
  line printed, Lava's workers up), and records what the command's process
  tree held at that moment: its processes and the ``/dev/shm`` segments
  they had mapped. Other sessions on the machine create segments too, so
  only those the command itself mapped are attributed to it.
* :func:`assert_nothing_left` checks none of them survived.

Waiting is on observable states (a line in the output, processes in
/proc), never on sleeps tuned to this machine's speed, with generous
timeouts: the suite runs on loaded 2-core machines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

REAPER = Path(__file__).with_name("reaper.py")
CLI = [sys.executable, "-m", "inflor_deploy_cli.main"]
#: Seconds a command may take before the test gives up on it (loaded 2-core machines are slow).
COMMAND_TIMEOUT_S = 420
#: Seconds the command's descendants get to exit after it (Python's resource tracker exits after its parent).
GRACE_S = 15
SHM = Path("/dev/shm")


# --------------------------------------------------------------------------- /proc


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (tells a live pid from a reused one), or None if gone."""
    fields = _stat(pid)
    return None if fields is None or fields[0] == "Z" else int(fields[19])


def descendants(pid: int) -> dict[int, int]:
    """``{pid: start time}`` of every live process below ``pid``."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and fields[0] != "Z":
                parents[int(entry)] = int(fields[1])
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                ticks = start_time(child)
                if ticks is not None:
                    found[child] = ticks
                    frontier.append(child)
    return found


def mapped_segments(pids) -> set[str]:
    """Names of the /dev/shm files mapped by any of ``pids`` (not those unlinked already)."""
    names = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    if "/dev/shm/" in line and not line.rstrip().endswith("(deleted)"):
                        names.add(line.split("/dev/shm/", 1)[1].split()[0])
        except OSError:
            continue
    return names


def _cpu_ticks(pid: int) -> int:
    fields = _stat(pid)
    return 0 if fields is None else int(fields[11]) + int(fields[12])  # utime + stime


def lava_running(processes: int = 12, cpu_seconds: float = 0.5) -> Callable[["Watch"], bool]:
    """Condition: Lava's network is up and stepping.

    Up: at least ``processes`` processes of the command map Lava's channel
    segments (the digits network: the CLI and its 11 Lava workers, which
    inherit the mappings when forked). Stepping: after that, the workers
    have used ``cpu_seconds`` more CPU time.
    """
    state: dict[str, int] = {}
    hz = os.sysconf("SC_CLK_TCK")

    def ready(watch: "Watch") -> bool:
        workers = [pid for pid in descendants(watch.pid) if mapped_segments([pid])]
        if "cpu" not in state:
            if len(workers) + 1 >= processes:
                state["cpu"] = sum(_cpu_ticks(pid) for pid in workers)
            return False
        return sum(_cpu_ticks(pid) for pid in workers) - state["cpu"] >= cpu_seconds * hz

    return ready


def printed(marker: str) -> Callable[["Watch"], bool]:
    """Condition: ``marker`` appeared in the command's stdout or stderr."""
    return lambda watch: marker in watch.output()


# --------------------------------------------------------------------------- running the CLI


@dataclass
class Watch:
    """The command while it runs (what conditions look at)."""

    pid: int
    stdout_path: Path
    stderr_path: Path

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")


@dataclass
class CliRun:
    """What one command did.

    Attributes:
        returncode: Its exit status (negative: killed by that signal).
        stdout, stderr: Its output.
        leftovers: Processes still alive GRACE_S after it exited (killed by the reaper).
        tree: ``{pid: start time}`` of its descendants when the signal was sent.
        segments: /dev/shm names its process tree had mapped when the signal was sent.
    """

    returncode: int
    stdout: str
    stderr: str
    leftovers: list[dict] = field(default_factory=list)
    tree: dict[int, int] = field(default_factory=dict)
    segments: set[str] = field(default_factory=set)

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli(args: list[str], tmp_path: Path, *, send: int | None = None, to_group: bool = False,
            when: Callable[[Watch], bool] | None = None, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> CliRun:  # fmt: skip
    """Run the CLI under the reaper; with ``send``, signal it once ``when`` holds.

    Args:
        args: CLI arguments.
        tmp_path: Where its output files go.
        send: A signal to send (None: let it finish).
        to_group: Send it to the command's process group (as a terminal sends
            Ctrl-C and a hang-up), not only to the command.
        when: Condition polled every 50 ms before sending; the test fails if the
            command exits before it holds.
        cwd: Working directory.
        env: Extra environment variables.
    """
    tag = f"cli-{time.monotonic_ns()}"
    stdout_path, stderr_path = tmp_path / f"{tag}.out", tmp_path / f"{tag}.err"
    stdout_path.touch()
    stderr_path.touch()
    reaper = subprocess.Popen(
        [sys.executable, str(REAPER), str(stdout_path), str(stderr_path), str(GRACE_S), "--", *CLI, *args],
        stdout=subprocess.PIPE, text=True, cwd=cwd, env={**os.environ, **(env or {})},
    )  # fmt: skip
    try:
        pid = json.loads(reaper.stdout.readline())["pid"]
        watch = Watch(pid, stdout_path, stderr_path)
        tree, segments = {}, set()
        if send is not None:
            deadline = time.monotonic() + COMMAND_TIMEOUT_S
            while not (when is None or when(watch)):
                if start_time(pid) is None:
                    pytest.fail(f"the command exited before the moment to signal it came:\n{watch.output()[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"the moment to signal never came in {COMMAND_TIMEOUT_S} s:\n{watch.output()[-3000:]}")
                time.sleep(0.05)
            tree = descendants(pid)
            segments = mapped_segments([pid, *tree])
            (os.killpg if to_group else os.kill)(pid, send)
        final = json.loads(reaper.communicate(timeout=COMMAND_TIMEOUT_S + GRACE_S)[0].strip().splitlines()[-1])
    finally:
        if reaper.poll() is None:
            reaper.kill()
            reaper.wait()
    return CliRun(
        returncode=final["returncode"],
        stdout=stdout_path.read_text(errors="replace"),
        stderr=stderr_path.read_text(errors="replace"),
        leftovers=final["leftovers"],
        tree=tree,
        segments=segments,
    )


def assert_nothing_left(run: CliRun) -> None:
    """No process of the command outlived it, and no /dev/shm segment it had mapped still exists."""
    assert run.leftovers == [], f"processes left behind: {run.leftovers}"
    alive = [pid for pid, ticks in run.tree.items() if start_time(pid) == ticks]
    assert alive == [], f"processes of the command still alive: {alive}"
    left = sorted(name for name in run.segments if (SHM / name).exists())
    assert left == [], f"/dev/shm segments left behind: {left}"


def assert_one_line(run: CliRun, *fragments: str) -> str:
    """The command printed exactly one non-empty line on stderr, holding every fragment; no traceback."""
    assert "Traceback" not in run.stderr, run.stderr
    assert len(run.error_lines) == 1, run.stderr
    line = run.error_lines[0]
    for fragment in fragments:
        assert fragment in line, line
    return line


def partial_entries(directory: Path) -> list[str]:
    """Hidden staging, lock or temporary entries an interrupted writer could leave in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".")) if directory.is_dir() else []


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def digits_artifact(tmp_path_factory) -> Path:
    """The bundled digits model compiled for loihi2-sim (through the library; shared, read it only)."""
    from inflor_deploy.artifact import write_artifact
    from inflor_deploy.compiler import compile_checkpoint
    from inflor_deploy.pretrained import DEFAULT_MODEL

    out = tmp_path_factory.mktemp("faults") / "digits"
    write_artifact(compile_checkpoint(DEFAULT_MODEL), out)
    return out


@pytest.fixture(scope="session")
def digits_netx_artifact(tmp_path_factory) -> Path:
    """The bundled digits model compiled as plain layers (``--plain-layers``): the layout a netx chain holds."""
    from inflor_deploy.artifact import write_artifact
    from inflor_deploy.compiler import compile_checkpoint
    from inflor_deploy.passes.base import QuantizationOptions
    from inflor_deploy.pretrained import DEFAULT_MODEL

    out = tmp_path_factory.mktemp("faults") / "digits_netx"
    write_artifact(compile_checkpoint(DEFAULT_MODEL, quantization=QuantizationOptions(plain_layers=True)), out)
    return out


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory this process cannot write: chmod for a normal user; a read-only mount for root.

    Root ignores permission bits, so as root the directory is a read-only
    tmpfs mount (skipped where mounting is not allowed). Yields a function
    that makes the directory read-only after the test filled it.
    """
    import shutil

    mounted = []

    def make_read_only(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            for p in [path, *path.rglob("*")]:
                p.chmod(0o555 if p.is_dir() else 0o444)
            return path
        staging = tmp_path / "ro-staging"
        shutil.copytree(path, staging)
        shutil.rmtree(path)
        path.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)], capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"running as root and cannot mount a read-only tmpfs: {result.stderr.decode().strip()}")
        mounted.append(path)
        shutil.copytree(staging, path, dirs_exist_ok=True)
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        return path

    yield make_read_only
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)
    if os.geteuid() != 0:
        for p in tmp_path.rglob("*"):
            if p.is_dir():
                p.chmod(0o755)

