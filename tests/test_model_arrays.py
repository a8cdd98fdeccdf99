"""The model's arrays: numpy on the host (`Model.host_arrays`), copied to the device when first
asked for (`Model.arrays`)."""

from __future__ import annotations

import jax
import numpy as np

import lmm_jax


def test_a_fit_from_the_host_arrays_equals_one_from_the_device_arrays(sleepstudy):
    """`Model.fit` hands its program the host arrays until `Model.arrays` has copied them to
    the device, and the device arrays after that: one compiled program, the same fit."""
    from lmm_jax import exported_programs

    model = lmm_jax.Model.from_formula("Reaction ~ Days + (Days | Subject)", sleepstudy)
    from_host = model.fit()
    programs = len(exported_programs._HOST_COMPILED)
    assert model._arrays is None
    device = model.arrays
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree_util.tree_leaves(device))
    for on_device, on_host in zip(jax.tree_util.tree_leaves(device), jax.tree_util.tree_leaves(model.host_arrays)):
        np.testing.assert_array_equal(np.asarray(on_device), on_host)
    from_device = model.fit()
    assert len(exported_programs._HOST_COMPILED) == programs
    assert from_device.reml_criterion == from_host.reml_criterion
    np.testing.assert_array_equal(from_device.theta, from_host.theta)
    np.testing.assert_array_equal(from_device.se.to_numpy(), from_host.se.to_numpy())


def test_a_large_model_is_copied_to_the_device_once(sleepstudy, monkeypatch):
    """Above `HOST_ARGUMENT_BYTES` the fit copies the arrays to the device (kept for the next
    call) instead of handing the program the host arrays each time: the same fit."""
    from lmm_jax import model as model_module

    formula = "Reaction ~ Days + (Days | Subject)"
    small = lmm_jax.Model.from_formula(formula, sleepstudy).fit()
    monkeypatch.setattr(model_module, "HOST_ARGUMENT_BYTES", 0)
    model = lmm_jax.Model.from_formula(formula, sleepstudy)
    large = model.fit()
    assert model._arrays is not None
    assert large.reml_criterion == small.reml_criterion
    np.testing.assert_array_equal(large.theta, small.theta)
