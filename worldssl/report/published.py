"""Published numbers for the tasks and budgets this suite can run, shown beside a report's own results in a
column labelled "published (not rerun)": taken from the papers, not reproduced here.

Each entry is ``(method, task, metric, budget, mean, spread, source)``:

- DMC (``metric="return"``): episode return (max 1000) at ``budget`` environment frames, action repeat
  included, ``mean ± spread`` with ``spread`` the standard deviation over the paper's seeds (not a 95%
  interval). CURL, DrQ and the pixel / state SAC rows are the CURL and DrQ papers' tables (84 px, action repeat
  8 for cartpole, 2 for finger and walker, 4 for the rest). The DrQ-v2 and DreamerV3 rows are read from the
  curves their authors released (action repeat 2 for every task, 10 seeds each).
- C-SWM's 2D Shapes / 3D Cubes (``metric="hits@1/<k>"`` or ``"mrr/<k>"``, in %): Table 1 of the C-SWM paper,
  after 100 epochs over 1,000 random episodes of 100 steps, ranked against a pool of 10,000 eval episodes;
  ``budget`` is the epoch count and ``method`` the transition objective it corresponds to.
"""

from __future__ import annotations

import dataclasses

CURL = "Laskin, Srinivas and Abbeel, CURL: Contrastive Unsupervised Representations for Reinforcement Learning (ICML 2020)"
DRQ = "Kostrikov, Yarats and Fergus, Image Augmentation Is All You Need: Regularizing Deep RL from Pixels (ICLR 2021)"
DRQV2 = ("Yarats, Fergus, Lazaric and Pinto, Mastering Visual Continuous Control: Improved Data-Augmented RL "
         "(ICLR 2022), released curves")
DREAMERV3 = "Hafner, Pasukonis, Ba and Lillicrap, Mastering Diverse Domains through World Models (2023), released curves"
CSWM = "Kipf, van der Pol and Welling, Contrastive Learning of Structured World Models (ICLR 2020), Table 1"


@dataclasses.dataclass(frozen=True)
class Published:
    method: str
    task: str
    metric: str
    budget: int
    mean: float
    spread: float | None
    source: str

    def text(self) -> str:
        spread = f" ± {self.spread:g}" if self.spread is not None else ""
        return f"{self.method} {self.mean:g}{spread}"


def _dmc() -> list[Published]:
    #        task                CURL 100k  CURL 500k  DrQ 100k  DrQ 500k  SAC px 100k  SAC state 100k
    table = {"cartpole-swingup": ((582, 146), (841, 45), (759, 92), (868, 10), (419, 40), (835, 22)),
             "reacher-easy": ((538, 233), (929, 44), (601, 213), (942, 71), (145, 30), (746, 25)),
             "cheetah-run": ((299, 48), (518, 28), (344, 67), (660, 96), (197, 15), (616, 18)),
             "walker-walk": ((403, 24), (902, 43), (612, 164), (921, 45), (42, 12), (891, 82)),
             "finger-spin": ((767, 56), (926, 45), (901, 104), (938, 103), (179, 66), (811, 46)),
             "ball_in_cup-catch": ((769, 43), (959, 27), (913, 53), (963, 9), (312, 63), (746, 91))}
    #        task                DrQ-v2 100k / 500k        DreamerV3 100k / 500k
    curves = {"cartpole-swingup": ((626, 254), (846, 17), (615, 145), (845, 40)),
              "reacher-easy": ((250, 139), (751, 218), (409, 87), (863, 30)),
              "cheetah-run": ((273, 123), (603, 33), (337, 51), (667, 60)),
              "walker-walk": ((170, 152), (722, 359), (639, 111), (944, 8)),
              "finger-spin": ((325, 292), (789, 124), (505, 93), (575, 126)),
              "ball_in_cup-catch": ((359, 228), (844, 174), (877, 113), (969, 3))}
    out = []
    for task, (c1, c5, d1, d5, px, st) in table.items():
        for method, budget, (m, s), src in (("CURL", 100_000, c1, CURL), ("CURL", 500_000, c5, CURL),
                                            ("DrQ", 100_000, d1, DRQ), ("DrQ", 500_000, d5, DRQ),
                                            ("pixel SAC", 100_000, px, CURL), ("state SAC", 100_000, st, CURL)):
            out.append(Published(method, task, "return", budget, m, s, src))
    for task, (v1, v5, r1, r5) in curves.items():
        for method, budget, (m, s), src in (("DrQ-v2", 100_000, v1, DRQV2), ("DrQ-v2", 500_000, v5, DRQV2),
                                            ("DreamerV3", 100_000, r1, DREAMERV3),
                                            ("DreamerV3", 500_000, r5, DREAMERV3)):
            out.append(Published(method, task, "return", budget, m, s, src))
    return out


def _cswm() -> list[Published]:
    # (Hits@1, MRR) at 1 | 5 | 10 steps, in %
    table = {("contrastive", "shapes"): ((100, 100), (100, 100), (99.9, 100)),
             ("contrastive", "cubes"): ((99.9, 100), (99.9, 100), (99.9, 99.9)),
             ("generative_ae", "shapes"): ((98.7, 99.2), (36.1, 44.1), (6.5, 10.5)),
             ("generative_ae", "cubes"): ((93.5, 95.6), (26.7, 35.6), (4.0, 7.6)),
             ("generative_vae", "shapes"): ((94.2, 96.4), (14.1, 21.4), (1.4, 3.5)),
             ("generative_vae", "cubes"): ((90.9, 94.2), (31.3, 41.8), (7.2, 12.9))}
    names = {"contrastive": "C-SWM", "generative_ae": "World Model (AE)", "generative_vae": "World Model (VAE)"}
    out = []
    for (objective, task), cells in table.items():
        for k, (hits, mrr) in zip((1, 5, 10), cells):
            out.append(Published(names[objective], f"{task}/{objective}", f"hits@1/{k}", 100, hits, None, CSWM))
            out.append(Published(names[objective], f"{task}/{objective}", f"mrr/{k}", 100, mrr, None, CSWM))
    return out


PUBLISHED: tuple[Published, ...] = tuple(_dmc() + _cswm())
#: the C-SWM entries' env ids: the suite's Shapes and the first Cubes look are the paper's environments
CSWM_ENVS = {"worldssl/Shapes-v0": "shapes", "worldssl/Cubes-v0": "cubes"}


def lookup(task: str, metric: str, budget: int | None) -> list[Published]:
    """The published entries for ``task`` and ``metric`` at exactly this ``budget``."""
    if budget is None:
        return []
    return [p for p in PUBLISHED if p.task == task and p.metric == metric and p.budget == int(budget)]
