"""The compilation cache: compiled programs kept on disk, on by default.

A fit compiles one XLA program per model shape (numbers of levels and columns, structures,
REML/ML), which takes seconds on a CPU, far longer than the fit itself. With the cache on,
every compiled program is written to a per-user folder, and a later process that needs the
same program loads it instead of compiling: lmm_jax's own fit programs as executables
(`exported_programs.py`, which also skips tracing and lowering), everything else through
JAX's persistent compilation cache (`jax_compilation_cache_dir`).

`import lmm_jax` turns it on (`enable_by_default`) unless

- the environment sets `LMM_JAX_CACHE=0` (or off, false, no): nothing is written;
- the user has set JAX's `jax_compilation_cache_dir` already: lmm_jax stores its programs
  there and changes nothing else.

The folder is `$LMM_JAX_CACHE_DIR`, else ~/.cache/lmm_jax; it is bounded by
`$LMM_JAX_CACHE_MAX_MB` (default 2048): whenever lmm_jax stores a program, the oldest entries,
JAX's and lmm_jax's alike, are deleted until the folder fits (`prune_cache`). (JAX's own
eviction, `jax_compilation_cache_max_size`, is not used: it fails on every write to a folder
holding entries written without it, as an earlier version's folder does.) Entries are keyed
by everything they were compiled for
(versions of jax, jaxlib and lmm_jax's source, backend, device and CPU flags), so one folder
serves several versions and machines. Since JAX's cache is global, it then also keeps the
session's other JAX programs; `LMM_JAX_CACHE=0` leaves JAX's configuration untouched.

    lmm_jax.enable_compilation_cache("/scratch/jax-cache")   # another folder
    lmm_jax.disable_compilation_cache()                      # this process: compile anew
"""

from __future__ import annotations

import os
from pathlib import Path

OFF_VALUES = frozenset({"0", "off", "false", "no"})
DEFAULT_MAX_MB = 2048


def default_cache_dir() -> Path:
    """$LMM_JAX_CACHE_DIR, else ~/.cache/lmm_jax."""
    return Path(os.environ.get("LMM_JAX_CACHE_DIR") or Path.home() / ".cache" / "lmm_jax")


def max_cache_bytes() -> int:
    """The folder's size bound: $LMM_JAX_CACHE_MAX_MB megabytes (default 2048)."""
    text = os.environ.get("LMM_JAX_CACHE_MAX_MB", "").strip()
    try:
        megabytes = float(text) if text else DEFAULT_MAX_MB
    except ValueError:
        raise ValueError(f"LMM_JAX_CACHE_MAX_MB={text!r} is not a number of megabytes") from None
    return int(megabytes * 2 ** 20)


def enable_compilation_cache(folder=None) -> Path:
    """Keep every compiled program in `folder` (default `default_cache_dir()`), however short
    its compile time, bounded by `max_cache_bytes()`; return the folder."""
    import jax

    folder = Path(folder) if folder is not None else default_cache_dir()
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def disable_compilation_cache() -> None:
    """Store and load nothing from here on in this process (programs already loaded stay).
    JAX's cache, once it has served a compile, keeps its folder for the process."""
    import jax

    jax.config.update("jax_compilation_cache_dir", None)


def enable_by_default() -> Path | None:
    """What `import lmm_jax` does (module docstring); the folder in use, or None when off."""
    import jax

    if jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    if os.environ.get("LMM_JAX_CACHE", "").strip().lower() in OFF_VALUES:
        return None
    return enable_compilation_cache()


def cache_dir() -> Path | None:
    """The folder of JAX's persistent compilation cache when it is enabled, else None."""
    import jax

    folder = jax.config.jax_compilation_cache_dir
    return Path(folder) if folder else None


PROGRAMS_FOLDER = "lmm_jax_programs"  # lmm_jax's stored programs, inside the cache folder
CACHE_ENTRIES = ("*-cache", f"{PROGRAMS_FOLDER}/*.exe")  # JAX's entries, lmm_jax's programs


def prune_cache(folder: Path, max_bytes: int) -> list[Path]:
    """Delete the least recently used entries of the cache `folder` (JAX's and lmm_jax's: the
    oldest modification time first; `exported_programs` touches a program when it loads
    one) until the rest take at most `max_bytes`; return the deleted paths. An entry another
    process deletes first is skipped; other files are left alone."""
    entries = []
    for path in (path for pattern in CACHE_ENTRIES for path in folder.glob(pattern)):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        entries.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    deleted = []
    for _, size, path in sorted(entries):
        if total <= max_bytes:
            break
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        total -= size
        deleted.append(path)
    return deleted
