"""SpikingJelly and snnTorch networks end to end through the CLI (issue 10's tests).

Each network (tests/cli/framework_nets.py) is trained for a few epochs on digits with its framework's own
surrogate gradients (the event network on events made from digits), saved as a plain state_dict, compiled with
``compile WEIGHTS.pt --model tests/cli/framework_nets.py:FACTORY`` and verified: level 1 spike-exact against the
framework's own forward pass (0 mismatches: the IR computes each neuron in the framework's float32 operations),
levels 2 and 3 bit-exact (Lava on one sample), level 4 the float and fixed-point accuracies.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("spikingjelly")  # the extras `make setup` installs
pytest.importorskip("snntorch")

from inflor_deploy.artifact import load_artifact  # noqa: E402
from inflor_deploy.data import load_digits  # noqa: E402
from inflor_deploy.ir import nodes as n  # noqa: E402
from inflor_deploy_cli.main import cli  # noqa: E402
from tests.cli import framework_nets as nets  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NETS = "tests/cli/framework_nets.py"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _at_the_repository_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # --model tests/cli/framework_nets.py:... is a path relative to here


def _trained(tmp_path, factory, T, how, images=None, labels=None, **train):
    """``factory()`` trained from a seeded initialization (the run does not depend on earlier tests' draws)."""
    digits = load_digits("train")
    torch.manual_seed(0)
    model = factory()
    images = digits.images if images is None else images
    nets.train(model, images, digits.labels if labels is None else labels, T, how, **train)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    return tmp_path / "weights.pt"


def _compiled_and_verified(tmp_path, weights, factory, T, *extra, data="digits"):
    out = tmp_path / "out"
    compiled = invoke("compile", weights, "--model", f"{NETS}:{factory}", "--input-shape", "1,8,8", "-T", T, "-o", out,
                      *extra)  # fmt: skip
    assert compiled.exit_code == 0, compiled.output
    checked = invoke("verify", out, "--data", data, "--reference-samples", 2, "--lava-samples", 1)
    ladder = json.loads((out / "verify.json").read_text())
    levels = {level["level"]: level for level in ladder["levels"]}
    for k in (0, 1, 2, 3):
        assert levels[k]["ok"], (k, levels[k]["summary"], checked.output)
    assert levels[1]["metrics"]["mismatches"] == 0 and levels[1]["metrics"]["spikes"] > 10_000
    assert checked.exit_code == 0, checked.output  # level 4 within the default limits too
    print("\n".join(f"{factory} level {k}: {levels[k]['summary']}" for k in (1, 2, 3, 4)))
    return out, levels


@pytest.mark.lava
def test_spikingjelly_if_cnn_with_max_pooled_spikes(tmp_path):
    weights = _trained(tmp_path, lambda: nets.sj_if_cnn(T=4), 4, "frame", loss="rate", epochs=5)
    # Five epochs (94.7 % float): after three (86.9 %) the T = 4 spike-count readout ties often, and the
    # rounding of 8-bit weights flipped 4 of 360 classes, just past level 4's 1-point limit. v saturates in
    # sn1 on the split (~8,600 events), harmlessly: clamping its float membrane at the hardware's limit
    # changes no spike, so the default probe guard leaves its scale where the weights fill their grid.
    out, levels = _compiled_and_verified(tmp_path, weights, "sj_if_cnn", 4, "--model-arg", "T=4")
    artifact = load_artifact(out)
    imported = artifact.graph_at("import")
    sn1, pool1 = imported.node("sn1"), imported.node("pool1")
    assert (sn1.reset, sn1.reset_amount, sn1.compare) == ("subtract", 1.0, ">=")  # soft: subtracts Vth (1.0 here)
    assert pool1.reset == "zero" and imported.node("pool1.window").groups == 8  # the OR layer over spikes
    assert artifact.manifest["source"]["model"]["time_mode"] == "multi"
    assert imported.nodes[-1].readout == "spike_count" and levels[4]["metrics"]["readout"] == "spike_count"


@pytest.mark.lava
def test_spikingjelly_lif_network_decay_input_both_ways_single_step(tmp_path):
    weights = _trained(tmp_path, nets.sj_lif_net, 4, "single", epochs=2, batch=128)
    out, levels = _compiled_and_verified(tmp_path, weights, "sj_lif_net", 4)
    imported = load_artifact(out).graph_at("import")
    lif1, lif2 = imported.node("lif1"), imported.node("lif2")
    assert (lif1.charge, lif1.decay, lif1.gain, lif1.reset) == ("decay_divide_input", 2.0, 0.5, "zero")
    lif2_fields = (lif2.charge, lif2.decay, lif2.gain, lif2.reset, lif2.reset_amount)
    assert lif2_fields == ("decay_divide", 4.0, 1.0, "subtract", 1.0)  # soft reset subtracts Vth
    fixed = load_artifact(out).float_graph
    assert all(x.gain == 1.0 and x.charge == "affine" for x in fixed.of_type(n.Neuron))  # FoldInputGain
    assert levels[1]["metrics"]["time_mode"] == "single"


@pytest.mark.lava
def test_snntorch_cnn_subtract_and_zero_with_a_spike_count_readout(tmp_path):
    weights = _trained(tmp_path, nets.snntorch_cnn, 6, "single", loss="rate")
    out, levels = _compiled_and_verified(tmp_path, weights, "snntorch_cnn", 6)
    artifact = load_artifact(out)
    imported = artifact.graph_at("import")
    lif1, lif2 = imported.node("lif1"), imported.node("lif2")
    assert (lif1.compare, lif1.reset, lif1.reset_timing, lif1.reset_amount) == (">", "subtract", "next_step", 1.0)
    assert lif2.reset == "zero" and lif2.vth.shape == (16,)  # the learned per-channel threshold
    assert imported.nodes[-1].readout == "spike_count" and artifact.manifest["source"]["model"]["score_scale"] == 6
    after = artifact.float_graph.node("lif1")  # DelayedResetToSameStep: subtract thr / beta at the spike's step
    assert after.reset_timing == "same_step" and after.reset_amount == pytest.approx(1.0 / lif1.tau)
    assert levels[1]["metrics"]["near_ties"] == 0


@pytest.mark.lava
def test_event_input_network(tmp_path):
    digits_train, digits_test = load_digits("train"), load_digits("test")
    events = nets.events_from_images(digits_train.images, 4, seed=0)
    weights = _trained(tmp_path, nets.sj_event_net, 4, "sequence", images=events)
    np.savez(tmp_path / "events.npz", x=nets.events_from_images(digits_test.images, 4, seed=1), y=digits_test.labels)
    out, levels = _compiled_and_verified(tmp_path, weights, "sj_event_net", 4, "--input-encoding", "sequence",
                                         data=tmp_path / "events.npz")  # fmt: skip
    artifact = load_artifact(out)
    assert artifact.fixed_graph.input.encoding == "sequence"
    charges = {x.charge for x in artifact.graph_at("import").of_type(n.Neuron)}
    assert charges == {"decay_multiply_input", "decay_multiply"}  # ParametricLIFNode, decay_input both ways
    assert levels[4]["metrics"]["accuracy_fixed"] > 0.5


@pytest.mark.parametrize(
    "kind, message",
    [
        ("pool_currents", "MaxPool2d at fx node 'pool' (module 'pool') cannot be converted: it max-pools a current, not a "
                          "binary spike train"),
        ("half_threshold", "SpikingJelly HalfThresholdIFNode 'sn3' has no IR mapping; the neurons that map are IFNode, "
                           "LIFNode, ParametricLIFNode"),
        ("synaptic", "snnTorch Synaptic 'lif2' has no IR mapping: only Leaky maps onto the IR neuron"),
    ],
)  # fmt: skip
def test_unsupported_framework_layers_give_their_named_error(tmp_path, kind, message):
    torch.save(nets.unsupported(kind).state_dict(), tmp_path / "weights.pt")
    result = invoke("compile", tmp_path / "weights.pt", "--model", f"{NETS}:unsupported", "--model-arg", f"kind={kind}",
                    "--input-shape", "1,8,8", "-T", 4, "-o", tmp_path / "out", "--no-lava-smoke")  # fmt: skip
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "out").exists()
