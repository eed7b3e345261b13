"""``worldssl bench worldmodel``: world-model training on C-SWM's 2D Shapes, ours against a straightforward
implementation of the same model and objectives (:mod:`worldssl.bench.straightforward`).

The model is what ``worldssl worldmodel`` trains by default on Shapes: C-SWM's small slot encoder (``K = 5``
slots of ``D = 2``, hidden 512) and GNN transition, Adam at lr ``5e-4``, batch 1024. Both sides start from the
same weights.

* **ours**: :meth:`~worldssl.worldmodels.train.WorldModelTrainer.update` on uint8 windows gathered by
  :meth:`~worldssl.worldmodels.train.WorldModelTrainer.batch`, bf16 autocast where ``amp=auto`` picks it (CUDA, CPUs with
  AMX), the factored GNN, the objectives of :mod:`worldssl.worldmodels.objectives`.
* **straightforward**: float32 frames pre-converted in memory (as C-SWM's code keeps them), a ``Dataset`` +
  shuffled ``DataLoader`` of per-item float tensors, ``GNNTransition(naive=True)``, float32, plain losses.

Rows:

1. training transitions/s for every objective: a few warm-up steps each, then ``wm_steps`` timed steps per
   side, ours and straightforward alternating step by step (a slow spell of a shared machine hits both
   alike); the median step. A step includes getting its batch.
2. one epoch at the paper's hyperparameters (contrastive, batch 1024, every transition of the train set
   once), both sides alternating step by step; ``wm_epoch_steps`` times only that many steps and
   extrapolates (the label says so).
3. peak RAM (``VmHWM``) of a fresh process that (a) trains ``wm_memory_steps`` steps on the full train set
   and (b) runs the ranking evaluation (Hits@1 / MRR at 1, 5, 10 steps) on the full eval set: ours reading
   frames from disk per batch (``load="stream"``), the straightforward side holding float32 frames. The
   child (``python -m worldssl.bench.worldmodel child ...``) imports only what its job needs and reports
   its RSS after each stage (interpreter, torch, worldssl modules, data, model, peak).

Missing datasets are collected first (C-SWM's: train 1000 episodes x 100 steps, seed 1; eval 10000 x 10,
seed 2) into ``wm_train_data`` / ``wm_eval_data``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worldssl.bench.common import Row, setting_reader

OBJECTIVES = ("contrastive", "infonce", "generative_ae", "generative_vae", "selfpredictive")
ENV_ID = "worldssl/Shapes-v0"
BASELINE = "straightforward fp32, DataLoader, naive GNN"
MEMORY_BASELINE = "straightforward, float32 frames in RAM"
#: peak-RSS targets of ours, MiB
TRAIN_RSS_TARGET, EVAL_RSS_TARGET = 1024, 1536


@dataclass
class CostRow(Row):
    """A row where lower is better (seconds, MiB): the ratio is ``baseline / ours``, so > 1x favours ours."""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.ours:
            return None
        return self.baseline / self.ours


@dataclass
class Settings:
    objectives: list[str] = field(default_factory=lambda: list(OBJECTIVES))
    batch_size: int = 1024
    hidden_dim: int = 512          # encoder MLP and GNN width (C-SWM: 512); smaller for quick runs
    lr: float = 5e-4
    warmup: int = 2                # untimed steps per side before timing
    steps: int = 5                 # timed steps per side and objective (the median is reported)
    epoch: bool = True
    epoch_steps: int | None = None  # None: the whole epoch; N: time N steps and extrapolate
    memory: bool = True
    memory_steps: int = 10         # training steps of the peak-RAM child
    eval_steps: list[int] = field(default_factory=lambda: [1, 5, 10])
    eval_batch_size: int = 1000    # ours (WorldModelSettings' default); the reference uses C-SWM's 100
    train_data: str = "data/shapes-train"
    eval_data: str = "data/shapes-eval"
    train_episodes: int = 1000
    train_episode_steps: int = 100
    train_seed: int = 1
    eval_episodes: int = 10000
    eval_episode_steps: int = 10
    eval_seed: int = 2
    collect_workers: int = 1
    load: str = "auto"             # how ours reads the train set for rows 1-2 (auto: in memory, uint8)
    loader_workers: int = 0        # DataLoader workers of the straightforward side
    threads: int | None = None     # CPU intra-op threads (None: torch's default)
    device: str = "auto"
    amp: bool | str = "auto"
    seed: int = 0

    @classmethod
    def from_cfg(cls, cfg: Any) -> Settings:
        get = setting_reader(cfg)

        d = cls()
        epoch_steps = get("wm_epoch_steps", None)
        threads = cfg.get("wm_threads", None) if hasattr(cfg, "get") else None
        return cls(objectives=[str(o) for o in get("wm_objectives", d.objectives)],
                   batch_size=int(get("wm_batch_size", d.batch_size)), hidden_dim=int(get("wm_hidden_dim", d.hidden_dim)),
                   lr=float(get("wm_lr", d.lr)), warmup=int(get("wm_warmup", d.warmup)),
                   steps=int(get("wm_steps", d.steps)), epoch=bool(get("wm_epoch", d.epoch)),
                   epoch_steps=None if epoch_steps is None else int(epoch_steps),
                   memory=bool(get("wm_memory", d.memory)), memory_steps=int(get("wm_memory_steps", d.memory_steps)),
                   eval_steps=[int(k) for k in get("wm_eval_steps", d.eval_steps)],
                   eval_batch_size=int(get("wm_eval_batch_size", d.eval_batch_size)),
                   train_data=str(get("wm_train_data", d.train_data)), eval_data=str(get("wm_eval_data", d.eval_data)),
                   train_episodes=int(get("wm_train_episodes", d.train_episodes)),
                   train_episode_steps=int(get("wm_train_episode_steps", d.train_episode_steps)),
                   train_seed=int(get("wm_train_seed", d.train_seed)),
                   eval_episodes=int(get("wm_eval_episodes", d.eval_episodes)),
                   eval_episode_steps=int(get("wm_eval_episode_steps", d.eval_episode_steps)),
                   eval_seed=int(get("wm_eval_seed", d.eval_seed)),
                   collect_workers=int(get("wm_collect_workers", d.collect_workers)),
                   load=str(get("wm_load", d.load)), loader_workers=int(get("wm_loader_workers", d.loader_workers)),
                   threads=None if threads is None or str(threads).lower() in ("null", "none", "auto") else int(threads),
                   device=str(get("device", d.device)), amp=get("amp", d.amp), seed=int(get("seed", d.seed)))

    def validate(self) -> None:
        from worldssl.runtime.errors import ConfigError

        bad = [o for o in self.objectives if o not in OBJECTIVES]
        if bad:
            raise ConfigError(f"unknown wm_objectives {bad}; valid: {', '.join(OBJECTIVES)}")
        positive = {"wm_batch_size": self.batch_size, "wm_hidden_dim": self.hidden_dim, "wm_steps": self.steps,
                    "wm_memory_steps": self.memory_steps, "wm_eval_batch_size": self.eval_batch_size,
                    "wm_train_episodes": self.train_episodes, "wm_train_episode_steps": self.train_episode_steps,
                    "wm_eval_episodes": self.eval_episodes, "wm_eval_episode_steps": self.eval_episode_steps,
                    "wm_collect_workers": self.collect_workers}
        if self.epoch_steps is not None:
            positive["wm_epoch_steps"] = self.epoch_steps
        low = [k for k, v in positive.items() if v < 1]
        if low or self.warmup < 0 or self.loader_workers < 0 or not self.lr > 0:
            raise ConfigError(f"{', '.join(low) or 'wm_warmup / wm_loader_workers / wm_lr'} must be positive "
                              f"(wm_warmup and wm_loader_workers may be 0)")
        if not self.eval_steps or min(self.eval_steps) < 1:
            raise ConfigError(f"wm_eval_steps must be positive integers, got {self.eval_steps}")
        if self.load not in ("auto", "memory", "mmap", "stream"):
            raise ConfigError(f"wm_load must be auto, memory, mmap or stream, got {self.load!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"wm_threads must be >= 1 or null, got {self.threads}")


def model_spec(objective: str, hidden_dim: int = 512) -> dict[str, Any]:
    """The default Shapes world model (what ``worldssl worldmodel`` trains), with ``objective``."""
    return {"obs_shape": [3, 50, 50], "action_space": {"type": "discrete", "n": 20},
            "encoder": {"kind": "slots", "size": "small", "num_slots": 5, "embedding_dim": 2,
                        "hidden_dim": int(hidden_dim)},
            "transition": "gnn", "latent": {"hidden_dim": int(hidden_dim)}, "objective": objective,
            "objective_kwargs": REFERENCE_KWARGS.get(objective, {}), "reward": False}


# the options the straightforward reference implements, where they differ from the objective's defaults:
# self-prediction in its first form (one step, latents compared directly, no heads), so both sides run the same
REFERENCE_KWARGS = {"selfpredictive": {"horizon": 1, "projection_dim": None, "consistency_weight": 0.0}}


# -- data -------------------------------------------------------------------------------------------------
def ensure_dataset(path: str | Path, episodes: int, steps: int, seed: int, workers: int = 1) -> Path:
    """``path`` as a Shapes dataset: collected (``episodes`` x ``steps``, seed ``seed``) when missing, completed
    when it is an interrupted collection with these settings, else used as it is."""
    from worldssl.data.episodes import list_episode_files, read_manifest
    from worldssl.runtime.errors import DataError

    path = Path(path)
    if (path / "manifest.json").is_file():
        manifest = read_manifest(path)
        if manifest.get("env_id") != ENV_ID:
            raise DataError(f"{path} holds {manifest.get('env_id')} episodes, not {ENV_ID}; point wm_train_data / "
                            f"wm_eval_data at a Shapes dataset or a new directory")
        same = manifest.get("seed") == seed and manifest.get("max_episode_steps") == steps
        if not same or len(list_episode_files(path)) >= episodes:
            return path
    from worldssl.data import CollectSpec, collect

    print(f"  collecting {episodes} Shapes episodes x {steps} steps (seed {seed}) into {path}", flush=True)
    collect(CollectSpec(ENV_ID, {}, str(path), episodes=episodes, seed=seed, max_episode_steps=steps),
            workers=workers, progress=False)
    return path


# -- timing -----------------------------------------------------------------------------------------------
def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


class _Pair:
    """Ours and the straightforward trainer for one objective, from the same initial weights."""

    def __init__(self, name: str, s: Settings, train, floats, device, run_dir: str):
        import torch

        from worldssl.bench.straightforward import StraightforwardTrainer
        from worldssl.worldmodels.train import WorldModelSettings, WorldModelTrainer, build_from_spec

        torch.manual_seed(s.seed)
        model, objective = build_from_spec(model_spec(name, s.hidden_dim))
        # the reference copies the weights first (the trainer moves the model to the device in place)
        self.reference = StraightforwardTrainer(model, objective, name, floats, s.batch_size, s.lr, device,
                                                workers=s.loader_workers, seed=s.seed)
        settings = WorldModelSettings(batch_size=s.batch_size, lr=s.lr, amp=s.amp, seed=s.seed, progress=False,
                                      window=int(getattr(objective, "horizon", 1)))
        self.ours = WorldModelTrainer(model, objective, train, settings, run_dir, device)
        self.device = device
        self._order, self._epoch, self._pos = self.ours.epoch_order(0), 0, 0

    def ours_step(self) -> None:
        """One step of our trainer on the next ``batch_size`` windows of its epoch order."""
        b = self.ours.settings.batch_size
        if self._pos * b >= len(self._order):
            self._epoch, self._pos = self._epoch + 1, 0
            self._order = self.ours.epoch_order(self._epoch)
        self.ours.update(self.ours.batch(self._order[self._pos * b:(self._pos + 1) * b]))
        self._pos += 1

    def reference_step(self) -> None:
        self.reference.step()


def throughput_row(name: str, s: Settings, train, floats, device, run_dir: str) -> Row:
    pair = _Pair(name, s, train, floats, device, run_dir)
    for _ in range(s.warmup):
        pair.ours_step()
        pair.reference_step()
    ours, ref = [], []
    for i in range(s.steps):  # alternate, order flipped every step
        first, second = ((pair.ours_step, ours), (pair.reference_step, ref))[:: 1 if i % 2 == 0 else -1]
        for fn, out in (first, second):
            out.append(s.batch_size / _timed(fn, device))
    row = Row(f"{name} / slots+gnn b{s.batch_size}", "train transitions/s", statistics.median(ours),
              statistics.median(ref), BASELINE, ">= 1.0x")
    print(f"  {name}: ours {row.ours:,.0f} vs straightforward {row.baseline:,.0f} transitions/s "
          f"({row.ratio:.2f}x)", flush=True)
    return row


def epoch_row(s: Settings, train, floats, device, run_dir: str) -> Row:
    """Contrastive, one epoch (every transition once), both sides alternating step by step."""
    pair = _Pair("contrastive", s, train, floats, device, run_dir)
    transitions = len(pair.ours.starts[0])
    full = pair.ours.steps_per_epoch
    steps = full if s.epoch_steps is None else min(s.epoch_steps, full)
    for i in range(s.warmup):  # warm-up on other batches (epoch 1's order), then a fresh epoch each
        pair.ours.update(pair.ours.batch(pair.ours.epoch_order(1)[i * s.batch_size:(i + 1) * s.batch_size]))
        pair.reference_step()
    pair.reference._it = None
    order = pair.ours.epoch_order(0)
    ours_t, ref_t, seen = 0.0, 0.0, 0
    for i in range(steps):
        rows = order[i * s.batch_size:(i + 1) * s.batch_size]
        t_ours = _timed(lambda rows=rows: pair.ours.update(pair.ours.batch(rows)), device)
        t_ref = _timed(pair.reference_step, device)
        ours_t, ref_t, seen = ours_t + t_ours, ref_t + t_ref, seen + len(rows)
    label = f"epoch contrastive b{s.batch_size} ({transitions:,} transitions, {full} steps)"
    if steps < full:  # per transition, so a short last batch is not over-counted
        ours_t, ref_t = ours_t * transitions / seen, ref_t * transitions / seen
        label += f", extrapolated from {steps} steps"
    row = CostRow(label, "epoch seconds", ours_t, ref_t, BASELINE, ">= 2x")
    print(f"  epoch: ours {ours_t:,.1f} s vs straightforward {ref_t:,.1f} s (speed-up {row.ratio:.2f}x)"
          f"{'' if steps == full else f' (extrapolated from {steps} of {full} steps)'}", flush=True)
    return row


# -- peak RAM (a fresh child process per figure) ----------------------------------------------------------
def _child_args(job: str, impl: str, s: Settings, device) -> dict[str, Any]:
    return {"job": job, "impl": impl, "spec": model_spec("contrastive", s.hidden_dim),
            "train_data": str(Path(s.train_data).resolve()), "eval_data": str(Path(s.eval_data).resolve()),
            "batch_size": s.batch_size, "lr": s.lr, "steps": s.memory_steps, "eval_steps": list(s.eval_steps),
            "eval_batch_size": s.eval_batch_size, "device": str(device), "amp": s.amp, "threads": s.threads,
            "seed": s.seed, "loader_workers": s.loader_workers}


def run_child(args: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run one peak-RAM job in a fresh interpreter; its report (stages in MiB, peak, seconds)."""
    proc = subprocess.run([sys.executable, "-m", "worldssl.bench.worldmodel", "child", json.dumps(args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        from worldssl.runtime.errors import WorldsslError

        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise WorldsslError(f"bench worldmodel child {args['job']}/{args['impl']} failed ({proc.returncode}):\n{tail}")
    out = json.loads(lines[-1][len("RESULT "):])
    if out["peak_mib"] is None:  # no /proc: the child's own max RSS is all there is
        import resource

        kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        out["peak_mib"] = kib / (1 << 20) if sys.platform == "darwin" else kib / 1024
    return out


def _breakdown(r: dict[str, Any]) -> str:
    stages, prev, parts = r["stages"], 0.0, []
    for name, mib in stages:
        parts.append(f"{name} {mib - prev:+,.0f}")
        prev = mib
    parts.append(f"working set {r['peak_mib'] - prev:+,.0f}")
    heavy = f"; loaded: {', '.join(r['heavy_modules'])}" if r["heavy_modules"] else ""
    return " ".join(parts) + heavy


def memory_rows(s: Settings, device) -> list[Row]:
    jobs = [("train", f"peak RAM: train contrastive b{s.batch_size}, {s.memory_steps} steps on "
             f"{Path(s.train_data).name} (ours: load=stream)", TRAIN_RSS_TARGET),
            ("eval", f"peak RAM: ranking eval @{','.join(map(str, s.eval_steps))} on {Path(s.eval_data).name} "
             f"(ours: load=stream)", EVAL_RSS_TARGET)]
    rows = []
    for job, label, target in jobs:
        results = {impl: run_child(_child_args(job, impl, s, device)) for impl in ("ours", "straightforward")}
        for impl, r in results.items():
            extra = (f", {r['rate']:,.0f} transitions/s" if job == "train" else
                     ", " + ", ".join(f"hits@1/{k} {r['metrics'].get(f'hits@1/{k}', float('nan')):.1f}"
                                      for k in s.eval_steps))
            print(f"  {job} {impl}: peak {r['peak_mib']:,.0f} MiB in {r['seconds']:.1f} s{extra}; MiB: "
                  f"{_breakdown(r)}", flush=True)
        rows.append(CostRow(label, "peak RSS MiB", results["ours"]["peak_mib"],
                            results["straightforward"]["peak_mib"], MEMORY_BASELINE, f"< {target:,} MiB"))
        if job == "eval":  # the whole evaluation in a fresh process: reading the set, rollouts, ranking
            rows.append(CostRow(label.replace("peak RAM: ", "").replace(" (ours: load=stream)", ", fresh process"),
                                "eval seconds", results["ours"]["seconds"], results["straightforward"]["seconds"],
                                "straightforward (C-SWM eval.py: one pass per k)"))
    return rows


def _rss_mib(key: str = "VmRSS") -> float | None:
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def child(args: dict[str, Any]) -> dict[str, Any]:
    """One peak-RAM job (``args`` from :func:`_child_args`), importing only what it needs."""
    stages: list[tuple[str, float | None]] = [("python", _rss_mib())]
    import torch

    stages.append(("torch", _rss_mib()))
    if args["threads"]:
        torch.set_num_threads(int(args["threads"]))
    ours, train = args["impl"] == "ours", args["job"] == "train"
    if ours:
        from worldssl.data.episodes import EpisodeDataset
        from worldssl.worldmodels.train import WorldModelSettings, WorldModelTrainer, build_from_spec
        if not train:
            from worldssl.eval.ranking import evaluate_ranking
    else:
        from worldssl.bench import straightforward as ref
        from worldssl.worldmodels.train import build_from_spec
    stages.append(("worldssl imports", _rss_mib()))
    device = torch.device(args["device"])
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    if train:
        import tempfile

        data = EpisodeDataset(args["train_data"], load="stream") if ours else ref.FloatTransitions(args["train_data"])
        stages.append(("data", _rss_mib()))
        torch.manual_seed(args["seed"])
        model, objective = build_from_spec(args["spec"])
        b, steps = int(args["batch_size"]), int(args["steps"])
        with tempfile.TemporaryDirectory() as tmp:
            if ours:
                settings = WorldModelSettings(batch_size=b, lr=args["lr"], amp=args["amp"], seed=args["seed"],
                                              progress=False)
                trainer = WorldModelTrainer(model, objective, data, settings, tmp, device)
                stages.append(("model+optimizer", _rss_mib()))
                order = trainer.epoch_order(0)
                t1 = time.perf_counter()
                for i in range(steps):
                    trainer.update(trainer.batch(order[i * b:(i + 1) * b]))
            else:
                trainer = ref.StraightforwardTrainer(model, objective, "contrastive", data, b, args["lr"], device,
                                                     workers=int(args["loader_workers"]), seed=args["seed"])
                stages.append(("model+optimizer", _rss_mib()))
                t1 = time.perf_counter()
                for _ in range(steps):
                    trainer.step()
        out["rate"] = steps * b / (time.perf_counter() - t1)
    else:
        torch.manual_seed(args["seed"])
        model, _ = build_from_spec(args["spec"])
        model = model.to(device) if ours else ref.naive_model(model).to(device)
        stages.append(("model", _rss_mib()))
        if ours:
            data = EpisodeDataset(args["eval_data"], load="stream")
            stages.append(("data", _rss_mib()))
            out["metrics"] = evaluate_ranking(model, data, steps=args["eval_steps"],
                                              batch_size=int(args["eval_batch_size"]), device=device)
        else:  # the reference loads its float32 paths inside its evaluation (in the working set)
            out["metrics"] = ref.evaluate_ranking(model, args["eval_data"], steps=args["eval_steps"], device=device)
    heavy = ("timm", "torchvision", "torch._dynamo", "torch._inductor", "sympy", "PIL", "envs", "gymnasium")
    return {**out, "seconds": time.perf_counter() - t0, "peak_mib": _rss_mib("VmHWM"),
            "stages": [(k, v) for k, v in stages if v is not None],
            "heavy_modules": [m for m in heavy if m in sys.modules]}


# -- entry ------------------------------------------------------------------------------------------------
def run(cfg: Any) -> list[Row]:
    import torch

    from worldssl.runtime.device import resolve_device

    s = Settings.from_cfg(cfg)
    s.validate()
    device = resolve_device(s.device)
    threads = torch.get_num_threads()
    if device.type == "cpu" and s.threads is not None:
        torch.set_num_threads(s.threads)
    try:
        return _run(s, device)
    finally:
        torch.set_num_threads(threads)


def _run(s: Settings, device) -> list[Row]:
    import contextlib
    import tempfile

    import torch

    from worldssl.bench.straightforward import FloatTransitions
    from worldssl.data.episodes import EpisodeDataset
    from worldssl.runtime.device import autocast

    ensure_dataset(s.train_data, s.train_episodes, s.train_episode_steps, s.train_seed, s.collect_workers)
    if s.memory:
        ensure_dataset(s.eval_data, s.eval_episodes, s.eval_episode_steps, s.eval_seed, s.collect_workers)
    bf16 = not isinstance(autocast(device, s.amp, cpu_auto=True), contextlib.nullcontext)
    where = f"{device}" + (f" ({torch.get_num_threads()} thread(s))" if device.type == "cpu" else "")
    print(f"bench worldmodel: C-SWM 2D Shapes, slots (K=5, D=2) + GNN, hidden {s.hidden_dim}, Adam lr {s.lr:g}, "
          f"batch {s.batch_size}, on {where}\n"
          f"  ours: uint8 windows (load={s.load}), {'bf16 autocast' if bf16 else 'float32'}, factored GNN; "
          f"straightforward: float32 frames in RAM, DataLoader ({s.loader_workers} workers), naive GNN, float32\n"
          f"  rates: median of {s.steps} steps per side after {s.warmup} warm-up, alternating; ratio = ours / "
          f"straightforward for rates, straightforward / ours for seconds and MiB (> 1x: ours better)", flush=True)
    # peak-RAM children first, while this process holds no dataset
    memory = memory_rows(s, device) if s.memory else []
    rows: list[Row] = []
    if s.objectives or s.epoch:
        train = EpisodeDataset(s.train_data, load=s.load)
        t0 = time.perf_counter()
        floats = FloatTransitions(s.train_data)
        print(f"  {Path(s.train_data).name}: {train.num_transitions:,} transitions; straightforward float32 frames "
              f"{floats.nbytes() / 2**20:,.0f} MiB (converted in {time.perf_counter() - t0:.1f} s)", flush=True)
        with tempfile.TemporaryDirectory() as run_dir:
            for name in s.objectives:
                rows.append(throughput_row(name, s, train, floats, device, run_dir))
            if s.epoch:
                rows.append(epoch_row(s, train, floats, device, run_dir))
    return rows + memory


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "child":
        raise SystemExit("usage: python -m worldssl.bench.worldmodel child '<json args>' (run by `worldssl bench "
                         "worldmodel`)")
    print("RESULT " + json.dumps(child(json.loads(argv[1]))), flush=True)


if __name__ == "__main__":
    main()
