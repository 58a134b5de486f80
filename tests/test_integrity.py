"""The manifest's integrity section: every written file hashed, sources an open list of {role, path, sha256}."""

import dataclasses
import json

import pytest

from inflor_deploy.artifact import load_artifact, write_artifact
from inflor_deploy.compiler import compile_checkpoint
from inflor_deploy.integrity import OUTPUTS, TamperError, hash_artifact_files
from inflor_deploy.pretrained import DEFAULT_MODEL


@pytest.fixture(scope="module")
def early(tmp_path_factory):
    """A compile stopped after the first pass: enough to write an artifact with every section."""
    return compile_checkpoint(DEFAULT_MODEL, stop_after="FoldBatchNorm", probe_samples=2)


def test_every_written_file_is_hashed_and_outputs_are_not(early, tmp_path):
    art = write_artifact(early, tmp_path / "art")
    hashes = json.loads((art / "manifest.json").read_text())["integrity"]["files"]
    written = sorted(p.relative_to(art).as_posix() for p in art.rglob("*") if p.is_file())
    assert sorted(hashes) == [rel for rel in written if rel != "manifest.json"]
    assert set(OUTPUTS) == {"verify.json", "report"}
    (art / "verify.json").write_text("{}")
    (art / "report").mkdir()
    (art / "report" / "report.json").write_text("{}")
    assert hash_artifact_files(art) == hashes


def test_a_front_end_can_add_sources_and_they_are_checked_like_the_checkpoint(early, tmp_path):
    factory = tmp_path / "my_model.py"
    factory.write_text("def build():\n    ...\n")
    art = write_artifact(dataclasses.replace(early, sources=[("factory", factory)]), tmp_path / "art")
    artifact = load_artifact(art)
    roles = [entry["role"] for entry in artifact.manifest["integrity"]["sources"]]
    assert roles == ["checkpoint", "target", "factory"]
    artifact.check_sources()
    factory.write_text("def build():\n    return 'something else'\n")
    with pytest.raises(TamperError, match=rf"the source factory {factory.resolve()} was replaced after compiling"):
        artifact.check_sources()
    artifact.check_sources(roles=("checkpoint", "target"))  # run/report-style checks ignore it
