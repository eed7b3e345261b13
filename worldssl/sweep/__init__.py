"""Sweeps as hydra multiruns: every run is a job of a hydra launcher (basic, joblib, submitit).

- ``hydra/sweeper=jobs`` (``hydra_plugins/worldssl_jobs_sweeper``), a hydra sweeper over an explicit list of jobs (one
  override list each), so a sweep that is not a cartesian product (an encoder per task, a checkpoint made by an
  earlier stage) is still one multirun of any launcher.
- :mod:`worldssl.sweep.jobs`: jobs with deterministic run directories, launched as such a multirun in a child
  process; a finished job is skipped, an interrupted one resumes from its checkpoint (``resume=auto``).
- :mod:`worldssl.sweep.gpus`: one GPU per job where a machine has several, with the matching EGL device.
- :mod:`worldssl.sweep.experiments`: the named experiments of ``configs/experiment/`` as stages of jobs.
"""
