"""Fault: inputs x1000 drive the first conv's current past 2^23 (issue 9).

Before: the simulator and the integer reference did not wrap where Lava's
fixed-point Conv wraps its output to 24 bits, so Lava and the simulator
disagreed, and such data ran silently. After:

* data outside the range the artifact was compiled for is refused before
  anything runs (exit 1, the range and the fix, nothing left behind: no
  output file, no child process, no ``/dev/shm`` entry);
* a caller who declares the wide range gets Lava's wraps in the simulator
  too: simulator == Lava fixed_pt, bit for bit, with the first conv past 2^23.

Run alone: ``.venv/bin/python -m pytest -q tests/faults/test_input_wraps.py``.
"""

import dataclasses
import multiprocessing
import os

import numpy as np
from click.testing import CliRunner

from inflor_deploy.artifact import load_artifact
from inflor_deploy.backends.lava.network import compare_with_simulator
from inflor_deploy.backends.sim.fixed_point import plan, simulate
from inflor_deploy.backends.sim.int_reference import _conv_int, quantize_input
from inflor_deploy.data import load_digits
from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy_cli.main import cli


def _shm() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def test_inputs_x1000_are_refused_or_wrap_exactly_as_lava(tmp_path):
    runner = CliRunner()
    compiled = runner.invoke(cli, ["compile", str(DEFAULT_MODEL), "-o", str(tmp_path / "art"), "--no-lava-smoke"])
    assert compiled.exit_code == 0, compiled.output
    digits = load_digits("test")
    np.savez(tmp_path / "x1000.npz", x=digits.images[:4] * 1000, y=digits.labels[:4])
    before = sorted(p.name for p in (tmp_path / "art").rglob("*"))
    shm = _shm()
    for backend in ("lava", "sim"):
        result = runner.invoke(cli, ["run", str(tmp_path / "art"), "--backend", backend, "--data",
                                     str(tmp_path / "x1000.npz")])  # fmt: skip
        assert result.exit_code == 1 and result.output.count("error:") == 1, result.output
        assert "values span [0, 1000], outside the input range [0, 1]" in result.output
        assert "--input-range" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in (tmp_path / "art").rglob("*")) == before  # nothing written
    assert not multiprocessing.active_children() and _shm() <= shm  # no worker, no shared memory left

    # A library caller who declares inputs in [0, 1000]: the first conv's sums pass 2^23, Lava wraps them,
    # and so do the simulator and the integer reference.
    fixed = load_artifact(tmp_path / "art").fixed_graph
    wide = fixed.replace_nodes([dataclasses.replace(fixed.input, value_range=(0.0, 1000.0)), *fixed.nodes[1:]])
    images = digits.images[:2] * 1000
    sums = _conv_int(quantize_input(wide, images), wide.node("unit1.conv"))
    assert np.abs(sums).max() > 2**23
    assert plan(wide, images).synapses["unit1.conv"].can_wrap
    assert simulate(wide, images).u_wraps["unit1.neuron"] > 0
    parity = compare_with_simulator(wide, images)
    assert parity.ok, parity.summary()
