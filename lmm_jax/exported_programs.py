"""Fits in a fresh process without tracing: programs stored with `jax.export`.

JAX's persistent compilation cache (`compilation_cache.py`) skips XLA's compilation in a
new process, but not the Python tracing that precedes it: for a fit (Newton iterations
with exact Hessians by forward-over-reverse autodiff) tracing and lowering take ~0.7 s of
a ~1 s cold command-line fit. With the cache enabled, `cached_call(function, args,
static)` therefore also stores the traced program: the first process exports it
(`jax.export`: StableHLO plus the in/out tree structures) into the cache folder, and later
processes deserialize it and call it, compiling from the persistent cache; within a
process the deserialized program is wrapped in one `jax.jit`, so repeated calls dispatch
as fast as the plain function. `compiled_call` does the same for `fit_batch`'s chunks.

A stored program is found by a key over everything it was specialised on: the function's
name, its static arguments (`repr`), the shapes and dtypes of the argument leaves and their
tree structure, the versions of jax and jaxlib, the backend, and a hash of lmm_jax's own
source files (a changed package never runs an old program). Static arguments whose `repr`
is not stable across processes (a structure built from a user's function) are not stored.
Such calls, and every call without the cache, `cached_call` compiles ahead of time with
`HOST_COMPILER_OPTIONS` (faster to compile) and keeps for the process.
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

from .compilation_cache import cache_dir

FOLDER = "lmm_jax_exports"
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
    """(shape, dtype name) of an argument leaf: what a compiled program is specialised on."""
    return np.shape(leaf), str(getattr(leaf, "dtype", type(leaf).__name__))


def program_key(function, args, static: dict) -> str | None:
    """The store key of `function(**args, **static)`, or None when it cannot be keyed."""
    described = repr(sorted(static.items()))
    if " at 0x" in described or "..." in described:  # an address, or a shortened array: not stable
        return None
    leaves, tree = jax.tree_util.tree_flatten(args)
    parts = [function.__module__, function.__qualname__, described, str(tree),
             repr([_leaf_signature(leaf) for leaf in leaves]),
             jax.__version__,
             jaxlib.__version__, jax.default_backend(), str(jax.config.jax_enable_x64),
             source_fingerprint()]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _export(function, args, static: dict, path: Path):
    """Trace `function`, store the exported program and the output tree; return both."""
    leaves, in_tree = jax.tree_util.tree_flatten(args)
    out_tree = []
    function = getattr(function, "__wrapped__", function)  # a jitted function's own code

    def flat(*leaves):
        out = function(**jax.tree_util.tree_unflatten(in_tree, leaves), **static)
        out_leaves, tree = jax.tree_util.tree_flatten(out)
        out_tree.append(tree)
        return out_leaves

    exported = jax.export.export(jax.jit(flat))(*leaves)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.partial")
    temporary.write_bytes(pickle.dumps((bytes(exported.serialize()), out_tree[0])))
    temporary.replace(path)  # atomic: a concurrent reader sees the whole file or none
    return exported, out_tree[0]


def _load(key: str, function, args, static: dict, compiler_options: dict | None = None):
    """The jitted program of `key` and its output tree: from this process, the store, or traced now."""
    if key not in _LOADED:
        path = cache_dir() / FOLDER / f"{key}.bin"
        try:
            blob, out_tree = pickle.loads(path.read_bytes())
            exported = jax.export.deserialize(bytearray(blob))
        except Exception:  # not stored yet, or unreadable (truncated, another version): store anew
            exported, out_tree = _export(function, args, static, path)
        _LOADED[key] = (jax.jit(exported.call, compiler_options=compiler_options), out_tree)
    return _LOADED[key]


# XLA:CPU's older loop emitters for programs run once or a few times from the host (a fit,
# its summaries): they compile 1.5-1.8x faster (jaxlib 0.10.2, 2-core VM: mathachieve's fit
# 4.5 -> 3.0 s, its small-sample terms 9.2 -> 5.2 s) and ran as fast here; GPU compilers
# ignore the option. A user's own jit of `Model.fit_params` keeps JAX's defaults.
HOST_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
_HOST_COMPILED: dict[tuple, object] = {}


def cached_call(function, args: dict, static: dict):
    """function(**args, **static) called from the host: through a stored exported program
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
           tuple(_leaf_signature(leaf) + (bool(getattr(leaf, "weak_type", False)),) for leaf in leaves))
    if key not in _HOST_COMPILED:
        _HOST_COMPILED[key] = function.trace(**args, **static).lower().compile(HOST_COMPILER_OPTIONS)
    return _HOST_COMPILED[key]


def compiled_call(function, args: dict, static: dict, compile_now: bool = True,
                  compiler_options: dict | None = None, store: bool = True):
    """A function of keyword arguments shaped like `args` that runs `function(**args, **static)`'s
    program: the stored one when the compilation cache is enabled (and `store`), else the
    jitted `function`. `compile_now`: compile before returning (so threads that call it share
    one program); `compiler_options`: the ones `function` was jitted with, for the stored
    program's compile."""
    key = _store_key(function, args, static, compiler_options) if store else None
    if key is None:
        if compile_now:
            function.lower(**args, **static).compile()  # fills jit's cache for these shapes
        return lambda **kwargs: function(**kwargs, **static)
    return _stored_program(key, function, args, static, compiler_options, compile_now)


def _store_key(function, args: dict, static: dict, compiler_options: dict | None) -> str | None:
    """The store key of the call when the compilation cache is enabled, else None."""
    if cache_dir() is None:
        return None
    return program_key(function, args, dict(static, compiler_options=compiler_options))


def _stored_program(key: str, function, args: dict, static: dict, compiler_options: dict | None,
                    compile_now: bool = False):
    """A function of keyword arguments that runs the stored program of `key` (`_load`)."""
    program, out_tree = _load(key, function, args, static, compiler_options)
    if compile_now:
        program.lower(*jax.tree_util.tree_leaves(args)).compile()
    return lambda **kwargs: jax.tree_util.tree_unflatten(out_tree, program(*jax.tree_util.tree_leaves(kwargs)))
