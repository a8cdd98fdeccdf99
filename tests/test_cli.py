"""The `lmm-jax` command line on a bundled data set."""

from __future__ import annotations

import json

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
