"""Policy learners (pixel / latent SAC, SB3 adapters, planners over a world model).

They expose ``act(obs, eval_mode)`` and ``update(batch) -> dict[str, float]`` and never log, step envs
or write files; the trainer loop owns all I/O. Filled in by the agents issue.
"""
