"""Fits in a fresh process without tracing or compiling: compiled programs stored on disk.

JAX's persistent compilation cache (`compilation_cache.py`) skips XLA's compilation in a
new process, but not the Python tracing and lowering that precede it: for a fit (Newton
iterations with exact Hessians by forward-over-reverse autodiff) those take ~0.7 s of a
~1 s cold command-line fit. With the cache enabled, `cached_call(function, args, static)`
therefore stores the compiled program itself: the first process traces, compiles and
serialises it (`jax.experimental.serialize_executable`) into the cache folder with its
output tree, and later processes load the executable and call it, with no tracing,
lowering or cache lookup (a command-line fit's program, the fit with its summaries: ~0.1 s
less than loading a `jax.export`ed program, which still had to be lowered to find XLA's
cached executable).
`compiled_call` does the same for `fit_batch`'s chunks. Where a backend cannot serialise
its executables, or the compile found the program in JAX's persistent cache (whose loaded
executables do not serialise whole: `_store`), nothing is stored and each process compiles
or loads it from JAX's cache as before.

A stored program is found by a key over everything it was specialised on: the function's
name, its static arguments (`repr`), the shapes, dtypes and weak types of the argument
leaves and their tree structure, the versions of jax and jaxlib, the backend, the device
kind and the CPU's instruction-set flags (an executable is machine code), and a hash of
lmm_jax's own source files (a changed package never runs an old program). Static
arguments whose `repr` is not stable across processes (a structure built from a user's
function) are not stored. Such calls, and every call without the cache, `cached_call`
compiles ahead of time with `HOST_COMPILER_OPTIONS` (faster to compile) and keeps for the
process.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import threading
from pathlib import Path

import jax
import jaxlib
import numpy as np
from jax.experimental import serialize_executable

from .compilation_cache import PROGRAMS_FOLDER, cache_dir, max_cache_bytes, prune_cache

FOLDER = PROGRAMS_FOLDER
_LOADED: dict[str, object] = {}


@functools.lru_cache(maxsize=1)
def source_fingerprint() -> str:
    """sha256 over lmm_jax's Python source files (paths and contents)."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _leaf_signature(leaf) -> tuple:
    """(shape, dtype name, weak type) of an argument leaf: what a compiled program is
    specialised on."""
    return np.shape(leaf), str(getattr(leaf, "dtype", type(leaf).__name__)), bool(getattr(leaf, "weak_type", False))


@functools.lru_cache(maxsize=1)
def machine_signature() -> str:
    """The device kind and, on Linux, the CPU's instruction-set flags: a stored executable
    is machine code for this kind of machine."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return f"{jax.devices()[0].device_kind}\x00{flags.strip()}"


def program_key(function, args, static: dict) -> str | None:
    """The store key of `function(**args, **static)`, or None when it cannot be keyed."""
    described = repr(sorted(static.items()))
    if " at 0x" in described or "..." in described:  # an address, or a shortened array: not stable
        return None
    leaves, tree = jax.tree_util.tree_flatten(args)
    parts = [function.__module__, function.__qualname__, described, str(tree),
             repr([_leaf_signature(leaf) for leaf in leaves]),
             jax.__version__, jaxlib.__version__, jax.default_backend(), machine_signature(),
             str(jax.config.jax_enable_x64), source_fingerprint()]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


_PERSISTENT_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_compiling = threading.local()  # .hits: persistent-cache hits seen by this thread's compiles


def _count_cache_hit(event: str, **_) -> None:
    if event == _PERSISTENT_CACHE_HIT and hasattr(_compiling, "hits"):
        _compiling.hits += 1


jax.monitoring.register_event_listener(_count_cache_hit)


def _compile_flat(key: str, function, args, static: dict, compiler_options: dict | None):
    """`function(**args, **static)` traced and compiled as a function of the flat argument
    leaves; returns the compiled program, the output tree and whether the executable came
    from JAX's persistent cache. The program is named after `key`, so that the persistent
    cache holds no executable for it unless this key was compiled before (see `_store`)."""
    leaves, in_tree = jax.tree_util.tree_flatten(args)
    out_tree = []
    function = getattr(function, "__wrapped__", function)  # a jitted function's own code

    def flat(*leaves):
        out = function(**jax.tree_util.tree_unflatten(in_tree, leaves), **static)
        out_leaves, tree = jax.tree_util.tree_flatten(out)
        out_tree.append(tree)
        return out_leaves

    flat.__name__ = flat.__qualname__ = f"lmm_jax_{key[:16]}"
    _compiling.hits = 0
    try:
        compiled = jax.jit(flat).trace(*leaves).lower().compile(compiler_options)
        from_cache = _compiling.hits > 0
    finally:
        del _compiling.hits
    return compiled, out_tree[0], from_cache


def _store(path: Path, compiled, out_tree) -> None:
    """Write the serialised executable and the output tree to `path` (nothing where the
    backend cannot serialise it). Only a freshly compiled executable is stored: XLA:CPU's
    executable loaded from JAX's persistent cache serialises without its kernels ("Function
    ... not found" when run in the next process), so `_load` does not store one."""
    try:
        serialized, flat_in_tree, flat_out_tree = serialize_executable.serialize(compiled)
    except (ValueError, NotImplementedError):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.partial")
    temporary.write_bytes(pickle.dumps((serialized, flat_in_tree, flat_out_tree, out_tree)))
    temporary.replace(path)  # atomic: a concurrent reader sees the whole file or none
    prune_cache(path.parent.parent, max_cache_bytes())


def _read(path: Path):
    """The compiled program stored at `path` and its output tree. On a CPU, jaxlib's LAPACK
    kernels (eigh, Cholesky, ...) are set up first: JAX does that while lowering a program
    (or calling an exported one), which a loaded executable skips, and it crashes without
    them. Raises where that cannot be done (then the program is compiled anew)."""
    if jax.default_backend() == "cpu":
        from jax._src.lax.linalg import initialize_lapack  # what jax.export's call does

        initialize_lapack()
    serialized, flat_in_tree, flat_out_tree, out_tree = pickle.loads(path.read_bytes())
    os.utime(path)  # used now: the last to be pruned (`prune_cache`)
    return serialize_executable.deserialize_and_load(serialized, flat_in_tree, flat_out_tree), out_tree


def _load(key: str, function, args, static: dict, compiler_options: dict | None = None):
    """The compiled program of `key` and its output tree: from this process, the store, or
    compiled (and stored) now."""
    if key not in _LOADED:
        path = cache_dir() / FOLDER / f"{key}.exe"
        try:
            _LOADED[key] = _read(path)
        except Exception:  # not stored yet, or unreadable (truncated, another version): store anew
            compiled, out_tree, from_cache = _compile_flat(key, function, args, static, compiler_options)
            if not from_cache:
                _store(path, compiled, out_tree)
            _LOADED[key] = (compiled, out_tree)
    return _LOADED[key]


# XLA:CPU's older loop emitters for programs run once or a few times from the host (a fit,
# its summaries): they compile 1.5-1.8x faster (jaxlib 0.10.2, 2-core VM: mathachieve's fit
# 4.5 -> 3.0 s, its small-sample terms 9.2 -> 5.2 s) and ran as fast here; GPU compilers
# ignore the option. A user's own jit of `Model.fit_params` keeps JAX's defaults.
HOST_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
_HOST_COMPILED: dict[tuple, object] = {}


def cached_call(function, args: dict, static: dict):
    """function(**args, **static) called from the host: through a stored compiled program
    when the compilation cache is enabled (module docstring), else (no cache, or a call that
    cannot be stored) compiled ahead of time with `HOST_COMPILER_OPTIONS`, once per process
    and argument shapes. Both compile with those options."""
    key = _store_key(function, args, static, HOST_COMPILER_OPTIONS)
    program = _host_compiled(function, args, static) if key is None else \
        _stored_program(key, function, args, static, HOST_COMPILER_OPTIONS)
    return program(**args)


def _host_compiled(function, args: dict, static: dict):
    """The ahead-of-time compiled `function` for arguments shaped like `args`."""
    leaves, tree = jax.tree_util.tree_flatten(args)
    key = (function, tuple(sorted(static.items())), tree, jax.config.jax_enable_x64,
           tuple(_leaf_signature(leaf) for leaf in leaves))
    if key not in _HOST_COMPILED:
        _HOST_COMPILED[key] = function.trace(**args, **static).lower().compile(HOST_COMPILER_OPTIONS)
    return _HOST_COMPILED[key]


def compiled_call(function, args: dict, static: dict, compiler_options: dict | None = None,
                  store: bool = True):
    """A function of keyword arguments shaped like `args` that runs `function(**args, **static)`'s
    program, compiled before it returns (so threads that call it share one program): the
    stored one when the compilation cache is enabled (and `store`), else the jitted
    `function`. `compiler_options`: the ones `function` was jitted with, for the stored
    program's compile."""
    key = _store_key(function, args, static, compiler_options) if store else None
    if key is None:
        function.lower(**args, **static).compile()  # fills jit's cache for these shapes
        return lambda **kwargs: function(**kwargs, **static)
    return _stored_program(key, function, args, static, compiler_options)


def _store_key(function, args: dict, static: dict, compiler_options: dict | None) -> str | None:
    """The store key of the call when the compilation cache is enabled, else None."""
    if cache_dir() is None:
        return None
    return program_key(function, args, dict(static, compiler_options=compiler_options))


def _stored_program(key: str, function, args: dict, static: dict, compiler_options: dict | None):
    """A function of keyword arguments that runs the stored program of `key` (`_load`)."""
    program, out_tree = _load(key, function, args, static, compiler_options)
    return lambda **kwargs: jax.tree_util.tree_unflatten(out_tree, program(*jax.tree_util.tree_leaves(kwargs)))


def forget_compiled_programs() -> None:
    """Drop every compiled program this process holds (lmm_jax's and JAX's in-memory caches),
    freeing their memory; later calls load them from the compilation cache or compile anew."""
    _LOADED.clear()
    _HOST_COMPILED.clear()
    jax.clear_caches()
