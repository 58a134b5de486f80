"""Fault injection: tampered, truncated and replaced artifacts are caught, named, and leave nothing behind.

Each case copies one compile of the bundled model, applies an edit, runs the
CLI (`verify`, `run` or `report`) and asserts the exit code, the message
(which file or tensor, and the fix) and that the artifact and its folder are
exactly as before: no verify.json, no report/, no temporary file.

Two kinds of tamperer:

* a plain edit of ``fixed_point.npz``: the sha256 check names the file
  before anything runs (exit 1);
* an edit that also rewrites the manifest's hash: the loader's range and
  dtype checks refuse what the target cannot hold (exit 1), and ``verify``'s
  level 0 (a fresh compile, compared bit for bit) names the tensor that
  differs (exit 2).

Run alone: ``.venv/bin/python -m pytest -q tests/faults/test_tamper.py``.
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from inflor_deploy.artifact import write_artifact
from inflor_deploy.compiler import compile_checkpoint
from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy_cli.main import cli

FAST_VERIFY = ["--samples", "24", "--reference-samples", "2", "--lava-samples", "0"]
COMMANDS = {
    "verify": lambda art: ["verify", str(art), *FAST_VERIFY],
    "run": lambda art: ["run", str(art), "--samples", "8"],
    "report": lambda art: ["report", str(art), "--samples", "8"],
}


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """One compile of the bundled model from its own copy of the checkpoint (cases copy the artifact)."""
    root = tmp_path_factory.mktemp("tamper")
    checkpoint = root / "digits.pt"
    shutil.copyfile(DEFAULT_MODEL, checkpoint)
    write_artifact(compile_checkpoint(checkpoint), root / "artifact")
    return root / "artifact"


@pytest.fixture
def artifact(compiled, tmp_path):
    copy = tmp_path / "art"
    shutil.copytree(compiled, copy)
    return copy


def _snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (hidden ones included) with its content hash."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def _invoke(args):
    return CliRunner().invoke(cli, args)


def _edit_fixed_point(art: Path, edit, rehash: bool = False) -> None:
    """Rewrite fixed_point.npz with ``edit(arrays, header)`` applied; with ``rehash`` also fix the manifest."""
    path = art / "fixed_point.npz"
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    header = json.loads(str(arrays["__graph__"]))
    edit(arrays, header)
    arrays["__graph__"] = np.array(json.dumps(header))
    np.savez_compressed(path, **arrays)
    if rehash:
        _rehash(art, "fixed_point.npz")


def _rehash(art: Path, rel: str) -> None:
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["integrity"]["files"][rel] = hashlib.sha256((art / rel).read_bytes()).hexdigest()
    (art / "manifest.json").write_text(json.dumps(manifest))


def _node(header, name):
    """(index, header entry) of the node called ``name``."""
    return next((i, e) for i, e in enumerate(header["nodes"]) if e["fields"]["name"] == name)


def _array(header, node, field):
    return header["nodes"][_node(header, node)[0]]["arrays"][field]


def raise_one_weight_by_20(arrays, header):
    arrays[_array(header, "unit2.conv", "weight")][3, 0, 1, 1] += 20


def force_one_output_row(arrays, header):
    arrays[_array(header, "fc2", "weight")][3, :] = 254  # every sample now reads as class 3


def negative_threshold(arrays, header):
    _node(header, "unit2.neuron")[1]["fields"]["vth"] = -5


def weights_as_floats(arrays, header):
    key = _array(header, "fc1", "weight")
    arrays[key] = arrays[key].astype(np.float32)


EDITS = {
    "weight+20": raise_one_weight_by_20,
    "output-row-forced": force_one_output_row,
    "vth=-5": negative_threshold,
    "float-weights": weights_as_floats,
}


def _assert_one_clean_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.output, result.output


# --------------------------------------------------------------------------- the four edits


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_fixed_point_file_is_named_before_anything_runs(artifact, edit, command):
    _edit_fixed_point(artifact, EDITS[edit])
    before = _snapshot(artifact.parent)
    result = _invoke(COMMANDS[command](artifact))
    _assert_one_clean_error(result, 1, f"artifact {artifact} was changed after compiling",
                            "fixed_point.npz differs from what compile wrote", "recompile it: inflor-deploy compile")
    assert "parity ladder" not in result.output and "accuracy" not in result.output  # nothing ran
    assert _snapshot(artifact.parent) == before


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("edit, message", [
    ("vth=-5", "node 'unit2.neuron' field 'vth' = -5 is outside the target's 17-bit unsigned mantissa [0, 131071]"),
    ("float-weights", "node 'fc1' field 'weight' has dtype float32; the target's dense weights must be stored as "
                      "integers"),
])
def test_values_the_target_cannot_hold_are_refused_even_with_a_rewritten_hash(artifact, edit, message, command):
    _edit_fixed_point(artifact, EDITS[edit], rehash=True)
    before = _snapshot(artifact.parent)
    result = _invoke(COMMANDS[command](artifact))
    _assert_one_clean_error(result, 1, f"{artifact / 'fixed_point.npz'}: {message}", "Recompile the artifact")
    assert _snapshot(artifact.parent) == before


def test_a_raised_weight_with_a_rewritten_hash_fails_level_0_naming_the_tensor(artifact):
    _edit_fixed_point(artifact, raise_one_weight_by_20, rehash=True)
    result = _invoke(COMMANDS["verify"](artifact))
    assert result.exit_code == 2, result.output
    assert "0  FAIL" in result.output
    assert ("fixed_point.npz: node=unit2.conv, field=weight, index=[3, 0, 1, 1], expected=-24, actual=-4"
            in result.output)
    assert "error: parity level(s) 0 failed" in result.stderr
    # The ladder is still written: it is the evidence.
    written = json.loads((artifact / "verify.json").read_text())
    assert written["ok"] is False and written["levels"][0]["first_divergence"]["node"] == "unit2.conv"


def test_a_forced_output_row_fails_level_0_and_level_4_naming_the_readout(artifact):
    _edit_fixed_point(artifact, force_one_output_row, rehash=True)
    result = _invoke(COMMANDS["verify"](artifact))
    assert result.exit_code == 2, result.output
    assert "fixed_point.npz: node=fc2, field=weight, index=[3, 0]" in result.output
    assert "4  FAIL" in result.output and "look at layer 'readout' (class agreement" in result.output
    assert "error: parity level(s) 0, 4 failed" in result.stderr
    level4 = json.loads((artifact / "verify.json").read_text())["levels"][-1]
    assert level4["metrics"]["accuracy_drop"] >= 0.6 and level4["metrics"]["look_at"] == "readout"


# --------------------------------------------------------------------------- sources, truncation, manifest


@pytest.fixture
def own_checkpoint(tmp_path):
    """An artifact compiled from a checkpoint in tmp_path (so the case may replace or delete it)."""
    checkpoint = tmp_path / "model.pt"
    shutil.copyfile(DEFAULT_MODEL, checkpoint)
    out = write_artifact(compile_checkpoint(checkpoint, probe_samples=2), tmp_path / "art")
    return checkpoint, out


def test_a_checkpoint_replaced_after_compiling_is_named_by_verify_only(own_checkpoint, tmp_path):
    import torch

    checkpoint, art = own_checkpoint
    payload = torch.load(checkpoint, weights_only=True)
    payload["state_dict"]["fc2.module.weight"][0, 0] += 0.5
    torch.save(payload, checkpoint)
    before = _snapshot(tmp_path)
    result = _invoke(COMMANDS["verify"](art))
    _assert_one_clean_error(result, 1, f"the source checkpoint {checkpoint.resolve()} was replaced after compiling",
                            "Restore the file that was compiled, or recompile")
    assert "parity ladder" not in result.output
    assert _snapshot(tmp_path) == before
    # run and report need only the artifact's own files.
    assert _invoke(COMMANDS["run"](art)).exit_code == 0


def test_a_deleted_checkpoint_is_named(own_checkpoint):
    checkpoint, art = own_checkpoint
    checkpoint.unlink()
    result = _invoke(COMMANDS["verify"](art))
    _assert_one_clean_error(result, 1, f"the source checkpoint {checkpoint.resolve()}", "is missing")
    assert not (art / "verify.json").exists()


@pytest.mark.parametrize("rehash", [False, True], ids=["hash-kept", "hash-rewritten"])
def test_a_truncated_fixed_point_file_gives_a_clear_error(artifact, rehash):
    path = artifact / "fixed_point.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    if rehash:
        _rehash(artifact, "fixed_point.npz")
    before = _snapshot(artifact.parent)
    result = _invoke(COMMANDS["run"](artifact))
    expected = ("not an inflor-deploy IR file, or a corrupt or truncated one (BadZipFile" if rehash
                else "fixed_point.npz differs from what compile wrote")
    _assert_one_clean_error(result, 1, expected)
    assert _snapshot(artifact.parent) == before


def _drop(key):
    def edit(manifest):
        *path, last = key.split(".")
        node = manifest
        for part in path:
            node = node[part]
        del node[last]
    return edit


@pytest.mark.parametrize("change, message", [
    (_drop("integrity"), "missing key 'integrity'"),
    (_drop("integrity.files"), "missing key 'integrity.files'"),
    (_drop("compile_options.quantization"), "missing key 'compile_options.quantization'"),
    (lambda m: m["integrity"].update(files=[]), "key 'integrity.files' must be an object, got an array"),
    (lambda m: m["files"].update(ir_steps="ir/00_import.npz"), "key 'files.ir_steps' must be an array, got a string"),
    (lambda m: m.update(timesteps="4"), "key 'timesteps' must be an integer, got a string"),
    (lambda m: m["integrity"]["files"].update({"../../etc/passwd": "0" * 64}), "key 'integrity.files' names '../../etc/passwd', which is not a path inside the artifact"),
    (lambda m: m["integrity"]["files"].pop("fixed_point.npz"), "file 'fixed_point.npz' (key 'files') has no hash"),
], ids=["no-integrity", "no-file-hashes", "no-quantization-options", "files-as-array", "steps-as-string",
        "timesteps-as-string", "path-escape", "unhashed-file"])
@pytest.mark.parametrize("command", ["run", "verify"])
def test_a_manifest_missing_keys_or_with_wrong_types_names_the_file_and_key(artifact, change, message, command):
    manifest = json.loads((artifact / "manifest.json").read_text())
    change(manifest)
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    before = _snapshot(artifact.parent)
    result = _invoke(COMMANDS[command](artifact))
    _assert_one_clean_error(result, 1, f"{artifact / 'manifest.json'}: {message}")
    assert _snapshot(artifact.parent) == before


def test_a_truncated_manifest_and_a_missing_file_are_named(artifact):
    (artifact / "model.float.onnx").unlink()
    result = _invoke(COMMANDS["report"](artifact))
    _assert_one_clean_error(result, 1, "model.float.onnx is missing")
    text = (artifact / "manifest.json").read_text()
    (artifact / "manifest.json").write_text(text[: len(text) // 2])
    result = _invoke(COMMANDS["report"](artifact))
    _assert_one_clean_error(result, 1, f"{artifact / 'manifest.json'} is not valid JSON")
    assert not (artifact / "report").exists()


def test_outputs_added_after_compiling_are_not_inputs(artifact):
    (artifact / "verify.json").write_text("{}")
    (artifact / "report").mkdir()
    (artifact / "report" / "report.md").write_text("# old")
    result = _invoke(COMMANDS["run"](artifact))
    assert result.exit_code == 0, result.output
