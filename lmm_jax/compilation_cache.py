"""JAX's persistent compilation cache, switched on for lmm_jax's programs.

    lmm_jax.enable_compilation_cache()            # $LMM_JAX_CACHE_DIR or ~/.cache/lmm_jax
    lmm_jax.enable_compilation_cache("/scratch/jax-cache")

A fit compiles one XLA program per model shape (numbers of levels and columns, structures,
REML/ML), which takes seconds on a CPU, far longer than the fit itself. With the cache on,
every compiled program is written to the folder, and a later process that needs the same
program loads it instead of compiling (the command line does this by default). The cache
is JAX's own (`jax_compilation_cache_dir`), so it holds the user's other JAX programs too;
nothing is cached until this is called. lmm_jax also stores its compiled fit programs there
(`exported_programs.py`), so that a new process skips tracing and lowering as well.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """$LMM_JAX_CACHE_DIR, else ~/.cache/lmm_jax."""
    return Path(os.environ.get("LMM_JAX_CACHE_DIR") or Path.home() / ".cache" / "lmm_jax")


def enable_compilation_cache(folder=None) -> Path:
    """Keep every compiled program in `folder` (default `default_cache_dir()`), however short
    its compile time, and return the folder."""
    import jax

    folder = Path(folder) if folder is not None else default_cache_dir()
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def cache_dir() -> Path | None:
    """The folder of JAX's persistent compilation cache when it is enabled, else None."""
    import jax

    folder = jax.config.jax_compilation_cache_dir
    return Path(folder) if folder else None
