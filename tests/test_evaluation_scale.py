"""evaluate.py at scale: every image once on N processes, records kept per batch, resume after SIGKILL,
shards and their merge, unreadable images as records, and the statistics computed from the records.

The runs share one small setting (the 9 demo photos at 64 px, one image per batch, boxes around the
centre of 8 photos): Grad-CAM, RISE (30 masks) and the localisation columns. With one image per
forward pass every image's numbers are computed the same way whichever process or batch holds it,
so the tables must agree cell by cell.
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lcam.evaluation.records import read_records
from lcam.evaluation.run import run_evaluation
from lcam.runtime.errors import USER_ERROR_STATUS, UserError
from tests.helpers import compose_train

ROOT = Path(__file__).resolve().parents[1]
DROP = [f"methods.{k}=null" for k in ("lcam_img", "gradcampp", "smoothgradcampp", "xgradcam", "guidedcam", "scorecam",
                                       "sscam1", "sscam2")]
SMALL = ["logger=csv", "data.resize=72", "data.crop=64", "data.batch_size=1", "figure_images=3", "progress=false",
         "methods=demo", *DROP, "methods.rise.n_masks=30", "bootstrap=500"]


@pytest.fixture(scope="module")
def boxes_file(tmp_path_factory) -> Path:
    from lcam.data.demo import demo_photos

    lines = []
    for name, img in demo_photos():
        if name != "clock":  # one image without boxes: left out of the box columns
            w, h = img.size
            lines.append(f"{name} {0.25 * w:.1f} {0.2 * h:.1f} {0.75 * w:.1f} {0.8 * h:.1f}")
    path = tmp_path_factory.mktemp("boxes") / "boxes.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def evaluate_in_process(overrides: list[str], out: Path) -> list[dict]:
    """``run_evaluation`` with one intra-op thread (as each process of the DDP runs has)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_evaluation(compose_train(overrides, out, config_name="evaluate"))
    finally:
        torch.set_num_threads(threads)


def merge(runs: list[Path], out: Path) -> list[dict]:
    """``python evaluate.py merge=[RUNS]`` into ``out``."""
    return run_evaluation(compose_train(["logger=csv", f"merge=[{','.join(map(str, runs))}]", "bootstrap=500"], out,
                                        config_name="evaluate"))


@pytest.fixture(scope="module")
def straight(tmp_path_factory, boxes_file) -> Path:
    """One process, one thread, uninterrupted: the reference run folder."""
    out = tmp_path_factory.mktemp("straight")
    evaluate_in_process([*SMALL, f"boxes={boxes_file}"], out)
    return out


def table(run: Path) -> dict[str, dict[str, str]]:
    with open(run / "results.csv") as f:
        return {r["method"]: r for r in csv.DictReader(f)}


def assert_same_table(a: Path, b: Path) -> None:
    """Every cell of results.csv equal (s/img aside: wall time), and the same intervals and Win%."""
    ta, tb = table(a), table(b)
    assert list(ta) == list(tb)
    for method in ta:
        assert ta[method].keys() == tb[method].keys()
        for col in ta[method]:
            if col in ("method", "s/img"):
                continue
            va, vb = float(ta[method][col]), float(tb[method][col])
            assert va == pytest.approx(vb, abs=1e-9) or (math.isnan(va) and math.isnan(vb)), (method, col, va, vb)
    for name in ("intervals.csv", "win_rate.csv"):
        assert (a / name).read_text() == (b / name).read_text()


def evaluate_script(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "LCAM_TRACEBACK")}  # as a user runs it
    env.update({"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    return subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_records_hold_every_image_and_method_and_make_the_table(straight):
    records = read_records(straight)
    assert len(records) == 2 * 9 and {r["method"] for r in records} == {"Grad-CAM", "RISE"}
    rows = table(straight)
    for method, row in rows.items():
        mine = [r for r in records if r["method"] == method]
        assert sorted(r["index"] for r in mine) == list(range(9))
        for col in ("AD100", "IC15", "EPG", "ZoneDrop", "#FW"):  # the table is the mean of the records
            values = [r[col] for r in mine if r.get(col) is not None]
            assert float(row[col]) == pytest.approx(sum(values) / len(values), abs=1e-9)
        assert sum(r.get("PG") is None for r in mine) == 1  # the photo without boxes
        assert int(row["images"]) == 9
    rec = records[0]
    for key in ("index", "image", "label", "target", "target_name", "Y", "O100", "O50", "O15", "AD100", "IC100",
                "PG", "EPG", "IoU", "Dice", "ZoneKeep", "ZoneDrop", "#FW", "seconds", "loc_target", "status"):
        assert key in rec, key
    assert rec["AD100"] == pytest.approx(100 * max(0.0, rec["Y"] - rec["O100"]) / rec["Y"])
    files = list((straight / "records").glob("*/part-*.jsonl"))
    assert len(files) == 2 and all(json.loads(line) for f in files for line in f.read_text().splitlines())
    assert "Paired differences: method - Grad-CAM" in (straight / "results.md").read_text()
    assert (straight / "methods.png").stat().st_size > 5_000


def test_two_processes_give_the_table_of_one(straight, boxes_file, tmp_path):
    run = tmp_path / "ddp"
    out = evaluate_script([*SMALL, f"boxes={boxes_file}", "trainer=ddp_cpu", "trainer.devices=2",
                           f"hydra.run.dir={run}"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert_same_table(straight, run)
    parts = sorted(p.name.rsplit("-", 1)[1] for p in (run / "records" / "rise").glob("part-*.jsonl"))
    assert parts == ["r0.jsonl", "r1.jsonl"]  # both processes explained images ...
    assert len(read_records(run)) == 18  # ... and none twice


def test_a_run_killed_mid_method_resumes_to_the_same_table(straight, boxes_file, tmp_path):
    run = tmp_path / "killed"
    args = [*SMALL, f"boxes={boxes_file}", f"hydra.run.dir={run}"]
    kill = "+trainer.callbacks=[{_target_: tests.helpers.KillInMethod, method: RISE, batches: 4}]"
    first = evaluate_script([*args, kill], ROOT)
    assert first.returncode == -9, first.stderr[-3000:]
    done = read_records(run)
    assert [r["method"] for r in done].count("Grad-CAM") == 9 and [r["method"] for r in done].count("RISE") == 4
    # a torn line, as a kill in the middle of a write leaves it, is ignored
    part = next((run / "records" / "rise").glob("part-*.jsonl"))
    with open(part, "a") as f:
        f.write('{"index": 7, "method": "RISE", "AD1')
    again = evaluate_script([*args], ROOT)  # no resume=auto: refused, nothing overwritten
    assert again.returncode == USER_ERROR_STATUS and "resume=auto" in again.stderr
    resumed = evaluate_script([*args, "resume=auto"], ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Grad-CAM: every image has a record" in resumed.stdout
    assert len(read_records(run)) == 18
    assert_same_table(straight, run)
    other = evaluate_script([*args, "resume=auto", "methods.rise.n_masks=31"], ROOT)
    assert other.returncode == USER_ERROR_STATUS and "methods.RISE.n_masks (was 30, now 31)" in other.stderr


def test_batches_of_three_give_the_table_of_one_process_on_two_and_after_a_kill(boxes_file, tmp_path):
    """With ``data.batch_size`` > 1 a convolution's float rounding can depend on which images share a batch: the
    processes get whole batches of the to-do list (and a resumed method whole batches of the first attempt), so
    2 processes and a killed-and-resumed run give the single process's table to the last digit."""
    args = [*SMALL, "data.batch_size=3", f"boxes={boxes_file}"]
    one = tmp_path / "one"
    assert evaluate_script([*args, f"hydra.run.dir={one}"], ROOT).returncode == 0
    two = tmp_path / "two"
    out = evaluate_script([*args, "trainer=ddp_cpu", "trainer.devices=2", f"hydra.run.dir={two}"], ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert_same_table(one, two)
    killed = tmp_path / "killed"
    kill = "+trainer.callbacks=[{_target_: tests.helpers.KillInMethod, method: RISE, batches: 1}]"
    assert evaluate_script([*args, f"hydra.run.dir={killed}", kill], ROOT).returncode == -9
    assert [r["method"] for r in read_records(killed)].count("RISE") == 3
    resumed = evaluate_script([*args, f"hydra.run.dir={killed}", "resume=auto"], ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_table(one, killed)


def test_three_shards_merge_to_the_single_run(straight, boxes_file, tmp_path):
    shards = [tmp_path / f"shard{i}" for i in range(3)]
    for i, shard in enumerate(shards):
        evaluate_in_process([*SMALL, f"boxes={boxes_file}", f"data.shard={i}/3"], shard)
        assert sorted({r["index"] for r in read_records(shard)}) == list(range(i, 9, 3))
    merge(shards, tmp_path / "merged")
    assert_same_table(straight, tmp_path / "merged")
    with pytest.raises(UserError, match=r"missing: \[2\]"):
        merge(shards[:2], tmp_path / "m2")
    with pytest.raises(UserError, match=r"twice: \[0\]"):
        merge([shards[0], *shards[:2]], tmp_path / "m3")
    odd = tmp_path / "odd"
    evaluate_in_process([*SMALL, f"boxes={boxes_file}", "methods.rise.n_masks=20", "data.shard=2/3"], odd)
    with pytest.raises(UserError, match=r"another config: methods.RISE.n_masks \(was 30, now 20\)"):
        merge([*shards[:2], odd], tmp_path / "m4")


def test_runs_of_different_methods_on_the_same_images_merge(straight, boxes_file, tmp_path):
    """The leaderboard's way: each method in a run of its own (here Grad-CAM whole, RISE in 2 shards), one table."""
    runs = [tmp_path / "gradcam", tmp_path / "rise0", tmp_path / "rise1"]
    settings = [["methods.rise=null"], ["methods.gradcam=null", "data.shard=0/2"], ["methods.gradcam=null", "data.shard=1/2"]]
    for run, extra in zip(runs, settings):
        evaluate_in_process([*SMALL, f"boxes={boxes_file}", *extra], run)
    merge(runs, tmp_path / "merged")
    assert_same_table(straight, tmp_path / "merged")
    with pytest.raises(UserError, match=r"the shards of RISE must be 0/2 .. 1/2, each once; missing: \[1\]"):
        merge(runs[:2], tmp_path / "m2")


def test_bad_shard_spec_names_the_key(tmp_path):
    with pytest.raises(UserError, match=r"data.shard='3/3' is not I/N with 0 <= I < N"):
        run_evaluation(compose_train([*SMALL, "data.shard=3/3"], tmp_path, config_name="evaluate"))


def test_unreadable_images_become_records(tmp_path):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((np.random.default_rng(i).random((40, 40, 3)) * 255).astype("uint8")).save(folder / f"p{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    cfg = compose_train(["logger=csv", "data=folder", f"data.root={folder}", f"+data.val_root={folder}", "data.resize=40",
                         "data.crop=32", "data.batch_size=2", "data.num_workers=0", "data.max_bad_fraction=0.5",
                         "explainer=gradcam", "progress=false", "figure_images=0"], tmp_path / "run", config_name="evaluate")
    rows = run_evaluation(cfg)
    assert rows[0]["images"] == 3 and rows[0]["unreadable"] == 1
    bad = [r for r in read_records(tmp_path / "run") if r["status"] == "unreadable"]
    assert len(bad) == 1 and bad[0]["image"].endswith("broken.png") and "error" in bad[0]


# -- the statistics, by hand ----------------------------------------------------------------------
def _recs(method: str, values: list[float | None], column: str = "AD100") -> list[dict]:
    return [{"index": i, "method": method, "status": "ok", column: v, "#FW": 1.0, "seconds": 0.1, "Y": 0.5,
             "O100": 0.5 - (v or 0) / 200} for i, v in enumerate(values)]


def test_table_is_the_nan_aware_mean_of_the_records():
    from lcam.evaluation.statistics import table_rows

    rows = table_rows([*_recs("a", [10.0, None, 30.0]), {"index": 3, "method": "a", "status": "unreadable"},
                       *_recs("b", [0.0, 0.0, 3.0])], ["b", "a"])
    assert [r["method"] for r in rows] == ["b", "a"]
    assert rows[1]["AD100"] == pytest.approx(20.0) and rows[1]["images"] == 3 and rows[1]["unreadable"] == 1
    assert rows[0]["AD100"] == pytest.approx(1.0) and "unreadable" not in rows[0]


def test_paired_bootstrap_matches_the_exact_resampling_distribution():
    import itertools

    from lcam.evaluation.statistics import paired_bootstrap

    d = np.array([0.0, 1.0, 5.0])
    means = sorted(np.mean(s) for s in itertools.product(d, repeat=3))  # all 27 equally likely resamples
    mean, low, high = paired_bootstrap(d, n_boot=40_000, seed=1)
    assert mean == pytest.approx(2.0)
    assert low == pytest.approx(np.quantile(means, 0.025, method="inverted_cdf"), abs=0.2) and high == pytest.approx(
        np.quantile(means, 0.975, method="inverted_cdf"), abs=0.2)
    assert paired_bootstrap(np.full(7, 2.5)) == (2.5, 2.5, 2.5)
    assert paired_bootstrap(d, seed=3) == paired_bootstrap(d, seed=3)


def test_intervals_pair_the_same_images_and_win_rates_count_ties_half():
    from lcam.evaluation.statistics import paired_intervals, win_rates

    recs = [*_recs("ref", [10.0, 20.0, 30.0, 40.0]), *_recs("m", [10.0, 10.0, None, 50.0])]
    (row,) = paired_intervals(recs, "ref", columns=["AD100"], n_boot=200)
    assert row["images"] == 3 and row["diff"] == pytest.approx((0 - 10 + 10) / 3)
    names, win = win_rates(recs)
    # drops (Y - O100) / Y = AD / 100: ref 0.1 0.2 0.3 0.4, m 0.1 0.2(None -> 0) ... image 0 ties
    assert names == ["ref", "m"] and win[0, 1] + win[1, 0] == pytest.approx(100.0)
    assert win[1, 0] == pytest.approx(100 * (0.5 + 1 + 1 + 0) / 4)


def test_wandb_run_gets_the_records_table_with_overlays(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    rows = run_evaluation(compose_train(["logger=wandb", "data.resize=72", "data.crop=64", "data.batch_size=9",
                                         "figure_images=2", "progress=false", "explainer=gradcam"], tmp_path,
                                        config_name="evaluate"))
    assert rows[0]["images"] == 9
    tables = list(tmp_path.glob("wandb/offline-run-*/files/media/table/records_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"][:3] == ["overlay", "index", "image"] and len(table["data"]) == 9
    overlays = [row[0] for row in table["data"]]
    assert sum(o is not None for o in overlays) == 2  # the figure's first two photos carry their overlay
