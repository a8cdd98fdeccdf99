"""The compilation cache is on by default for the Python API: a per-user folder, bounded,
turned off by LMM_JAX_CACHE=0, and a second process loads what the first compiled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmm_jax.compilation_cache import max_cache_bytes, prune_cache

ROOT = Path(__file__).resolve().parents[1]
FIT_AND_REPORT = """
import sys, lmm_jax
from lmm_jax.compilation_cache import cache_dir
r = lmm_jax.fit("Yield ~ 1 + (1 | Batch)", lmm_jax.datasets.load("dyestuff"))
print(cache_dir(), repr(r.loglik))
"""


def _run(env_changes: dict) -> tuple[str, str]:
    """(cache folder, log-likelihood) printed by FIT_AND_REPORT in a fresh process."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LMM_JAX_CACHE")}
    env.update(env_changes, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", FIT_AND_REPORT], env=env, capture_output=True, text=True,
                         check=True)
    folder, loglik = out.stdout.split()
    return folder, loglik


def test_python_api_stores_programs_by_default_and_reuses_them(tmp_path):
    """No call to enable_compilation_cache: the fit's program is stored in $LMM_JAX_CACHE_DIR,
    and a second process loads it (the file is not rewritten) with the same numbers."""
    folder = tmp_path / "cache"
    first = _run({"LMM_JAX_CACHE_DIR": str(folder)})
    stored = sorted((folder / "lmm_jax_programs").glob("*.exe"))
    assert first[0] == str(folder) and stored
    os.utime(stored[0], ns=(1, 1))  # loading marks a program as used (prune order)
    second = _run({"LMM_JAX_CACHE_DIR": str(folder)})
    assert second == first
    assert sorted((folder / "lmm_jax_programs").glob("*.exe")) == stored
    assert stored[0].stat().st_mtime_ns > 1


def test_cache_off_by_environment_writes_nothing(tmp_path):
    folder = tmp_path / "cache"
    off = _run({"LMM_JAX_CACHE": "0", "LMM_JAX_CACHE_DIR": str(folder)})
    assert not folder.exists()
    on = _run({"LMM_JAX_CACHE_DIR": str(folder)})
    assert off == ("None", on[1]) and folder.exists()


def test_cache_bound_from_environment(monkeypatch):
    monkeypatch.setenv("LMM_JAX_CACHE_MAX_MB", "1.5")
    assert max_cache_bytes() == 3 * 2 ** 19
    monkeypatch.delenv("LMM_JAX_CACHE_MAX_MB")
    assert max_cache_bytes() == 2048 * 2 ** 20
    monkeypatch.setenv("LMM_JAX_CACHE_MAX_MB", "lots")
    with pytest.raises(ValueError, match="LMM_JAX_CACHE_MAX_MB='lots'"):
        max_cache_bytes()


def test_prune_deletes_least_recently_used_entries_first(tmp_path):
    """JAX's entries and lmm_jax's programs of 100 bytes used at times 4, 1, 3, 2 under a
    250-byte bound: the two used longest ago go; files that are no cache entries stay."""
    programs = tmp_path / "lmm_jax_programs"
    programs.mkdir()
    paths = [tmp_path / "a-cache", programs / "b.exe", tmp_path / "c-cache", programs / "d.exe"]
    for path, used in zip(paths, (4, 1, 3, 2)):
        path.write_bytes(b"x" * 100)
        os.utime(path, (used, used))
    (programs / "other.partial").write_bytes(b"y" * 1000)
    (tmp_path / ".lockfile").write_bytes(b"")
    deleted = prune_cache(tmp_path, 250)
    assert sorted(p.name for p in deleted) == ["b.exe", "d.exe"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [".lockfile", "a-cache", "c-cache",
                                                                          "other.partial"]
    assert prune_cache(tmp_path, 250) == []


def test_a_folder_of_an_earlier_version_takes_new_entries_without_errors(tmp_path):
    """A JAX entry written without JAX's size-bounded cache (no '-atime' file beside it, as an
    earlier lmm_jax left its folder): new programs are written without JAX's 'Error writing
    persistent compilation cache entry' warning."""
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "jit_old_program-0123abcd-cache").write_bytes(b"x" * 100)
    env = {key: value for key, value in os.environ.items() if not key.startswith("LMM_JAX_CACHE")}
    env.update(LMM_JAX_CACHE_DIR=str(folder),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-W", "always", "-c", FIT_AND_REPORT], env=env, capture_output=True,
                         text=True, check=True)
    assert "Error writing" not in out.stderr
    assert len(list(folder.glob("*-cache"))) > 1
