"""Reusing an artifact for a re-run of `verify CHECKPOINT`: one record of the compile options, intact files only.

The manifest's ``compile_options`` (proof's record, which holds the input
declaration) is the one thing the reuse decision and level 0 both read;
the decision also compares the input options, every source the manifest
lists, and the artifact's own file hashes.
"""

import json
import shutil

import pytest

from inflor_deploy.artifact import load_artifact, write_artifact
from inflor_deploy.artifact_reuse import decide_reuse
from inflor_deploy.checkpoint import load_checkpoint, save_checkpoint
from inflor_deploy.compiler import compile_checkpoint, requested_options
from inflor_deploy.integrity import sha256
from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy.targets import load_target


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """(checkpoint, artifact dir, CompileResult): the bundled model copied and compiled once."""
    folder = tmp_path_factory.mktemp("reuse")
    checkpoint = folder / "model.pt"
    shutil.copyfile(DEFAULT_MODEL, checkpoint)
    result = compile_checkpoint(checkpoint, probe_samples=2)
    return checkpoint, write_artifact(result, folder / "art"), result


@pytest.fixture
def art(compiled, tmp_path):
    """A copy of the compiled artifact the case may edit."""
    checkpoint, out, _ = compiled
    copy = tmp_path / "art"
    shutil.copytree(out, copy)
    return checkpoint, copy


def _request(checkpoint, **options):
    """(target, options) of a request like the fixture's compile (2 probe samples, to keep it quick)."""
    target = load_target("loihi2-sim")
    return target, requested_options(load_checkpoint(checkpoint), target, **{"probe_samples": 2, **options})


def test_the_request_compile_records_and_rebuild_reads_are_one_record(compiled):
    from inflor_deploy.rebuild import rebuild

    checkpoint, out, result = compiled
    artifact = load_artifact(out)
    _, request = _request(checkpoint)
    assert request == result.options == artifact.manifest["compile_options"]
    assert set(request) == {"target", "timesteps", "probe_samples", "stop_after", "quantization", "input"}
    assert request["input"] == {"range": [0.0, 1.0], "mean": None, "std": None, "encoding": "direct"}
    assert rebuild(artifact).options == artifact.manifest["compile_options"]  # level 0 compiles from the same dict


def test_the_input_encoding_of_a_request_defaults_to_the_checkpoint_s(tmp_path):
    loaded = load_checkpoint(DEFAULT_MODEL)
    events = save_checkpoint(tmp_path / "events.pt", loaded.model, {"input_encoding": "sequence"})
    _, request = _request(events)
    assert request["input"]["encoding"] == "sequence"
    assert _request(events, input_encoding="direct")[1]["input"]["encoding"] == "direct"
    assert _request(events, probe_samples=None)[1]["probe_samples"] is None


def test_a_matching_artifact_is_reused(art):
    checkpoint, out = art
    decision = decide_reuse(out, checkpoint, *_request(checkpoint))
    assert decision.action == "reuse", decision.reason
    assert decision.artifact.path == out


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"input_range": "0,255"}, "input {'range': [0.0, 1.0]"),
        ({"input_mean": "0.5", "input_std": "0.25"}, "'mean': None"),
        ({"timesteps": 6}, "timesteps T there, 6 now"),
    ],
)
def test_other_options_rebuild_naming_what_differs(art, options, named):
    checkpoint, out = art
    named = named.replace("timesteps T", f"timesteps {load_checkpoint(checkpoint).config.timesteps}")  # the record holds the checkpoint's own T
    decision = decide_reuse(out, checkpoint, *_request(checkpoint, **options))
    assert decision.action == "rebuild"
    assert "compile options differ" in decision.reason and named in decision.reason


def test_a_tampered_artifact_is_never_reused_nor_replaced_silently(art):
    checkpoint, out = art
    report = out / "quantization_report.json"
    report.write_text(report.read_text().replace('"scale"', '"scale" ', 1))
    before = sorted((p.name, p.read_bytes()) for p in out.rglob("*") if p.is_file())
    decision = decide_reuse(out, checkpoint, *_request(checkpoint))
    assert decision.action == "refuse"
    assert "quantization_report.json differs from what compile wrote" in decision.reason
    assert "--force" in decision.reason
    assert sorted((p.name, p.read_bytes()) for p in out.rglob("*") if p.is_file()) == before


def test_a_checkpoint_with_the_same_bytes_at_another_path_is_rebuilt(art, tmp_path):
    checkpoint, out = art
    moved = tmp_path / "elsewhere.pt"
    shutil.copyfile(checkpoint, moved)
    decision = decide_reuse(out, moved, *_request(moved))
    assert decision.action == "rebuild" and f"checkpoint compiled from {checkpoint.resolve()}" in decision.reason


def test_every_recorded_source_is_compared(art, tmp_path):
    # Front ends may record more sources (a model factory's file): a change to one rebuilds.
    checkpoint, out = art
    factory = tmp_path / "factory.py"
    factory.write_text("def build(): ...\n")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["integrity"]["sources"].append({"role": "factory", "path": str(factory), "sha256": sha256(factory)})
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert decide_reuse(out, checkpoint, *_request(checkpoint)).action == "reuse"
    factory.write_text("def build(): return 1\n")
    decision = decide_reuse(out, checkpoint, *_request(checkpoint))
    assert decision.action == "rebuild" and f"its factory {factory} changed since" in decision.reason
