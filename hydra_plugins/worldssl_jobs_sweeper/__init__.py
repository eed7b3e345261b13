"""worldssl's hydra sweeper plugin: ``hydra/sweeper=jobs`` (see :mod:`.jobs_sweeper`). Hydra accepts plugins
only from the ``hydra_plugins`` namespace package, hence this folder beside ``worldssl/``."""
