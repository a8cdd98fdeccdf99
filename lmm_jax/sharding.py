"""Split a batch of independent fits over the local devices (GPUs, or CPU host devices).

    mesh = batch_mesh()                    # 1-D mesh over jax.local_devices(), axis "batch"
    out = sharded_map(fn, xs, consts, batch_size, mesh)

`sharded_map` is `jax.lax.map(lambda x: fn(x, consts), xs, batch_size=batch_size)` with the
leading axis of `xs` split into equal blocks, one per device (`jax.shard_map` with
`NamedSharding`-style specs P("batch") for xs and the outputs, P() — replicated — for
`consts`, the shared design). Each device runs the sequential `lax.map` over its block;
fits are independent, so no device talks to another and the results equal the
single-device ones. The caller pads the batch to a multiple of the device count
(`fit_batch` does, with repeats of the last item that it cuts afterwards).

With one device (or `mesh=None`) it is the plain `lax.map`, so a one-device run compiles
the same program as before sharding existed.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, PartitionSpec

AXIS = "batch"


def batch_mesh(devices=None) -> Mesh | None:
    """A 1-D mesh over `devices` (default: all local devices), or None for a single device."""
    devices = jax.local_devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must name at least one device")
    return Mesh(np.asarray(devices), (AXIS,)) if len(devices) > 1 else None


def device_count(mesh: Mesh | None) -> int:
    return 1 if mesh is None else mesh.devices.size


def sharded_map(fn, xs, consts, batch_size: int, mesh: Mesh | None = None):
    """fn(x, consts) for each x along the leading axis of the pytree xs, split over `mesh`.

    The leading axis must be a multiple of the mesh's device count.
    """
    def local(xs_block, consts):
        return jax.lax.map(lambda x: fn(x, consts), xs_block, batch_size=batch_size)

    if mesh is None:
        return local(xs, consts)
    n_items = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if n_items % device_count(mesh):
        raise ValueError(f"the batch ({n_items}) must be a multiple of the device count "
                         f"({device_count(mesh)})")
    split, replicated = PartitionSpec(AXIS), PartitionSpec()
    return jax.shard_map(local, mesh=mesh, in_specs=(split, replicated), out_specs=split,
                         check_vma=False)(xs, consts)
