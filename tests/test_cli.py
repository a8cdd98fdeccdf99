"""The `lmm-jax` command line on a bundled data set."""

from __future__ import annotations

import json

import pytest
from conftest import load_case
from lmm_jax.cli import main


def test_cli_json_matches_reference(capsys, tmp_path):
    case = load_case("sleepstudy_reml")
    assert main(["fit", "sleepstudy", case["formula"], "--json", "--cache-dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(out["reml_criterion"] - case["reml_criterion"]) < 2e-4
    assert out["fixed"]["names"] == ["(Intercept)", "Days"]


def test_cli_summary_and_csv(capsys, tmp_path, sleepstudy):
    path = tmp_path / "sleep.csv"
    sleepstudy.to_csv(path, index=False)
    assert main(["fit", str(path), "Reaction ~ Days + (1 | Subject)", "--method", "ML", "--no-cache"]) == 0
    text = capsys.readouterr().out
    assert "Linear mixed model fit by maximum likelihood" in text
    assert "Number of obs: 180, groups:  Subject, 18" in text


def test_cli_reports_bad_formula(capsys):
    assert main(["fit", "sleepstudy", "Reaction ~ Days + (Days | Subjec)", "--no-cache"]) == 2
    assert "column 'Subjec'" in capsys.readouterr().err


def run_cli(*options, formula="Reaction ~ Days + (Days | Subject)"):
    """The command line's output in a fresh process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "lmm_jax.cli", "fit", "sleepstudy", formula, *options],
                         env=env, capture_output=True, text=True, check=True)
    return out.stdout


@pytest.mark.parametrize("structure", [(), ("--correlation", "ar1(~ 1 | Subject)")], ids=["lmer", "lme_ar1"])
def test_cli_stores_compiled_programs_and_reuses_them(tmp_path, structure):
    """A second process loads the stored compiled fit program (no tracing or compiling) and
    prints the same fit; one program per fit: the fit with its summaries
    (`results.fit_with_summaries`, `residual_model.fit_residual_with_summaries`)."""
    plain = run_cli(*structure, "--no-cache")
    first = run_cli(*structure, "--cache-dir", str(tmp_path))
    stored = sorted((tmp_path / "lmm_jax_programs").glob("*.exe"))
    assert len(stored) == 1
    files = [p.stat().st_ino for p in stored]  # a program stored again replaces its file
    second = run_cli(*structure, "--cache-dir", str(tmp_path))
    assert [p.stat().st_ino for p in stored] == files  # loaded, not compiled and stored again
    assert first == plain and second == plain


def test_cli_after_the_program_store_was_deleted(tmp_path):
    """With JAX's cache kept and lmm_jax's stored programs deleted, the programs come from
    JAX's cache, whose executables are not stored again (they would run without their
    kernels in the next process): both later processes print the same fit."""
    import shutil

    formula = "Reaction ~ Days + (1 | Subject)"
    plain = run_cli("--no-cache", formula=formula)
    run_cli("--cache-dir", str(tmp_path), formula=formula)
    shutil.rmtree(tmp_path / "lmm_jax_programs")
    outputs = [run_cli("--cache-dir", str(tmp_path), formula=formula) for _ in range(2)]
    assert not list((tmp_path / "lmm_jax_programs").glob("*.exe"))
    assert outputs == [plain, plain]
