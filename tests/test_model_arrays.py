"""The model's arrays: numpy on the host (`Model.host_arrays`; a `ResidualModel`'s also
`host_residual_arrays`), copied to the device when first asked for (`Model.arrays`,
`ResidualModel.residual_arrays`)."""

from __future__ import annotations

import logging

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


def _orthodont_half():
    """Every second subject of Orthodont (both sexes): a shape no other test fits."""
    data = lmm_jax.datasets.load("orthodont")
    return data[data["Subject"].isin(data["Subject"].unique()[::2])]


def _residual_model():
    from lmm_jax.residual_model import ResidualModel

    return ResidualModel.from_formula("distance ~ age + (1 | Subject)", _orthodont_half(),
                                      correlation="ar1(~ 1 | Subject)", variance="ident(~ 1 | Sex)")


def test_a_residual_fit_compiles_only_its_own_program(caplog):
    """Building a `ResidualModel` and fitting it compiles at most one program, the fit's: its arrays
    go to the device by `to_device` or as host arguments, and nlme's correlation and
    variance parameters come out of the fit's program (`jnp.asarray` compiled a conversion
    program per array shape, and the eager `natural` calls one each, in a cold process)."""
    with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles(True):
        result = _residual_model().fit()
        result.correlation_parameters, result.variance_function
    compiled = [record.getMessage().split(" with ")[0] for record in caplog.records
                if record.getMessage().startswith("Compiling")]
    # the fit's program: by its name, or as a stored program (`exported_programs.py`, when an
    # earlier test enabled the compilation cache), which may also be loaded without a compile
    fit_programs = ("Compiling jit(fit_residual_with_summaries)", "Compiling jit(lmm_jax_")
    assert len(compiled) <= 1 and all(name.startswith(fit_programs) for name in compiled), compiled


def test_a_residual_fit_from_the_host_arrays_equals_one_from_the_device_arrays():
    """The residual twin of the test above: the host arrays until `arrays` and
    `residual_arrays` are on the device, one program, the same fit; the correlation and
    variance parameters from the fit's program equal those of a result built from the
    estimates alone (ρ = tanh(a) for AR(1), the SD ratio of the second level exp(a))."""
    from lmm_jax import exported_programs
    from lmm_jax.residual_model import ResidualFitResult

    model = _residual_model()
    from_host = model.fit()
    programs = len(exported_programs._HOST_COMPILED)
    assert model._arrays is None and model._residual_arrays is None
    for on_device, on_host in zip(jax.tree_util.tree_leaves(model.residual_arrays),
                                  jax.tree_util.tree_leaves(model.host_residual_arrays)):
        assert isinstance(on_device, jax.Array)
        np.testing.assert_array_equal(np.asarray(on_device), on_host)
    model.arrays
    from_device = model.fit()
    assert len(exported_programs._HOST_COMPILED) == programs
    assert from_device.reml_criterion == from_host.reml_criterion
    np.testing.assert_array_equal(from_device.params.residual, from_host.params.residual)
    assert from_device.correlation_parameters == from_host.correlation_parameters
    rebuilt = ResidualFitResult(model, from_host.params)
    assert rebuilt.correlation_parameters == from_host.correlation_parameters
    assert rebuilt.variance_function == from_host.variance_function
    a_cor, a_var = np.asarray(from_host.params.residual)
    np.testing.assert_allclose(from_host.correlation_parameters, [np.tanh(a_cor)], rtol=1e-15)
    assert list(from_host.variance_function) == ["Female", "Male"]  # nlme's: lme sorts rows by Subject, F01 first
    np.testing.assert_allclose(list(from_host.variance_function.values()), [1.0, np.exp(a_var)], rtol=1e-15)
