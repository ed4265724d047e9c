"""The model parameter randomisation checks in ``results.md``: table, curves and figure, from the records.

Adebayo et al. (2018), "Sanity Checks for Saliency Maps", NeurIPS (https://arxiv.org/abs/1810.03292).
The records hold, per image and method, the columns ``Rand/<step>/<measure>`` written by
:class:`lcam.metrics.parameter_randomisation.ModelRandomisation`; :func:`sanity_report` (registered
in :data:`lcam.evaluation.outputs.REPORTS`) turns them into

* a table: per method, the mean Spearman similarity at the pass step with its 95 % bootstrap
  interval over images (one-sample bootstrap of the mean, percentile method,
  :func:`lcam.evaluation.statistics.paired_bootstrap`), **pass** / **fail**, and the first cascade
  step whose interval lies below the threshold. A method *passes* when the upper end of that
  interval is below ``pass_threshold`` (default 0.5) at one of the first ``pass_step`` cascade
  steps (default 2: with the classifier's head random, or with the head and the top feature block
  random): its maps then clearly depend on the learned top layers. A model-blind map (an edge
  detector) stays at 1 and fails;
* ``sanity.csv``: every (method, step, measure) mean and interval;
* ``sanity_curves.png``: similarity against step, per kind (cascade, independent) and measure, one
  line per method with its interval band;
* ``sanity.png``: the paper's layout (rows = methods, columns = the intact map then the cascade
  steps, and L-CAM's random head last), for the first images that the metric kept in
  ``<run>/sanity/`` and the evaluator kept for ``methods.png`` (matched by content).

The pass settings come from the run's ``.hydra/config.yaml`` (the ``metrics`` entry whose
``_target_`` is ``ModelRandomisation``), else the class defaults.
"""
from __future__ import annotations

import inspect
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lcam.evaluation.outputs import REPORTS, figure_maps
from lcam.evaluation.records import OK
from lcam.evaluation.statistics import by_method, metric_columns, paired_bootstrap
from lcam.metrics.parameter_randomisation import MEASURES, PREFIX, ModelRandomisation
from lcam.runtime.io import save_image_atomic, write_csv_atomic

_COLUMN = re.compile(rf"^{PREFIX}/(?P<step>[^/]+)/(?P<measure>[^/]+)$")
#: bootstrap resamples of the intervals when the run's config does not say
N_BOOT = 2000


def _defaults() -> dict[str, Any]:
    params = inspect.signature(ModelRandomisation.__init__).parameters
    return {"pass_threshold": params["pass_threshold"].default, "pass_step": params["pass_step"].default,
            "bootstrap": N_BOOT, "seed": 0}


def run_settings(out: Path) -> dict[str, Any]:
    """``pass_threshold``, ``pass_step``, ``bootstrap``, ``seed`` of the run in ``out`` (its saved config, else defaults)."""
    settings = _defaults()
    path = Path(out) / ".hydra" / "config.yaml"
    if not path.is_file():
        return settings
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # noqa: BLE001 - an unreadable config: the defaults
        return settings
    for key in ("bootstrap", "seed"):
        if isinstance(cfg.get(key), int):
            settings[key] = cfg[key]
    for node in (cfg.get("metrics") or {}).values():
        if isinstance(node, dict) and str(node.get("_target_", "")).endswith("ModelRandomisation"):
            for key in ("pass_threshold", "pass_step"):
                if isinstance(node.get(key), (int, float)):
                    settings[key] = node[key]
    return settings


def randomisation_columns(records: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """The step labels and measures present in the records, in column order."""
    steps: list[str] = []
    measures: list[str] = []
    for c in metric_columns((r for r in records if r.get("status") == OK), grouped=True):
        m = _COLUMN.match(c)
        if m:
            if m["step"] not in steps:
                steps.append(m["step"])
            if m["measure"] not in measures:
                measures.append(m["measure"])
    return steps, measures


def step_statistics(records: Sequence[Mapping[str, Any]], methods: Sequence[str], n_boot: int = N_BOOT,
                    seed: int = 0) -> list[dict[str, Any]]:
    """Rows ``{"method", "kind", "step", "measure", "images", "mean", "low", "high"}``: the mean over
    images of each ``Rand`` column (NaNs left out) and its 95 % bootstrap interval."""
    steps, measures = randomisation_columns(records)
    rows = []
    for method, recs in by_method(records, methods).items():
        ok = [r for r in recs if r.get("status") == OK]
        for step in steps:
            for measure in measures:
                col = f"{PREFIX}/{step}/{measure}"
                v = np.array([float(r[col]) for r in ok if r.get(col) is not None and not math.isnan(float(r[col]))])
                if v.size == 0:
                    continue
                mean, low, high = paired_bootstrap(v, n_boot, seed)
                rows.append({"method": method, "kind": step.split(":", 1)[0], "step": step, "measure": measure,
                             "images": int(v.size), "mean": mean, "low": low, "high": high})
    return rows


def verdicts(stats: Sequence[Mapping[str, Any]], methods: Sequence[str], threshold: float,
             pass_step: int) -> list[dict[str, Any]]:
    """Per method: pass / fail, the first cascade step whose Spearman interval lies below ``threshold``
    (1-based, ``None``: none), and the Spearman row shown (that step when it passes, else step ``pass_step``).
    A method passes when that first step is at most ``pass_step``."""
    out = []
    for method in methods:
        cascade = [s for s in stats if s["method"] == method and s["kind"] == "cascade" and s["measure"] == "spearman"]
        head = next((s for s in stats if s["method"] == method and s["kind"] == "head" and s["measure"] == "spearman"), None)
        if not cascade:
            continue
        first = next((k + 1 for k, s in enumerate(cascade) if s["high"] < threshold), None)
        passes = first is not None and first <= pass_step
        at = cascade[(first if passes else min(pass_step, len(cascade))) - 1]
        out.append({"method": method, "row": at, "passes": passes, "first": first,
                    "first_step": cascade[first - 1]["step"] if first else None, "head": head})
    return out


def _cell(s: Mapping[str, Any] | None) -> str:
    return "" if s is None else f"{s['mean']:.2f} [{s['low']:.2f}, {s['high']:.2f}]"


def sanity_report(out: Path, records: list[dict[str, Any]], methods: Mapping[str, Mapping[str, Any]]) -> str:
    """The ``results.md`` section of the randomisation checks ("" when the records have none); writes
    ``sanity.csv``, ``sanity_curves.png`` and ``sanity.png`` into ``out``."""
    steps, measures = randomisation_columns(records)
    if not steps:
        return ""
    out = Path(out)
    settings = run_settings(out)
    names = list(methods) or list(dict.fromkeys(str(r["method"]) for r in records))
    stats = step_statistics(records, names, int(settings["bootstrap"]), int(settings["seed"]))
    write_csv_atomic(out / "sanity.csv", stats, ["method", "kind", "step", "measure", "images", "mean", "low", "high"])
    threshold, pass_step = float(settings["pass_threshold"]), int(settings["pass_step"])
    lines = ["## Sanity checks: model parameter randomisation (Adebayo et al. 2018)", "",
             f"Similarity of each map to the method's map on the intact classifier, mean over images with a 95 % "
             f"bootstrap interval. **Pass**: the upper end of the Spearman similarity's interval is below "
             f"{threshold:g} at one of the first {pass_step} cascade step(s) (the top {pass_step} unit(s) random); "
             "the step shown is that one (else step {pass_step}).".replace("{pass_step}", str(pass_step)), "",
             "| method | step | Spearman | pass | first step below | random head (L-CAM) |", "|---|---|---|---|---|---|"]
    verdict = verdicts(stats, names, threshold, pass_step)
    for v in verdict:
        lines.append(f"| {v['method']} | {v['row']['step']} | {_cell(v['row'])} | {'pass' if v['passes'] else '**fail**'} | "
                     f"{v['first_step'] or 'none'} | {_cell(v['head'])} |")
    for kind in ("cascade", "independent", "head"):
        kind_steps = [s for s in steps if s.split(":", 1)[0] == kind]
        if not kind_steps:
            continue
        lines += ["", f"Spearman similarity, {kind} randomisation (top down; ssim and hog in sanity.csv):", "",
                  "| method | " + " | ".join(s.split(":", 1)[-1] for s in kind_steps) + " |",
                  "|---|" + "---|" * len(kind_steps)]
        for method in names:
            row = {s["step"]: s for s in stats if s["method"] == method and s["measure"] == "spearman"}
            if any(s in row for s in kind_steps):
                lines.append(f"| {method} | " + " | ".join(_cell(row.get(s)) for s in kind_steps) + " |")
    curves = _curves(stats, names, steps, measures)
    if curves is not None:
        save_image_atomic(curves, out / "sanity_curves.png")
        lines += ["", f"Curves: {out / 'sanity_curves.png'} · table: {out / 'sanity.csv'}"]
    figure = _figure(out, names, methods)
    if figure is not None:
        save_image_atomic(figure, out / "sanity.png")
        lines.append(f"Figure (rows = methods, columns = cascade steps): {out / 'sanity.png'}")
    return "\n".join(lines) + "\n"


def _curves(stats: Sequence[Mapping[str, Any]], methods: Sequence[str], steps: Sequence[str], measures: Sequence[str]) -> Any:
    from lcam.viz import figure_to_pil  # first: it selects the Agg backend
    import matplotlib.pyplot as plt  # noqa: I001

    kinds = [k for k in ("cascade", "independent") if any(s.startswith(k + ":") for s in steps)]
    measures = [m for m in MEASURES if m in measures]
    if not kinds or not measures:
        return None
    fig, axes = plt.subplots(len(kinds), len(measures), figsize=(4.2 * len(measures), 3.4 * len(kinds)), squeeze=False)
    for i, kind in enumerate(kinds):
        kind_steps = [s for s in steps if s.startswith(kind + ":")]
        x = np.arange(len(kind_steps))
        for j, measure in enumerate(measures):
            ax = axes[i][j]
            for method in methods:
                row = {s["step"]: s for s in stats if s["method"] == method and s["measure"] == measure}
                if not any(s in row for s in kind_steps):
                    continue
                mean = np.array([row[s]["mean"] if s in row else np.nan for s in kind_steps])
                low = np.array([row[s]["low"] if s in row else np.nan for s in kind_steps])
                high = np.array([row[s]["high"] if s in row else np.nan for s in kind_steps])
                ax.plot(x, mean, marker="o", ms=3, label=method)
                ax.fill_between(x, low, high, alpha=0.15)
            ax.axhline(0.0, color="0.6", lw=0.5)
            ax.set_xticks(x)
            ax.set_xticklabels([s.split(":", 1)[1] for s in kind_steps], rotation=60, ha="right", fontsize=6)
            ax.set_ylim(-1.05, 1.05)
            ax.set_title(f"{kind}: {measure}", fontsize=9)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return figure_to_pil(fig)


def _figure(out: Path, names: Sequence[str], methods: Mapping[str, Mapping[str, Any]], n_images: int = 3) -> Any:
    """Rows = methods, columns = intact + cascade steps (+ head), for up to ``n_images`` images."""
    import torch

    files = sorted((out / "sanity").glob("*.pt"))
    if not files:
        return None
    saved = [torch.load(p, weights_only=True) for p in files]
    kept = figure_maps(out, list(names))  # the evaluator's images and intact maps, by index
    owner: dict[int, str] = {}
    order: list[str] = []  # image fingerprints, in the evaluator's index order when known
    if kept is not None:
        from lcam.metrics.parameter_randomisation import _fingerprint

        indices, images, maps = kept
        order = [_fingerprint(images[k]) for k in range(len(indices))]
        for n, data in enumerate(saved):
            pairs = {(e["image_sha1"], e["map_sha1"]) for e in data["images"]}
            candidates = [m for m in names if any((order[k], _fingerprint(maps[m][k])) in pairs for k in range(len(indices)))]
            named = [m for m in candidates if methods.get(m, {}).get("name") == data["explainer"]]
            if named or candidates:
                owner[n] = (named or candidates)[0]
    else:  # no evaluator figure: a method whose registry name is unique
        for n, data in enumerate(saved):
            named = [m for m in names if methods.get(m, {}).get("name") == data["explainer"]]
            if len(named) == 1:
                owner[n] = named[0]
    by_method: dict[str, dict[str, dict[str, Any]]] = {}
    for n, data in enumerate(saved):
        if n in owner:
            entries = by_method.setdefault(owner[n], {})
            for e in data["images"]:
                entries.setdefault(e["image_sha1"], {**e, "steps": data["steps"]})
    if not by_method:
        return None
    common = [f for f in (order or list(next(iter(by_method.values())))) if all(f in v for v in by_method.values())]
    common = common[:n_images]
    if not common:
        return None
    from lcam.viz import colorize, panel_grid, to_numpy_image

    rows_methods = [m for m in names if m in by_method]
    columns = list(dict.fromkeys(s for m in rows_methods for s in next(iter(by_method[m].values()))["steps"]
                                 if s.startswith("cascade:") or s == "head"))
    panels, titles, labels = [], [], []
    for f in common:
        for m in rows_methods:
            e = by_method[m][f]
            row = [to_numpy_image(e["image"].float() / 255.0), colorize(e["intact"].float())]
            row += [colorize(e["maps"][s].float()) if s in e["maps"] else None for s in columns]
            panels.append(row)
            titles.append(["image", "intact"] + [s.split(":", 1)[-1] for s in columns])
            labels.append(m)
    return panel_grid(panels, titles, labels, suptitle="Cascading randomisation, top down (Adebayo et al. 2018)", cell=1.3)


if sanity_report not in REPORTS:
    REPORTS.append(sanity_report)
