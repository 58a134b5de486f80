"""finetune: the checkpoint it writes compiles to exactly what it trained; verify levels 0-4 pass at delta 0."""

import dataclasses

import numpy as np
import pytest
import torch

from inflor_deploy.artifact import load_artifact, write_artifact
from inflor_deploy.backends.sim.fixed_point import simulate
from inflor_deploy.checkpoint import load_checkpoint, save_checkpoint
from inflor_deploy.compiler import compile_checkpoint
from inflor_deploy.data import Dataset, load_digits
from inflor_deploy.errors import InflorError
from inflor_deploy.finetuning import FinetuneConfig, FinetuneError, choose_grid, finetune, save_finetuned
from inflor_deploy.grid import GRID_KEY
from inflor_deploy.ir import nodes as n
from inflor_deploy.nn.models import ModelConfig, build_model
from inflor_deploy.passes.base import PassError, QuantizationOptions
from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy.verify import run_ladder


def small_digits(path, train=96, test=40):
    """A small digits .npz (train and test splits of the real digits): finetune runs in seconds on it."""
    tr, te = load_digits("train"), load_digits("test")
    np.savez(path, x_train=tr.images[:train], y_train=tr.labels[:train], x_test=te.images[:test], y_test=te.labels[:test])
    return str(path)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finetune")
    data = small_digits(folder / "digits.npz")
    result = finetune(DEFAULT_MODEL, data=data, config=FinetuneConfig(epochs=1, lr=3e-3), progress=False)
    path = save_finetuned(result, folder / "tuned.pt")
    return result, path, data


def test_the_grid_is_the_compilers_scales_rounded_down_to_powers_of_two():
    grid = choose_grid({"a": 6076.35, "b": 272.08, "c": 256.0}, 255.0, "loihi2-sim")
    assert grid == {"target": "loihi2-sim", "input_grade_scale": 256.0,
                    "layer_scales": {"a": 4096.0, "b": 256.0, "c": 256.0}}  # fmt: skip
    with pytest.raises(FinetuneError, match="below 2"):
        choose_grid({"a": 1.5}, 255.0, "loihi2-sim")


def test_the_checkpoint_records_its_grid_and_its_weights_lie_on_it(tuned):
    result, path, _ = tuned
    loaded = load_checkpoint(path)
    grid = loaded.metadata[GRID_KEY]
    assert grid == result.grid and set(grid["layer_scales"]) == {"unit1.neuron", "unit2.neuron", "neuron_fc1", "readout"}
    assert all(s == 2.0 ** round(np.log2(s)) for s in grid["layer_scales"].values())
    # round(W * unit * scale) gives the trained integers back (fc2: unit 1, dense step 2).
    w = loaded.model.fc2.module.weight.detach().numpy().astype(np.float64) * grid["layer_scales"]["readout"]
    assert np.array_equal(w, np.rint(w))
    key = next(k for k, s in result.network.synapses.items() if s.name == "fc2")
    assert np.array_equal(w, result.network.integer_weight(key).detach().numpy())


def test_compiling_the_finetuned_checkpoint_reproduces_its_forward_bit_for_bit(tuned):
    result, path, _ = tuned
    compiled = compile_checkpoint(path, "loihi2-sim")
    assert compiled.options["quantization"]["layer_scales"] == result.grid["layer_scales"]
    assert compiled.options["quantization"]["input_grade_scale"] == result.grid["input_grade_scale"]
    assert all(r["scale_limited_by"] == "recorded" for r in compiled.quantization_report)
    fixed = compiled.fixed_graph
    images = compiled.probe
    with torch.no_grad():
        run = result.network(images, record=True)
    sim = simulate(fixed, images, view="aligned", record=True)
    for name in sim.spikes:
        assert np.array_equal(run.spikes[name].numpy().astype(np.int64), sim.spikes[name].astype(np.int64)), name
        assert np.array_equal(run.voltages[name].numpy().astype(np.int64), sim.voltages[name]), name
    assert np.array_equal(run.readout.numpy().astype(np.int64), sim.accumulator)
    # The float model (what `evaluate` runs) gives the fixed point's classes too.
    with torch.no_grad():
        float_scores = load_checkpoint(path).model(torch.from_numpy(images)).numpy()
    assert np.array_equal(float_scores.argmax(1), sim.scores(fixed).argmax(1))


def test_verify_levels_0_to_4_pass_with_level_4_exact(tuned, tmp_path):
    _, path, data = tuned
    write_artifact(compile_checkpoint(path, "loihi2-sim", probe_samples=2), tmp_path / "art")
    artifact = load_artifact(tmp_path / "art")
    test = load_digits("test").take(60)
    ladder = run_ladder(artifact, test, reference_samples=2, lava_samples=1)
    assert ladder.ok, [(x.level, x.summary) for x in ladder.levels]
    assert [x.ok for x in ladder.levels] == [True] * 5
    level1, level4 = ladder.levels[1], ladder.levels[4]
    assert level1.metrics["mismatches"] == 0 and level1.metrics["near_ties"] == 0
    assert level4.metrics["accuracy_float"] == level4.metrics["accuracy_fixed"]
    assert level4.metrics["class_agreement"] == 1.0
    assert all(v == 1.0 for v in level4.metrics["spike_agreement"].values())


def test_a_residual_network_finetunes_and_verifies_exactly(tmp_path):
    """ResNet8: identity and projection shortcuts; the fine-tuned checkpoint compiles to what it trained."""
    from bench.common import firing_model

    data = small_digits(tmp_path / "digits.npz")
    model = firing_model("resnet8", in_channels=1, image_size=8, timesteps=2)
    save_checkpoint(tmp_path / "resnet8.pt", model, {"dataset": "digits", "input_encoding": "direct"})
    result = finetune(tmp_path / "resnet8.pt", data=data, config=FinetuneConfig(epochs=1, lr=3e-3), progress=False)
    path = save_finetuned(result, tmp_path / "tuned.pt")
    compiled = compile_checkpoint(path, "loihi2-sim", probe_samples=2)
    exps = {x.name: x.weight_exp for x in compiled.fixed_graph.of_type(n.FixedPointSynapse)}
    assert any(name.endswith(".shortcut") for name in exps) and max(exps.values()) > 0
    write_artifact(compiled, tmp_path / "art")
    ladder = run_ladder(load_artifact(tmp_path / "art"), load_digits("test").take(40), reference_samples=2,
                        lava_samples=1)  # fmt: skip
    assert [x.ok for x in ladder.levels] == [True] * 5, [(x.level, x.summary) for x in ladder.levels]
    level4 = ladder.levels[4].metrics
    assert level4["accuracy_float"] == level4["accuracy_fixed"] and level4["class_agreement"] == 1.0
    assert all(v == 1.0 for v in level4["spike_agreement"].values())


def test_fewer_weight_bits_train_on_their_grid_and_the_checkpoint_compiles_to_them(tmp_path):
    data = small_digits(tmp_path / "digits.npz")
    result = finetune(DEFAULT_MODEL, data=data, config=FinetuneConfig(epochs=1, lr=3e-3),
                      quantization=QuantizationOptions(weight_bits=4), progress=False)  # fmt: skip
    assert result.grid["weight_bits"] == 4
    path = save_finetuned(result, tmp_path / "tuned4.pt")
    compiled = compile_checkpoint(path, "loihi2-sim", probe_samples=2)  # no --weight-bits: the record applies
    assert compiled.options["quantization"]["weight_bits"] == 4
    num = compiled.target.numerics
    for syn in compiled.fixed_graph.of_type(n.FixedPointSynapse):
        low, high, step = num.weight_grid(syn.kind, 4)
        assert syn.weight_bits == 4 and low <= syn.weight.min() and syn.weight.max() <= high, syn.name
        assert not np.any(syn.weight % step), syn.name
    with torch.no_grad():
        run = result.network(compiled.probe, record=True)
    sim = simulate(compiled.fixed_graph, compiled.probe, view="aligned", record=True)
    for name in sim.spikes:
        assert np.array_equal(run.spikes[name].numpy().astype(np.int64), sim.spikes[name].astype(np.int64)), name
    assert np.array_equal(run.readout.numpy().astype(np.int64), sim.accumulator)
    with pytest.raises(InflorError, match="fine-tuned for 4-bit weights"):
        compile_checkpoint(path, "loihi2-sim", quantization=QuantizationOptions(weight_bits=6))
    with pytest.raises(InflorError, match="pruned network is not implemented"):
        finetune(DEFAULT_MODEL, data=data, quantization=QuantizationOptions(prune=0.5), progress=False)


def test_finetuning_a_finetuned_checkpoint_continues_on_its_grid(tuned, tmp_path):
    result, path, data = tuned
    again = finetune(path, data=data, config=FinetuneConfig(epochs=1), progress=False)
    assert again.grid == result.grid


def test_the_activity_regularizer_reduces_spike_counts(tuned):
    result, _, data = tuned
    quiet = finetune(DEFAULT_MODEL, data=data, config=FinetuneConfig(epochs=1, lr=3e-3, activity_weight=5.0),
                     progress=False)  # fmt: skip
    assert quiet.spike_rate["after"] < 0.8 * result.spike_rate["after"]
    assert quiet.spike_rate["after"] < quiet.spike_rate["before"]


def test_a_recorded_grid_that_no_longer_fits_the_target_is_refused(tuned, tmp_path):
    _, path, _ = tuned
    loaded = load_checkpoint(path)
    grid = loaded.metadata[GRID_KEY]
    bigger = {**grid, "layer_scales": {**grid["layer_scales"], "unit2.neuron": grid["layer_scales"]["unit2.neuron"] * 64}}
    save_checkpoint(tmp_path / "bad.pt", loaded.model, {**loaded.metadata, GRID_KEY: bigger})
    with pytest.raises(PassError, match="unit2.neuron.*recorded scale .* fine-tune again"):
        compile_checkpoint(tmp_path / "bad.pt", "loihi2-sim")
    with pytest.raises(InflorError, match="fine-tuned for input grade scale 256"):
        compile_checkpoint(path, "loihi2-sim", quantization=QuantizationOptions(input_grade_scale=255))


def test_foreign_and_unsupported_checkpoints_are_refused(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(InflorError, match="not an inflor-deploy checkpoint"):
        finetune(tmp_path / "foreign.pt", progress=False)
    events = build_model(ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=2, num_classes=10))
    save_checkpoint(tmp_path / "events.pt", events.eval(), {"dataset": "digits", "input_encoding": "sequence"})
    with pytest.raises(FinetuneError, match="takes event sequences"):
        finetune(tmp_path / "events.pt", progress=False)
    with pytest.raises(InflorError, match="unknown target"):
        finetune(DEFAULT_MODEL, "no-such-target", progress=False)
