"""The bake-off's decision rule (docs/experiments/real_voices_bakeoff.md), applied by pipelines/experiments/bakeoff.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines" / "experiments"))

from bakeoff import figures, verdict  # noqa: E402


def _run(k_clean, k_0, r_clean=0.95, r_0=0.95):
    row = lambda k, r: {"K_cmd": k, "K_dig": k, "R": r}  # noqa: E731
    return {"figures": {"clean": row(k_clean, r_clean), "0.0": row(k_0, r_0)}}


def test_the_best_mean_wins_when_it_leads_by_three_points():
    lines = verdict({"A": [_run(0.70, 0.50)], "C": [_run(0.90, 0.70), _run(0.88, 0.72)]})
    assert lines[-1].startswith("- winner C, 20.0 points ahead")


def test_a_lead_under_three_points_is_not_separated_and_the_higher_0_db_figure_ships():
    lines = verdict({"B": [_run(0.90, 0.60)], "C": [_run(0.85, 0.64)]})
    assert "not separated" in lines[-1] and lines[-1].endswith("ships: C")


def test_an_arm_that_rejects_too_little_non_command_speech_is_out():
    lines = verdict({"A": [_run(0.95, 0.80, r_0=0.70)], "C": [_run(0.80, 0.60, r_0=0.95)]})
    assert "out by step 2" in lines[0] and lines[-1] == "- C is the only arm left"


def test_figures_split_top1_and_the_operating_point_by_set_and_word():
    def p(label, top1, predicted):
        return {"label": label, "top1": top1, "predicted": predicted}

    sc = [p("yes", "yes", "_unknown_"), p("one", "two", "two"), p("_unknown_", "_unknown_", "_unknown_"), p("yes", "no", "no")]
    theo = [p("one", "one", "one"), p("_unknown_", "yes", "_silence_")]
    results = {"speech_commands": {"predictions": sc, "by_snr": {}}, "real": {"predictions": theo, "by_snr": {}}}
    for snr in ("20.0", "10.0", "5.0", "0.0", "-5.0"):
        for r in results.values():
            r["by_snr"][snr] = {"predictions": r["predictions"]}
    f = figures(results)["clean"]
    assert f["K_cmd"] == round(1 / 3, 4) and f["K_dig"] == 1.0 and f["commands"] == 0.5 and f["digits"] == 0.5
    assert f["R"] == 0.5 and f["op_R"] == 1.0 and f["op_K_cmd"] == 0.0
