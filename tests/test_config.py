"""What importing lmm_jax sets: float64, and OpenBLAS's idle spin (`_config.py`)."""

import os
import subprocess
import sys

import pytest

CHILD = "import os, jax, lmm_jax; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), jax.config.jax_enable_x64)"


def _import_in_fresh_process(**env_changes) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    env.update(env_changes)
    return subprocess.run([sys.executable, "-c", CHILD], env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.parametrize("given, expected", [(None, "16"), ("8", "8")])
def test_import_sets_float64_and_a_short_openblas_spin_unless_the_user_set_one(given, expected):
    changes = {} if given is None else {"OPENBLAS_THREAD_TIMEOUT": given}
    assert _import_in_fresh_process(**changes) == f"{expected} True"


def test_scipy_openblas_is_not_loaded_before_the_setting():
    """OpenBLAS reads the variable when loaded: jax, imported before the setting, must not
    load scipy's OpenBLAS (the wheels' `libscipy_openblas`; numpy's is `libscipy_openblas64_`)."""
    code = "import jax; print(any('libscipy_openblas-' in line for line in open('/proc/self/maps')))"
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("needs /proc/self/maps (Linux)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"
