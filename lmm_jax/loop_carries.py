"""Loop carries that are batched from the start under `jax.vmap`: one batching pass per loop.

When `vmap` meets a `while_loop` or `scan`, JAX finds which carries are batched by a
fixpoint: it batches the loop body with the initial carries' batching, and if an output
carry comes out batched where its input was not (a Newton state that starts from constants:
value +inf, gradient 0, H = I), it batches the body again with that carry batched, and once
more for the final program. Nested loops multiply the passes: the fit's boundary phases
(`lax.scan`) around the Newton loop (`lax.while_loop`) batched the Newton step 7 times, the
bulk of a `fit_batch` program's trace time.

`tied_to(tree, reference)` returns `tree` unchanged in value but computed from `reference`
(`select(r = r or r ≠ r, v, v)`), so that every carry is batched exactly when the data it
is fitted to is: the fixpoint holds at the first pass. XLA folds `select(p, v, v)` to `v`,
so the compiled program does not change.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def tied_to(tree, reference: jnp.ndarray):
    """`tree` (a pytree of arrays) with the value it has, batched wherever the scalar
    `reference` is."""
    equal = reference == reference
    always = equal | ~equal
    return jax.tree_util.tree_map(lambda value: jnp.where(always, value, value), tree)


def data_reference(tree) -> jnp.ndarray:
    """A scalar computed from every floating-point leaf of `tree` (the model's arrays), for
    `tied_to`: batched whenever any of them is."""
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(tree)
              if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating) and leaf.size]
    return sum((jnp.sum(leaf) for leaf in leaves), jnp.zeros(()))
