"""The Lava shims: applied in one place, effective, and loud when Lava does not match."""

import subprocess
import sys

import pytest

from inflor_deploy import lava_compat


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_lava_fails_on_python_311_without_the_shim():
    # Guards the shim's reason to exist: if this starts passing, Lava changed.
    result = _run("import lava.magma.compiler.var_model")
    assert result.returncode != 0 and "mutable default" in result.stderr


def test_shims_make_lava_and_netx_import():
    result = _run(
        "from inflor_deploy import lava_compat; print(lava_compat.check());"
        "import lava.magma.compiler.var_model as vm; assert hash(vm.ByteEncoder()) is not None"
    )
    assert result.returncode == 0, result.stderr
    assert "lava-nc 0.10.0 and lava-dl 0.6.0 import" in result.stdout


def test_object_detection_placeholder_explains_itself():
    result = _run(
        "from inflor_deploy import lava_compat; lava_compat.apply();"
        "import lava.lib.dl.slayer; from lava.lib.dl.slayer import object_detection as od; od.YOLOBase"
    )
    assert result.returncode != 0 and "needs torchvision" in result.stderr


def test_version_mismatch_names_the_fix(monkeypatch):
    monkeypatch.setitem(lava_compat.SUPPORTED_VERSIONS, "lava-nc", "9.9.9")
    with pytest.raises(lava_compat.LavaCompatError, match="lava-nc 0.10.0 is installed but .* 9.9.9.*make setup"):
        lava_compat._check_version("lava-nc")


def test_importing_lava_first_is_refused():
    result = _run(
        "import sys, types; m = types.ModuleType('lava.magma.compiler.var_model');"
        "m.ByteEncoder = type('ByteEncoder', (), {'__hash__': None});"
        "sys.modules['lava.magma.compiler.var_model'] = m;"
        "from inflor_deploy import lava_compat; lava_compat.apply()"
    )
    assert result.returncode != 0 and "imported before inflor_deploy.lava_compat.apply()" in result.stderr


def test_lava_imports_after_a_progress_bar_fixed_the_start_method_to_fork():
    # tqdm's first bar creates a multiprocessing RLock, which fixes the start method.
    result = _run(
        "import multiprocessing; from tqdm import tqdm; list(tqdm(range(2)));"
        "assert multiprocessing.get_start_method(allow_none=True) == 'fork';"
        "from inflor_deploy import lava_compat; lava_compat.import_lava();"
        "import lava.magma.runtime.runtime; print(multiprocessing.get_start_method())"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fork"


def test_another_start_method_is_refused_with_the_reason():
    result = _run(
        "import multiprocessing; multiprocessing.set_start_method('spawn');"
        "from inflor_deploy import lava_compat; lava_compat.import_lava(); import lava.magma.runtime.runtime"
    )
    assert result.returncode != 0
    assert "already uses the multiprocessing start method 'spawn'" in result.stderr and "needs 'fork'" in result.stderr
