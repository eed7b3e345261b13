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
    if not any(arg in _HYDRA_FLAGS or arg.split("=")[0] in _HYDRA_FLAGS for arg in rest):
        problem = preflight(verb, rest, getattr(module, "validate", None))
        if problem:
            return _fail(problem, verb)
    import hydra

    app = hydra.main(config_path=CONFIG_DIR, config_name=verb, version_base="1.3")(_guard(verb, module.run))
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


def _guard(verb: str, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Report a WorldsslError raised inside a run as one line and exit 2 (instead of a traceback); a run
    stopped by SIGTERM after its checkpoint (:class:`~worldssl.runtime.errors.Interrupted`) as one line, exit
    ``128 + signum`` (143), as a process ended by that signal."""
    from worldssl.runtime.errors import Interrupted, WorldsslError

    @functools.wraps(fn)
    def task(cfg: Any) -> Any:
        try:
            return fn(cfg)
        except WorldsslError as e:
            _fail(str(e), verb)
            sys.exit(2)
        except Interrupted as e:
            print(f"worldssl {verb}: {e}", file=sys.stderr)
            sys.exit(128 + e.signum)

    return task


def preflight(verb: str, overrides: list[str], validate: Callable[[Any], None] | None = None) -> str | None:
    """Compose the verb's config with these overrides; return a one-line problem, or None if it is fine."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from worldssl.runtime.errors import WorldsslError

    args = [a for a in overrides if a not in ("-m", "--multirun")]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except HydraException as e:
        return f"cannot parse override: {_one_line(e)} (write key=value, e.g. episodes=10)"
    if any(o.is_sweep_override() for o in parsed):
        return None  # sweeps are expanded by hydra; each job validates itself
    app_args = [a for a in args if not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name=verb):
        try:
            cfg = compose(config_name=verb, overrides=app_args)
            OmegaConf.to_container(cfg, resolve=True)
        except MissingConfigException as e:
            group = (e.missing_cfg_file or "").rsplit("/", 1)[0]
            options = ", ".join(e.options or [])
            name = (e.missing_cfg_file or "").rsplit("/", 1)[-1]
            return f"unknown {group} {name!r}; valid {group} options: {options}"
        except (HydraException, OmegaConfBaseException) as e:
            return _composition_problem(e, verb)
    if validate is not None:
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

        m = re.search(r"Key '([^']+)'", text) or re.search(r"override '([^']+)'", str(e))
        key = m.group(1) if m else "?"
        return f"unknown key {key!r} for `worldssl {verb}`; see `worldssl {verb} --help` for every key"
    return text


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return " ".join(lines[:2]) if lines else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
