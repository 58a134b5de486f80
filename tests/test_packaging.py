"""Packaging: every subpackage is listed, and the CLI does not install as a generic `cli`."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "inflor_deploy").rglob("__init__.py")
    }
    assert found <= listed, f"add to pyproject [tool.setuptools] packages: {sorted(found - listed)}"
    assert "inflor_deploy_cli" in listed and "cli" not in listed


def test_cli_is_importable_only_under_its_own_name(tmp_path):
    code = "import importlib.util as u; print(u.find_spec('inflor_deploy_cli') is not None, u.find_spec('cli') is None)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
