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
    assert main(["fit", str(path), "Reaction ~ Days + (1 | Subject)", "--method", "ml", "--no-cache"]) == 0
    text = capsys.readouterr().out
    assert "Linear mixed model fit by maximum likelihood" in text
    assert "\n   Data: sleep.csv\n" in text
    assert "Number of obs: 180, groups:  Subject, 18" in text


def test_cli_reports_bad_formula(capsys):
    assert main(["fit", "sleepstudy", "Reaction ~ Days + (Days | Subjec)", "--no-cache"]) == 2
    assert "column 'Subjec'" in capsys.readouterr().err


def test_cli_accepts_the_method_in_any_case():
    """fit(method="ml") is accepted; the command line refused `--method ml`."""
    from lmm_jax_cli import parser

    assert parser().parse_args(["fit", "d", "y ~ x", "--method", "ml"]).method == "ML"
    assert parser().parse_args(["fit", "d", "y ~ x", "--method", "Reml"]).method == "REML"


@pytest.mark.parametrize("data, formula, message", [
    ("empty.csv", "y ~ x + (1 | g)", "the CSV file '.*empty.csv' is empty"),
    ("missing.csv", "y ~ x + (1 | g)", "'.*missing.csv' is neither a CSV file nor a bundled data set"),
    ("sleepstudy", "Reaction ~ Days + (Days Subject)",
     "term '\\(Days Subject\\)' reads as a random-effect term without its '\\|'"),
    ("sleepstudy", "Reaction ~ Days Subject + (1 | Subject)",
     "Missing operator between `Days` and `Subject`"),
])
def test_cli_input_errors_exit_2_with_a_plain_message(capsys, tmp_path, data, formula, message):
    """An empty CSV gave pandas' EmptyDataError traceback, a missing file exit code 1, a random
    term without its bar a fixed-part error, and formulaic's messages came with terminal
    colour codes (ESC[1;31m) into pipes."""
    import re

    (tmp_path / "empty.csv").write_text("")
    path = data if data == "sleepstudy" else str(tmp_path / data)
    assert main(["fit", path, formula, "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.startswith("lmm-jax: ")
    assert "\x1b" not in err and "Traceback" not in err


def test_cli_help_imports_no_jax():
    """`lmm-jax --help` imported lmm_jax (JAX, pandas, formulaic: 1.9-4 s) before parsing."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    script = ("import sys\nsys.argv = ['lmm-jax', '--help']\nfrom lmm_jax_cli import run\ntry:\n    run()\n"
              "except SystemExit as stop:\n"
              "    print(stop.code, 'jax' in sys.modules, 'lmm_jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert "usage: lmm-jax" in out.stdout
    assert out.stdout.splitlines()[-1] == "0 False False"


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
