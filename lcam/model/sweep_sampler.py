"""An Optuna TPE sampler that continues a resumed study instead of repeating it.

A seeded sampler restarts its random stream in every process. With persistent storage
(``hydra.sweeper.storage=sqlite:///lcam_optuna.db``), running the same sweep again therefore
re-proposes the first sweep's start-up trials one for one: the study grows, but with duplicates.
:class:`ResumableTPESampler` reseeds itself with ``seed + n`` when the first trial it is asked
for is trial ``n > 0`` of the study: a fresh study is exactly ``TPESampler(seed)``, a resumed one
gets new, still reproducible, points.

Used by ``conf/hparams_search/lcam_optuna.yaml`` (``hydra.sweeper.sampler._target_``).
"""
from __future__ import annotations

from typing import Any

from optuna.samplers import RandomSampler, TPESampler


class ResumableTPESampler(TPESampler):
    """``optuna.samplers.TPESampler`` (same arguments) whose seed moves on with a resumed study."""

    def __init__(self, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        self._base_seed = seed
        self._aligned = False

    def _align(self, trial_number: int) -> None:
        self._aligned = True
        if self._base_seed is None or trial_number == 0:
            return
        seed = (self._base_seed + trial_number) % 2**32
        rng = getattr(self._rng, "rng", self._rng)  # optuna 3 wraps the RandomState
        rng.seed(seed)
        self._random_sampler = RandomSampler(seed=seed)

    def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
        # called once at the start of every trial (study.ask), before any value is sampled
        if not self._aligned:
            self._align(trial.number)
        return super().infer_relative_search_space(study, trial)
