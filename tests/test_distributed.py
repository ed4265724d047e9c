"""Lightning DDP through train.py on this machine's CPU (2 gloo processes); speed switches
(bf16, channels-last, workers; torch.compile on a GPU); resume=auto after a requeue.
(DDP trials inside a multirun: tests/test_sweeps.py.)

How the DDP run is made comparable with one process:

* ``data.batch_size=1``: every forward pass sees one image, so each image's numbers are
  bit-for-bit the same whichever process computes it (with larger batches the 1x1-conv GEMM
  rounds a sample differently depending on its position in the batch: ~1e-7 relative, which the
  AD/IC ratios turn into ~1e-4 points);
* 8 training images, one optimizer step in both runs: the single process accumulates 8 batches,
  each of the 2 DDP processes accumulates 4 and the gradients are averaged across them;
* all 9 validation photos, an odd number: Lightning's DistributedSampler pads rank 1's shard with
  a repeat of photo 0 (5 + 5 = 10), and the module drops that padding (lcam.runtime.distributed), so every
  photo is counted exactly once, as in the single process (IC values are multiples of 100/9);
* one intra-op thread in every process (DDP on CPU uses ``cpu_count // processes`` = 1 here).

Each rank then holds AD/IC sums over its own images only (5 and 4); equal values mean that
torchmetrics summed the states across processes before ``compute()``.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lcam.model.training import run_training
from tests.helpers import compose_train

ROOT = Path(__file__).resolve().parents[1]

EQUAL_RUN = ["data.repeats=1", "data.resize=110", "data.crop=96", "data.batch_size=1", "+data.max_train_samples=8",
             "trainer.max_epochs=1", "trainer.log_every_n_steps=1",
             "trainer.enable_progress_bar=false", "callbacks.lr_monitor=null"]
METRICS = ("val/AD100", "val/IC100", "val/AD50", "val/IC50", "val/AD15", "val/IC15", "val/score")


@pytest.fixture
def one_thread():
    """One intra-op thread for an in-process run (as in each DDP process on this 2-core machine;
    two OpenMP threads slow down many times over when other jobs load the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_script(args: list[str], cwd: Path = ROOT, timeout: float = 400) -> tuple[subprocess.CompletedProcess, float]:
    """``python train.py ARGS`` with one thread per process and W&B offline; (result, seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=timeout)
    return out, time.perf_counter() - start


def last_validation(metrics_csv: Path) -> dict[str, float]:
    rows = [r for r in csv.DictReader(metrics_csv.open()) if r.get("val/AD100")]
    assert rows, f"no validation row in {metrics_csv}"
    return {k: float(v) for k, v in rows[-1].items() if v and k.startswith("val/")}


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process(tmp_path, one_thread):
    out, ddp_s = train_script([*EQUAL_RUN, "trainer=ddp_cpu", "trainer.devices=2", "+trainer.accumulate_grad_batches=4",
                               "logger=wandb", f"paths.log_dir={tmp_path / 'logs'}"])
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "Starting with 2 processes" in out.stdout + out.stderr

    # one run directory (the time-stamped default, shared by both ranks), nothing else
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["train"]
    assert [p.name for p in (tmp_path / "logs" / "train").iterdir()] == ["runs"]
    runs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1, runs
    run = runs[0]
    assert (run / "train_ddp_process_1.log").is_file()  # rank 1 ran in this directory
    # written once, by rank 0: checkpoints, Hydra's config, metrics, images, one W&B run
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best-epoch000.ckpt", "last.ckpt"]
    assert len(list(run.rglob("*.ckpt"))) == 2 and len(list(run.rglob("config.yaml"))) == 1
    assert len(list(run.rglob("metrics.csv"))) == 1
    assert sorted(p.name for p in (run / "images").iterdir()) == ["overlays_epoch000.png", "overlays_last.png"]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1

    start = time.perf_counter()
    single = compose_train([*EQUAL_RUN, "+trainer.accumulate_grad_batches=8", "trainer.accelerator=cpu", "logger=csv",
                            "callbacks.overlay_grid=null"], tmp_path / "single")
    expected = run_training(single)
    single_s = time.perf_counter() - start

    got = last_validation(run / "csv" / "metrics.csv")
    for key in METRICS:
        assert got[key] == pytest.approx(expected[key], abs=1e-5), key
    for key in ("val/IC100", "val/IC50", "val/IC15"):  # counts out of 9 photos, none twice
        assert got[key] * 9 / 100 == pytest.approx(round(got[key] * 9 / 100), abs=1e-4), key
    for key in ("val/loss", "val/ce", "val/area", "val/tv"):  # batch-weighted means over the 9 photos, float32
        assert got[key] == pytest.approx(expected[key], rel=1e-5), key
    # the heads after one synchronised step
    a = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "single" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 1
    assert not any(k.startswith("backbone.") for k in a["state_dict"])
    for key in ("head.conv.weight", "head.conv.bias"):
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=1e-6, atol=1e-7)
    print(f"\n2-process CPU DDP (train.py subprocess): {ddp_s:.1f} s; one process (in-process): {single_s:.1f} s")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: bf16-mixed autocast on CUDA and torch.compile "
                                                          "of the frozen backbone are GPU speed switches")
def test_gpu_bf16_channels_last_compiled_backbone(tmp_path):
    cfg = compose_train(["logger=csv", "data.repeats=1", "data.batch_size=8", "trainer.max_epochs=1",
                         "trainer.limit_train_batches=2", "trainer.accelerator=gpu", "trainer.devices=1",
                         "trainer.precision=bf16-mixed", "model.channels_last=true", "model.compile_backbone=true",
                         "data.num_workers=2", "data.pin_memory=true", "trainer.enable_progress_bar=false"], tmp_path)
    metrics = run_training(cfg)
    assert 0 <= metrics["val/AD100"] <= 100 and 0 <= metrics["val/IC100"] <= 100
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_cpu_speed_switches_bf16_channels_last_workers(tmp_path, one_thread):
    """bf16-mixed autocast, channels-last and worker processes also run on a CPU."""
    cfg = compose_train(["logger=csv", "data.repeats=1", "data.resize=72", "data.crop=64", "data.batch_size=4",
                         "+data.max_val_samples=4", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                         "trainer.accelerator=cpu", "trainer.precision=bf16-mixed", "model.channels_last=true",
                         "data.num_workers=1", "data.pin_memory=true", "callbacks.overlay_grid=null",
                         "trainer.enable_progress_bar=false"], tmp_path)
    metrics = run_training(cfg)
    assert 0 <= metrics["val/AD100"] <= 100 and (tmp_path / "checkpoints" / "last.ckpt").is_file()


# -- validation shards under DDP: every sample exactly once --------------------------------------

@pytest.mark.parametrize("n, world, shuffle", [(9, 2, False), (9, 2, True), (10, 2, False), (7, 4, True), (1, 2, False)])
def test_real_samples_cover_the_set_exactly_once(n, world, shuffle):
    """The first real_samples() indices of each rank's padded shard are a partition of the set."""
    from torch.utils.data import DistributedSampler

    from lcam.runtime.distributed import RealSampleCounter, real_samples

    data = list(range(n))
    seen: list[int] = []
    for rank in range(world):
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=shuffle, seed=3)
        shard = list(sampler)
        assert len(shard) == -(-n // world)  # padded to equal shards
        real = real_samples(sampler)
        keep = len(shard) if real is None else real
        counter = RealSampleCounter(real)
        batches = [min(2, len(shard) - i) for i in range(0, len(shard), 2)]  # a loader's batches of 2
        assert sum(counter.take(b) for b in batches) == keep
        seen += shard[:keep]
    assert sorted(seen) == data
    assert (real_samples(DistributedSampler(data, num_replicas=world, rank=world - 1)) is None) == (n % world == 0)
    assert real_samples(DistributedSampler(data, num_replicas=world, rank=0, drop_last=True)) is None
    assert real_samples(None) is None


# -- requeue: resume=auto -----------------------------------------------------------------------

def test_find_resume_checkpoint_takes_the_newest_of_last_and_hpc(tmp_path):
    from omegaconf import OmegaConf

    from lcam.model.resume import find_resume_checkpoint

    cfg = OmegaConf.create({"resume": "auto", "paths": {"output_dir": str(tmp_path)}})
    assert find_resume_checkpoint(cfg) is None  # first start
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"x")
    assert find_resume_checkpoint(cfg) == str(last)
    for n in (1, 2, 10):
        (tmp_path / f"hpc_ckpt_{n}.ckpt").write_bytes(b"x")
    os.utime(last, (1e9, 1e9))
    assert find_resume_checkpoint(cfg) == str(tmp_path / "hpc_ckpt_10.ckpt")  # numeric, newer than last.ckpt
    os.utime(last, None)
    os.utime(tmp_path / "hpc_ckpt_10.ckpt", (1e9, 1e9))
    assert find_resume_checkpoint(cfg) == str(last)
    assert find_resume_checkpoint(OmegaConf.create({"resume": None, "paths": {"output_dir": str(tmp_path)}})) is None
    with pytest.raises(ValueError, match="ckpt_path="):
        find_resume_checkpoint(OmegaConf.create({"resume": "latest", "paths": {"output_dir": str(tmp_path)}}))


def test_resume_auto_continues_a_restarted_run(tmp_path, one_thread):
    """A requeued job: the same command in the same run directory picks up checkpoints/last.ckpt."""
    common = ["logger=csv", "data.repeats=1", "data.resize=72", "data.crop=64", "data.batch_size=4", "+data.max_val_samples=4",
              "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false", "callbacks.overlay_grid=null",
              "callbacks.lr_monitor=null", "resume=auto"]
    run_training(compose_train([*common, "trainer.max_epochs=1"], tmp_path))  # "pre-empted" after epoch 0
    first = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    run_training(compose_train([*common, "trainer.max_epochs=2"], tmp_path))  # requeued
    second = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert (first["epoch"], first["global_step"]) == (0, 2)
    assert (second["epoch"], second["global_step"]) == (1, 4)
