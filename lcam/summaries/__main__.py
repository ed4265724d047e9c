"""``python -m lcam.summaries inputs=<folder of one class> output_dir=<dir>`` (config: ``conf/summaries.yaml``).

Exit status 0 on success, 2 on bad input (too few images, mixed classes, masks cached with other
settings, ...) or a missing / shadowed optional dependency (checked first, before any model is
loaded: :data:`SUMMARY_FEATURES`, :mod:`lcam.runtime.optional`, the message names the pip commands that
repair it) with one ``error: ...`` line; ``HYDRA_FULL_ERROR=1`` shows the traceback instead.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from lcam.runtime.cli_args import prepare_cli
from lcam.runtime.configs import config_dir


def _plain(value: object) -> object:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


#: what the pipeline needs beyond the requirements of every command: selective search (OpenCV
#: contrib), HOG / SSIM (scikit-image), Affinity Propagation (scikit-learn)
SUMMARY_FEATURES = ("selective_search", "scikit_image", "scikit_learn")


def run(cfg: DictConfig) -> dict[str, object]:
    """Run the pipeline from a composed config and print what it found; returns the run summary
    (``explained``, ``failed``, ``csv``) that :func:`lcam.runtime.tasks.run_for_status` reads.
    Raises :class:`lcam.runtime.optional.MissingDependency` first (within a second) when a feature the
    pipeline needs is missing or shadowed."""
    from lcam.runtime.optional import require

    require(*SUMMARY_FEATURES)  # before the minutes of crisp masks
    from lcam.summaries.pipeline import summarise

    if OmegaConf.is_missing(cfg, "inputs"):
        raise ValueError("inputs=<folder of images of one class> is required")
    report = summarise(_plain(cfg.inputs), OmegaConf.to_container(cfg.backbone, resolve=True),
                       cfg.output_dir, cfg.target, OmegaConf.to_container(cfg.settings, resolve=True),
                       cfg.device, cfg.resize, cfg.crop, cfg.batch_size, cfg.seed, cfg.progress)
    took = sum(report.seconds.values())
    print(f"{report.class_name}: {report.n_summaries} summaries from {len(report.images)} images "
          f"({report.n_parts} parts, {report.n_clusters} clusters; crisp drop {report.mean_drop:.1%}; {took:.0f} s) "
          f"-> {report.output_dir}")
    if report.skipped:
        print(f"skipped {len(report.skipped)} unreadable file(s): " + ", ".join(f for f, _ in report.skipped))
    return {"explained": len(report.images), "failed": len(report.skipped), "csv": f"{report.output_dir}/summaries.csv"}


def exit_status(cfg: DictConfig) -> int:
    """0 on success, 2 on bad input (one ``error: ...`` line), as the other commands
    (:func:`lcam.runtime.tasks.run_for_status`)."""
    from lcam.runtime.tasks import run_for_status

    return run_for_status(run, cfg)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="summaries")
def main(cfg: DictConfig) -> None:
    status = exit_status(cfg)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    prepare_cli()
    main()
