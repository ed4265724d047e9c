"""Scale facts of ``evaluate.py`` as ratios in one run: the cost of the per-image records, 2 CPU
processes against 1, and peak memory against the number of images.

    nice python -m benchmarks.evaluation_scale            # -> benchmarks/results/evaluation_scale.md

* **Records**: a Grad-CAM evaluation of the 9 demo photos, then the same records written again
  through :class:`lcam.evaluation.records.RecordWriter` (one write + fsync per batch, as the
  evaluator does): the writing time as a share of the evaluation's wall time.
* **Processes**: ``python evaluate.py explainer=gradcam`` on a folder of photos with
  ``trainer=ddp_cpu trainer.devices=2`` against one process (one thread per process in both), wall
  time; the tables are equal (tests/test_evaluation_scale.py checks every cell).
* **Memory**: peak resident memory of ``python evaluate.py explainer=gradcam`` on 27 and on 270
  photos (copies of the demo photos): records are streamed to disk, so memory stays flat.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def photos(folder: Path, copies: int) -> Path:
    from lcam.data.demo import demo_photos

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(copies):
        for name, img in demo_photos():
            img.save(folder / f"{name}_{k}.jpg", quality=92)
    return folder


def evaluate(args: list[str], devices: int = 1) -> tuple[float, float]:
    """``(wall seconds, peak RSS of the largest process in MB)`` of ``python evaluate.py ARGS``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    extra = ["trainer=ddp_cpu", f"trainer.devices={devices}"] if devices > 1 else ["trainer.accelerator=cpu"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *args, *extra], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024.0


def records_cost(tmp: Path) -> tuple[float, float, int]:
    """``(evaluation seconds, record-writing seconds, batches)`` for Grad-CAM on the demo photos."""
    from hydra import compose, initialize_config_dir

    from lcam.evaluation.records import RecordWriter, read_records
    from lcam.evaluation.run import run_evaluation

    run = tmp / "records_run"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=["explainer=gradcam", "logger=csv", "progress=false", "figure_images=0",
                                             f"paths.output_dir={run}", "data.batch_size=1"])
    t0 = time.perf_counter()
    run_evaluation(cfg)
    total = time.perf_counter() - t0
    records = read_records(run)
    writer = RecordWriter(tmp / "rewrite", "Grad-CAM", "bench", 0)
    t0 = time.perf_counter()
    for rec in records:  # one batch per image (data.batch_size=1): one write + fsync each
        writer.write([rec])
    writer.close()
    return total, time.perf_counter() - t0, len(records)


def main() -> None:
    from lcam.runtime.allocator import tune_cpu_allocator

    tune_cpu_allocator()
    lines = ["## evaluate.py at scale: records, processes, memory", "",
             "Made with `nice python -m benchmarks.evaluation_scale` on the shared 2-core CPU (other jobs ran beside it: "
             "read the ratios, not the seconds).", ""]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        total, writing, batches = records_cost(tmp)
        lines += [f"- **Records**: a Grad-CAM evaluation of the 9 demo photos took {total:.1f} s; writing its "
                  f"{batches} records again, one fsynced write per batch of 1, took {writing * 1000:.1f} ms: "
                  f"**{100 * writing / total:.2f} %** of the evaluation."]
        small, large = photos(tmp / "p27", 3), photos(tmp / "p270", 30)
        common = ["explainer=gradcam", "logger=csv", "progress=false", "figure_images=0", "data=folder",
                  "data.batch_size=9", "data.num_workers=0"]
        _, mem_small = evaluate([*common, f"data.root={small}", f"data.val_root={small}", f"hydra.run.dir={tmp / 'm27'}"])
        _, mem_large = evaluate([*common, f"data.root={large}", f"data.val_root={large}", f"hydra.run.dir={tmp / 'm270'}"])
        lines.append(f"- **Memory**: peak resident memory {mem_small:.0f} MB on 27 photos, {mem_large:.0f} MB on 270: "
                     f"**{mem_large / mem_small:.2f}x** for 10x the images (records streamed to disk, not held).")
        one_s, _ = evaluate([*common, f"data.root={small}", f"data.val_root={small}", f"hydra.run.dir={tmp / 'one'}"])
        two_s, _ = evaluate([*common, f"data.root={small}", f"data.val_root={small}", f"hydra.run.dir={tmp / 'two'}"], devices=2)
        lines.append(f"- **Processes** (27 photos, Grad-CAM, one thread each): 1 process {one_s:.1f} s, 2 processes "
                     f"{two_s:.1f} s: **{one_s / two_s:.2f}x** (start-up of the second process included; same table).")
    text = "\n".join(lines) + "\n"
    (RESULTS / "evaluation_scale.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
