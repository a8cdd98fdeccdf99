"""`loop_carries.tied_to` leaves values and dtypes as they are, under jit and vmap alike."""

import jax
import jax.numpy as jnp
import numpy as np

from lmm_jax.loop_carries import data_reference, tied_to


def test_tied_values_and_dtypes_are_unchanged():
    tree = (jnp.arange(3), jnp.eye(2), jnp.asarray(jnp.inf), jnp.asarray(True))
    for reference in (jnp.asarray(2.5), jnp.asarray(jnp.nan), jnp.asarray(7)):
        out = jax.jit(tied_to)(tree, reference)
        for a, b in zip(tree, out):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)


def test_under_vmap_every_leaf_is_batched_with_its_value():
    references = jnp.asarray([1.0, jnp.nan, -3.0])
    out = jax.vmap(lambda r: tied_to((jnp.zeros(2), jnp.asarray(4)), r))(references)
    np.testing.assert_array_equal(out[0], np.zeros((3, 2)))
    np.testing.assert_array_equal(out[1], np.full(3, 4))


def test_data_reference_reads_floating_leaves_only():
    tree = {"y": jnp.asarray([1.0, 2.0]), "codes": jnp.asarray([3, 4]), "empty": jnp.zeros((0,)), "none": None}
    reference = data_reference(tree)
    assert reference.shape == () and float(reference) == 3.0
