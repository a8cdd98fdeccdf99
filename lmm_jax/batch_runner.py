"""Running B independent fits: host-side chunks, equal-length padding, devices and precision.

`run_in_chunks(call, items, ...)` cuts a pytree of host arrays with leading axis B into
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

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

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


def chunk_layout(n_items: int, batch_size: int, chunk_size: int, n_devices: int = 1):
    """(number of chunks, items per chunk, batch size): equal chunks, no remainder groups."""
    if batch_size < 1 or chunk_size < 1:
        raise ValueError("batch_size and chunk_size must be positive")
    n_chunks = math.ceil(n_items / chunk_size)
    batch_size = min(batch_size, math.ceil(n_items / n_chunks / n_devices))
    group = batch_size * n_devices
    return n_chunks, group * math.ceil(n_items / n_chunks / group), batch_size


def run_in_chunks(call, items, *, batch_size: int, chunk_size: int, mesh=None,
                  dtype: str = "float64", progress: bool = False, desc: str = "fit_batch"):
    """call(chunk, batch_size) over equal chunks of `items` (host arrays, leading axis B);
    the outputs as host arrays, concatenated and cut back to B items."""
    n_items = jax.tree_util.tree_leaves(items)[0].shape[0]
    n_chunks, per_chunk, batch_size = chunk_layout(n_items, batch_size, chunk_size, device_count(mesh))
    extra = n_chunks * per_chunk - n_items
    padded = jax.tree_util.tree_map(
        lambda a: np.concatenate([a, np.repeat(a[-1:], extra, axis=0)]), cast_floats(items, dtype))
    chunks = range(n_chunks)
    if progress and n_chunks > 1:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=desc, unit="chunk")
    outputs = []
    with precision(dtype):
        for c in chunks:
            chunk = jax.tree_util.tree_map(lambda a: a[c * per_chunk:(c + 1) * per_chunk], padded)
            outputs.append(jax.device_get(call(place(chunk, mesh), batch_size)))
    return jax.tree_util.tree_map(lambda *parts: np.concatenate(parts)[:n_items], *outputs)
