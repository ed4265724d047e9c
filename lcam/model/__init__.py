"""The L-CAM model and its training: LightningModule (module.py and its parts), head, loss, optimiser, training job,
callbacks, resume, checkpoints, sweep sampler. May import: runtime, maps, viz, data, backbones, metrics (never explainers/explain).
"""
