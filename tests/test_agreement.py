"""Do the metrics agree: ranks per metric, Kendall's tau-b between rankings with bootstrap intervals,
and the metric families run inside evaluate.py (their per-image values in the records)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kendalltau, rankdata

from lcam.evaluation.agreement import direction, kendall_matrix, rank_agreement, rank_table


def _records(values: dict[str, dict[str, list[float]]]) -> list[dict]:
    out = []
    for method, cols in values.items():
        n = len(next(iter(cols.values())))
        for i in range(n):
            out.append({"index": i, "method": method, "status": "ok", **{c: v[i] for c, v in cols.items()}})
    return out


def test_directions_of_known_columns():
    assert direction("AD100") == -1 and direction("IC15") == 1 and direction("insertion") == 1
    assert direction("deletion") == -1 and direction("MaxSens") == -1 and direction("seconds") is None


def test_kendall_matrix_equals_scipy_tau_b_with_ties():
    rng = np.random.default_rng(0)
    ranks = np.stack([rankdata(rng.integers(0, 4, 6)) for _ in range(4)], axis=1)
    tau = kendall_matrix(ranks)
    for i in range(4):
        for j in range(4):
            assert tau[i, j] == pytest.approx(kendalltau(ranks[:, i], ranks[:, j]).statistic)


def test_ranks_follow_each_metrics_direction_and_tau_has_an_interval():
    rng = np.random.default_rng(1)
    base = {"a": 10.0, "b": 20.0, "c": 30.0}  # a is best by AD (lower), worst by IC ... and by deletion (lower) best
    values = {m: {"AD100": list(v + rng.normal(0, 1, 40)), "IC100": list(v + rng.normal(0, 1, 40)),
                  "deletion": list(v / 100 + rng.normal(0, 0.01, 40))} for m, v in base.items()}
    metrics, ranks = rank_table(_records(values), ["a", "b", "c"])
    assert metrics == ["AD100", "IC100", "deletion"]
    assert ranks[:, 0].tolist() == [1, 2, 3] and ranks[:, 1].tolist() == [3, 2, 1] and ranks[:, 2].tolist() == [1, 2, 3]
    rows = {(r["metric_a"], r["metric_b"]): r for r in rank_agreement(_records(values), ["a", "b", "c"], n_boot=300)}
    assert rows[("AD100", "IC100")]["tau"] == pytest.approx(-1.0) and rows[("AD100", "deletion")]["tau"] == pytest.approx(1.0)
    r = rows[("AD100", "deletion")]
    assert r["low"] <= r["tau"] <= r["high"] and r["images"] == 40
    assert rank_agreement(_records(values), ["a", "b"]) == []  # two methods: no ranking to compare


def test_means_equal_up_to_float_rounding_tie_wherever_the_rounding_falls():
    """Grad-CAM and XGrad-CAM on a GAP + linear head: the same maps up to float rounding, means 1.4e-6 apart at AD100
    (25.9330635 vs 25.9330649: a 6-decimal rounding puts them on two sides) and 2e-5 at AD15; they must tie, and a
    real difference of 1e-3 must not."""
    means = {"gradcam": [25.933063475, 89.041459768], "xgradcam": [25.933064864, 89.041481149],
             "other": [25.934, 89.0425]}
    values = {m: {"AD100": [v[0]] * 3, "AD15": [v[1]] * 3} for m, v in means.items()}
    metrics, ranks = rank_table(_records(values), list(means))
    assert metrics == ["AD100", "AD15"]
    assert ranks[:, 0].tolist() == [1.5, 1.5, 3] and ranks[:, 1].tolist() == [1.5, 1.5, 3]


def test_noisy_metrics_get_wide_intervals():
    rng = np.random.default_rng(2)
    values = {m: {"AD100": list(rng.normal(0, 1, 30)), "IC100": list(rng.normal(0, 1, 30))} for m in "abcd"}
    (row,) = rank_agreement(_records(values), list("abcd"), n_boot=400)
    assert row["high"] - row["low"] > 1.0  # same-distribution methods: the ranking is noise


def test_evaluate_with_metric_families_writes_their_records_and_the_ranking(tmp_path):
    from lcam.evaluation.records import read_records
    from lcam.evaluation.run import run_evaluation
    from tests.helpers import compose_train

    drop = [f"methods.{k}=null" for k in ("lcam_img", "smoothgradcampp", "xgradcam", "scorecam", "sscam1", "sscam2")]
    cfg = compose_train(["logger=csv", "data.resize=72", "data.crop=64", "data.batch_size=9", "figure_images=0",
                         "progress=false", "methods=demo", *drop, "methods.rise.n_masks=20", "metrics=families",
                         "metrics.faithfulness.n_samples=20", "metrics.faithfulness.subset_size=64",
                         "metrics.max_sensitivity.n_samples=2", "bootstrap=200"], tmp_path, config_name="evaluate")
    rows = run_evaluation(cfg)
    for row in rows:
        for col in ("FaithCorr", "MaxSens", "Gini", "Entropy", "RandClassRho"):
            assert col in row and np.isfinite(row[col]), (row["method"], col)
    records = read_records(tmp_path)
    grad = [r for r in records if r["method"] == "Grad-CAM"]
    assert len(grad) == 9 and all(0 <= r["Gini"] <= 1 for r in grad if r["Gini"] is not None)
    text = (tmp_path / "results.md").read_text()
    assert "### Rank of each method under each metric" in text and "Kendall's tau-b" in text
    # 11 ranked metrics (AD/IC at 3 thresholds and the 5 family columns): C(11, 2) = 55 pairs
    assert (tmp_path / "metric_agreement.csv").read_text().count("\n") == 1 + 55
