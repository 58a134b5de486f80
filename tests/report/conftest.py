"""Shared fixtures of the report tests: the compiled digits artifact and its report."""

import pytest


@pytest.fixture(scope="session")
def digits_artifact(tmp_path_factory):
    from inflor_deploy.artifact import load_artifact, write_artifact
    from inflor_deploy.compiler import compile_checkpoint
    from inflor_deploy.pretrained import DEFAULT_MODEL

    out = tmp_path_factory.mktemp("report") / "digits"
    write_artifact(compile_checkpoint(DEFAULT_MODEL), out)
    return load_artifact(out)


@pytest.fixture(scope="session")
def digits_report(digits_artifact):
    from inflor_deploy.report import build_report

    return build_report(digits_artifact, "digits", samples=96)
