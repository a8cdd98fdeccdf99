"""Running B independent fits: host-side chunks, equal-length padding, devices and precision.

`run_in_chunks(function, items, consts, ...)` cuts a pytree of host arrays with leading axis B into
chunks of at most `chunk_size` items, all of one length (the last chunk is padded with
repeats of the last item, cut off afterwards), so one program is compiled per call. The
chunk length is a multiple of batch_size × (number of devices): `lax.map` then has no
remainder group and every device gets the same number of items.

Precision: `dtype="float64"` (default) computes in double precision, as the rest of the
package. `dtype="float32"` casts the floating-point inputs to single precision and traces
the program with `jax.enable_x64(False)`, so every intermediate is float32 too (with x64
on, constants such as `jnp.eye` would silently promote the work back to float64).
"""

from __future__ import annotations

import contextlib
import math
import os
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from .exported_programs import compiled_call
from .sharding import AXIS, device_count

DTYPES = ("float64", "float32")


def check_dtype(dtype) -> str:
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return name


def precision(dtype: str):
    """The context a batch runs in: float32 traces with x64 disabled."""
    return jax.enable_x64(False) if dtype == "float32" else contextlib.nullcontext()


def cast_floats(tree, dtype: str):
    """Floating-point leaves of a pytree of host arrays as `dtype`; integer leaves unchanged."""
    def cast(a):
        a = np.asarray(a)
        return a.astype(dtype) if a.dtype.kind == "f" else a
    return jax.tree_util.tree_map(cast, tree)


def place(tree, mesh):
    """Put a chunk on the devices: split along the batch axis over `mesh` (NamedSharding)."""
    if mesh is None:
        return jax.tree_util.tree_map(jax.numpy.asarray, tree)
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(AXIS)))


def host_threads(mesh) -> int:
    """How many chunks run at once: one per CPU core on an unsharded CPU run (XLA runs a
    small program on one core; chunks are independent programs, and the compiled code
    releases the GIL), otherwise 1 (a GPU, or a mesh that already spreads the work)."""
    if mesh is not None or jax.default_backend() != "cpu":
        return 1
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def chunk_layout(n_items: int, batch_size: int, chunk_size: int, n_devices: int = 1, n_threads: int = 1):
    """(number of chunks, items per chunk, batch size): equal chunks, no remainder groups,
    and a multiple of `n_threads` chunks when there are enough items to keep them all busy."""
    if batch_size < 1 or chunk_size < 1:
        raise ValueError("batch_size and chunk_size must be positive")
    n_chunks = math.ceil(n_items / chunk_size)
    if n_items >= 2 * n_threads * batch_size:
        n_chunks = n_threads * math.ceil(n_chunks / n_threads)
    batch_size = min(batch_size, math.ceil(n_items / n_chunks / n_devices))
    group = batch_size * n_devices
    return n_chunks, group * math.ceil(n_items / n_chunks / group), batch_size


def run_in_chunks(function, items, consts: dict, static: dict, *, batch_size: int, chunk_size: int, mesh=None,
                  dtype: str = "float64", progress: bool = False, desc: str = "fit_batch",
                  compiler_options: dict | None = None, concurrent: bool = True):
    """`function(items=chunk, batch_size=, mesh=, **consts, **static)` over equal chunks of
    `items` (host arrays, leading axis B); the outputs as host arrays, concatenated and cut
    back to B items. `function` is jitted, `static` holds its static arguments besides
    batch_size and mesh, `compiler_options` those it was jitted with. The program is
    compiled once ahead of time (loaded from the store of `exported_programs.py` when the
    compilation cache is on); on a CPU without a mesh, `host_threads` chunks then run at
    once (one per core), unless not `concurrent`: a program with batched LAPACK calls
    (`blocked.factors_unrolled`) runs one chunk at a time, since jaxlib's CPU batched
    kernels wait on the thread pool they run on, and two chunks' kernels, one per core,
    each holding a pool thread, hung for good (fit_batch of (Days || Subject) at B = 64:
    0% CPU; one thread: B = 2,000 in 1.2 s, three runs)."""
    n_items = jax.tree_util.tree_leaves(items)[0].shape[0]
    n_threads = host_threads(mesh) if concurrent else 1
    n_chunks, per_chunk, batch_size = chunk_layout(n_items, batch_size, chunk_size,
                                                   device_count(mesh), n_threads)
    extra = n_chunks * per_chunk - n_items
    padded = jax.tree_util.tree_map(
        lambda a: np.concatenate([a, np.repeat(a[-1:], extra, axis=0)]), cast_floats(items, dtype))

    def chunk(c):
        return place(jax.tree_util.tree_map(lambda a: a[c * per_chunk:(c + 1) * per_chunk], padded), mesh)

    static = dict(static, batch_size=batch_size, mesh=mesh)
    bar = progress_bar(n_items, desc) if progress and n_chunks > 1 else None
    with precision(dtype):
        # stored programs (`exported_programs.py`) only unsharded: a sharded program is tied
        # to its devices
        program = compiled_call(function, dict(consts, items=chunk(0)), static,
                                compiler_options=compiler_options, store=mesh is None)

    def run(c):
        with precision(dtype):  # a thread-local setting: entered in the thread that calls
            return jax.device_get(program(items=chunk(c), **consts))

    outputs = []
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for c, output in enumerate(pool.map(run, range(n_chunks))):
            outputs.append(output)
            if bar is not None:  # the chunk's real items, not its padding
                bar.set_postfix_str("", refresh=False)
                bar.update(max(0, min(per_chunk, n_items - c * per_chunk)))
    if bar is not None:
        bar.close()
    return jax.tree_util.tree_map(lambda *parts: np.concatenate(parts)[:n_items], *outputs)


def progress_bar(n_items: int, desc: str):
    """A tqdm bar counting the `n_items` fits, saying "compiling" until the first chunk is
    done (the compile takes seconds, and a bar at 0 said nothing)."""
    from tqdm.auto import tqdm

    return tqdm(total=n_items, desc=desc, unit="fit", postfix="compiling")
