"""``worldssl VERB [WHAT] key=value ...``: one hydra app per stage of the pipeline.

Every verb is a hydra app over ``configs/<verb>.yaml`` (so ``-m`` sweeps, launchers and ``--help`` work as
in any hydra app). Before handing over to hydra, the overrides are composed once here, so that an unknown
option, key or value is reported as one line naming what is valid, instead of a hydra traceback.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import worldssl

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")

#: verb -> (module with ``run(cfg)`` and optional ``validate(cfg)``, one-line description, example)
VERBS: dict[str, tuple[str, str, str]] = {
    "collect": ("worldssl.verbs.collect", "roll a policy in an env and write an episode dataset",
                "worldssl collect env=cubes episodes=100 workers=2"),
    "preview": ("worldssl.verbs.preview", "render a PNG strip of frames from an env",
                "worldssl preview env=maze out=maze.png"),
    "pretrain": ("worldssl.verbs.pretrain", "train an encoder with a self-supervised objective on a dataset",
                 "worldssl pretrain ssl=moco backbone=conv data=data/shapes steps=2000"),
    "eval": ("worldssl.verbs.eval",
             "judge a representation (eval probe: state probes; eval curves: world-model runs per epoch)",
             "worldssl eval probe encoder.checkpoint=RUN/checkpoints/encoder data=data/shapes"),
    "worldmodel": ("worldssl.verbs.worldmodel", "train a latent world model (encoder + transition + objective)",
                   "worldssl worldmodel objective=contrastive data=data/shapes-train eval_data=data/shapes-eval"),
    "compare": ("worldssl.verbs.compare", "the main job: world-model objectives compared over seeds (C-SWM ranking)",
                "worldssl compare objectives=[contrastive,generative_ae] seeds=[0,1]"),
    "sweep": ("worldssl.verbs.sweep", "a named experiment (configs/experiment/) as hydra multiruns on any launcher",
              "worldssl sweep experiment=objective_comparison size=smoke hydra/launcher=joblib"),
    "train": ("worldssl.verbs.train", "train an agent from pixels (agent=sac; encoder.mode=scratch|frozen|finetune|curl|decoupled)",
              "worldssl train env=dmc env.task=cartpole-swingup encoder.mode=scratch frames=100000"),
    "bench": ("worldssl.verbs.bench", "speed / memory figures with a same-run baseline (bench envs | ssl | worldmodel | agents)",
              "worldssl bench envs"),
    "report": ("worldssl.verbs.report", "rliable intervals, figures, report.md + report.html over every run in some dirs",
               "worldssl report runs/train runs/worldmodel pairs=[[A,B]]"),
}
#: verbs whose first bare word picks what to do (``worldssl bench envs`` == ``worldssl bench what=envs``)
SUBCOMMAND_KEY = {"bench": "what", "eval": "what"}
#: verbs whose bare words (existing paths, or words without ``=``) form one list (``worldssl report A B`` ==
#: ``worldssl report dirs=[A,B]``)
POSITIONAL_LIST_KEY = {"report": "dirs"}
_HYDRA_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--resolve", "--package", "-p",
                "--shell-completion", "-sc", "--config-dir", "-cd", "--config-name", "-cn", "--config-path",
                "-cp", "--experimental-rerun", "--version"}


def usage() -> str:
    width = max(len(v) for v in VERBS)
    lines = [f"worldssl {worldssl.__version__}: self-supervised encoders and latent world models for RL from pixels",
             "", "usage: worldssl VERB [key=value ...] [-m for sweeps] [--help]", "", "verbs:"]
    lines += [f"  {verb:<{width}}  {desc}" for verb, (_, desc, _) in VERBS.items()]
    lines += ["", "examples:"] + [f"  {example}" for _, _, example in VERBS.values()]
    lines += ["", "`worldssl VERB --help` shows the verb's config groups and every key with its default."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(worldssl.__version__)
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        return _fail(f"unknown verb {verb!r}; valid verbs: {', '.join(VERBS)} (see `worldssl --help`)")
    key = SUBCOMMAND_KEY.get(verb)
    if key and rest and not rest[0].startswith("-") and "=" not in rest[0]:
        rest = [f"{key}={rest[0]}", *rest[1:]]
    if verb in POSITIONAL_LIST_KEY:
        rest = _positional_list(POSITIONAL_LIST_KEY[verb], rest)
    module = importlib.import_module(VERBS[verb][0])
    claims = not getattr(module, "ORCHESTRATOR", False)
    if claims and not {"-m", "--multirun"} & set(rest):
        from worldssl.sweep import gpus

        gpus.claim_gpu()  # a single run: before the preflight imports dm_control, which opens its EGL device
    if not any(arg in _HYDRA_FLAGS or arg.split("=")[0] in _HYDRA_FLAGS for arg in rest):
        problem = preflight(verb, rest, getattr(module, "validate", None))
        if problem:
            return _fail(problem, verb)
    import hydra

    app = hydra.main(config_path=CONFIG_DIR, config_name=verb, version_base="1.3")(
        _guard(verb, module.run, claim_gpu=claims))
    sys.argv = [f"worldssl-{verb}", *rest]
    app()
    return 0


def _positional_list(key: str, args: list[str]) -> list[str]:
    """Bare words (an existing path, or a word without ``=`` or a leading ``-``) as one ``key=[...]`` override,
    each quoted so that any path survives hydra's parser."""
    bare = [a for a in args if Path(a).exists() or ("=" not in a and not a.startswith("-"))]
    if not bare:
        return args
    quoted = ",".join("'" + a.replace("\\", "\\\\").replace("'", "\\'") + "'" for a in bare)
    return [f"{key}=[{quoted}]", *[a for a in args if a not in bare]]


def _fail(message: str, verb: str | None = None) -> int:
    prefix = f"worldssl {verb}" if verb else "worldssl"
    print(f"{prefix}: error: {message}", file=sys.stderr)
    return 2


def _guard(verb: str, fn: Callable[[Any], Any], claim_gpu: bool = True) -> Callable[[Any], Any]:
    """Report a WorldsslError raised inside a run as one line and exit 2 (instead of a traceback; in a multirun,
    the job is marked failed and the other jobs go on); give a job its own GPU where there are several
    (:func:`worldssl.sweep.gpus.claim_gpu`; not for verbs that only launch jobs, ``ORCHESTRATOR = True``); report a run
    stopped by SIGTERM after its checkpoint (:class:`~worldssl.runtime.errors.Interrupted`) as one line, exit
    ``128 + signum`` (143), as a process ended by that signal."""
    from worldssl.runtime.errors import Interrupted, WorldsslError

    @functools.wraps(fn)
    def task(cfg: Any) -> Any:
        if claim_gpu:
            from worldssl.sweep import gpus

            gpus.claim_gpu()
        try:
            return fn(cfg)
        except WorldsslError as e:
            _fail(str(e), verb)
            if _in_multirun():  # hydra marks this job failed and the sweep goes on with the others
                raise _job_failed(f"worldssl {verb}: a sweep job failed: {e}") from None
            sys.exit(2)
        except Interrupted as e:
            print(f"worldssl {verb}: {e}", file=sys.stderr)
            sys.exit(128 + e.signum)

    return task


def compose_verb(verb: str, overrides: list[str]) -> Any:
    """A verb's config with these overrides, resolved, from inside a running hydra app or outside one; a problem
    is a ConfigError of one line (for verbs that launch or check other verbs' runs: compare, bench all)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from worldssl.runtime.errors import ConfigError

    try:
        if GlobalHydra.instance().is_initialized():
            cfg = compose(config_name=verb, overrides=overrides)
        else:
            with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name=verb):
                cfg = compose(config_name=verb, overrides=overrides)
        OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_composition_problem(e, verb)) from e
    return cfg


def _job_failed(message: str) -> Exception:
    """The exception a failed multirun job ends with: hydra prints a CompactHydraException as its message alone
    when the sweep reports its failed jobs, not as a traceback."""
    from hydra.errors import CompactHydraException

    return CompactHydraException(message)


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def preflight(verb: str, overrides: list[str], validate: Callable[[Any], None] | None = None) -> str | None:
    """Compose the verb's config with these overrides; return a one-line problem, or None if it is fine.

    Hydra's own overrides (``hydra/launcher=joblib``, ``hydra.launcher.n_jobs=4``) are composed with hydra's
    config. A sweep (``-m seed=0,1 objective=a,b``) is checked job by job: every swept value once; a job list
    (``hydra/sweeper=jobs``) every listed job."""
    from hydra import initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args = [a for a in overrides if a not in ("-m", "--multirun")]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except HydraException as e:
        return f"cannot parse override: {_one_line(e)} (write key=value, e.g. episodes=10)"
    hydra_args = [a for a in args if _is_hydra_override(a)]
    app = [(a, o) for a, o in zip(args, parsed) if not _is_hydra_override(a)]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name=verb):
        hydra_cfg, problem = _compose(verb, hydra_args, hydra=True)
        if problem:
            return problem
        jobs = _sweep_jobs(app)
        if _select(hydra_cfg, "hydra.sweeper._target_") == "hydra_plugins.worldssl_jobs_sweeper.jobs_sweeper.JobListSweeper":
            listed = _listed_jobs(hydra_cfg)
            if isinstance(listed, str):
                return listed
            jobs = [[*jobs[0], *[a for a in job if not _is_hydra_override(a)]] for job in listed]
        for job in jobs:
            cfg, problem = _compose(verb, job)
            if problem is None and validate is not None:
                problem = _validated(cfg, validate)
            if problem:
                return problem + (f" (in the sweep job {' '.join(job)})" if len(jobs) > 1 else "")
    return None


def _is_hydra_override(arg: str) -> bool:
    return arg.lstrip("+~").startswith(("hydra.", "hydra/"))


def _select(cfg: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key) if cfg is not None else None


def _sweep_jobs(app: list[tuple[str, Any]]) -> list[list[str]]:
    """The jobs a sweep's overrides make, each swept value in one job at least (the others at their first
    value); continuous sweeps (``interval(...)``) are left to the sweeper. Without a sweep: the one job."""
    fixed = [arg for arg, o in app if not (o.is_sweep_override() and o.is_discrete_sweep())]
    swept = [(o.get_key_element(), list(o.sweep_string_iterator())) for _, o in app
             if o.is_sweep_override() and o.is_discrete_sweep()]
    firsts = {key: f"{key}={values[0]}" for key, values in swept if values}
    jobs = [[*fixed, *firsts.values()]]
    for key, values in swept:
        jobs += [[*fixed, *{**firsts, key: f"{key}={v}"}.values()] for v in values[1:]]
    return jobs


def _listed_jobs(hydra_cfg: Any) -> list[list[str]] | str:
    from omegaconf import OmegaConf

    path = _select(hydra_cfg, "hydra.sweeper.jobs_file")
    if OmegaConf.is_missing(hydra_cfg.hydra.sweeper, "jobs_file") or not path or not Path(path).is_file():
        return f"hydra/sweeper=jobs needs hydra.sweeper.jobs_file=FILE (a YAML list of override lists); {path or 'none given'} is not a file"
    jobs = OmegaConf.to_container(OmegaConf.load(path))
    if not isinstance(jobs, list) or not all(isinstance(j, list) for j in jobs):
        return f"{path} must be a YAML list of override lists (one per job)"
    return [[str(a) for a in job] for job in jobs]


def _compose(verb: str, overrides: list[str], hydra: bool = False) -> tuple[Any, str | None]:
    """The composed config (with hydra's node when ``hydra``), or a one-line problem."""
    from hydra import compose
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = compose(config_name=verb, overrides=overrides, return_hydra_config=hydra)
        if not hydra:
            OmegaConf.to_container(cfg, resolve=True)
        return cfg, None
    except MissingConfigException as e:
        group = (e.missing_cfg_file or "").rsplit("/", 1)[0]
        options = ", ".join(e.options or [])
        name = (e.missing_cfg_file or "").rsplit("/", 1)[-1]
        return None, f"unknown {group} {name!r}; valid {group} options: {options}"
    except (HydraException, OmegaConfBaseException) as e:
        return None, _composition_problem(e, verb)


def _validated(cfg: Any, validate: Callable[[Any], None]) -> str | None:
    from worldssl.runtime.errors import WorldsslError

    try:
        validate(cfg)
    except WorldsslError as e:
        return str(e)
    return None


def _composition_problem(e: Exception, verb: str) -> str:
    cause = e.__cause__ or e
    text = _one_line(cause)
    if "not in struct" in text or "Could not override" in str(e):
        import re

        m = re.search(r"override '([^']+)'", str(e)) or re.search(r"Key '([^']+)'", text)
        key = m.group(1) if m else "?"
        if key.startswith("hydra."):
            group = key.split(".")[1]
            return (f"unknown key {key!r}; `worldssl {verb} hydra/{group}=NAME --cfg hydra -p hydra.{group}` lists "
                    f"the keys of that {group}")
        return f"unknown key {key!r} for `worldssl {verb}`; see `worldssl {verb} --help` for every key"
    return text


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return " ".join(lines[:2]) if lines else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
