"""Run one command and account for every process it leaves behind (a helper of the fault tests).

    python tests/faults/reaper.py STDOUT_FILE STDERR_FILE GRACE_SECONDS -- COMMAND...

This process becomes a Linux child subreaper (``PR_SET_CHILD_SUBREAPER``),
so any process the command forks and abandons is re-parented here instead
of to init, where no test could see it. It starts the command in a session
of its own (the test can signal its whole process group, as a terminal
does on Ctrl-C), prints ``{"pid": ...}``, waits for it, then waits up to
GRACE_SECONDS for the command's descendants to exit on their own (Python's
resource tracker exits only after its parent). Whatever is still alive then
is listed, killed and reaped; the last line printed is
``{"returncode": ..., "leftovers": [{"pid", "cmdline"}]}``.
"""

import ctypes
import json
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def _children(pid: int) -> list[int]:
    """Live (non-zombie) processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _reap_zombies() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> int:
    stdout_path, stderr_path, grace = sys.argv[1], sys.argv[2], float(sys.argv[3])
    command = sys.argv[sys.argv.index("--") + 1 :]
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    child = None

    def forward(signum, _frame):
        if child is not None:
            os.killpg(child.pid, signum)

    # A handler (unlike SIG_IGN) resets to the default across exec, so the
    # command starts with default dispositions even if ours were ignored;
    # a signal meant for this helper goes on to the command.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
    print(json.dumps({"pid": child.pid}), flush=True)
    returncode = child.wait()
    deadline = time.monotonic() + grace
    leftovers = []
    while True:
        _reap_zombies()
        alive = _children(os.getpid())
        if not alive:
            break
        if time.monotonic() > deadline:
            leftovers = [{"pid": pid, "cmdline": _cmdline(pid)} for pid in alive]
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
            _reap_zombies()
            break
        time.sleep(0.05)
    print(json.dumps({"returncode": returncode, "leftovers": leftovers}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
