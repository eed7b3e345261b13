"""The online replay buffer against a naive reference: stacks, n-step targets, episode ends, wrap-around,
features, bulk loading, save / restore, errors and memory."""

from __future__ import annotations

import io

import numpy as np
import pytest

from worldssl.data import ReplayBatch, ReplayBuffer

FRAME = (2, 3, 3)
DIM = 4


class Reference:
    """Every episode kept whole in Python lists; targets computed with explicit loops."""

    def __init__(self, capacity, k, n, g):
        self.capacity, self.k, self.n, self.g = capacity, k, n, g
        self.eps, self.total = [], 0

    def start(self, frame, feat):
        if self.eps and self.eps[-1]["open"] and self.eps[-1]["a"]:
            self.eps[-1]["trunc"][-1] = True  # an abandoned episode counts as truncated
        self.eps.append({"g0": self.total, "frames": [frame], "feats": [feat], "a": [], "r": [], "term": [],
                         "trunc": [], "open": True})
        self.total += 1

    def add(self, a, r, frame, term, trunc, feat):
        ep = self.eps[-1]
        for key, v in (("a", a), ("r", r), ("term", term), ("trunc", trunc), ("frames", frame), ("feats", feat)):
            ep[key].append(v)
        ep["open"] = not (term or trunc)
        self.total += 1

    def stack(self, ep, t):
        return np.concatenate([ep["frames"][max(t - i, 0)] for i in range(self.k - 1, -1, -1)], axis=0)

    def expected(self, feats):
        """id (global frame index of o_t) -> (obs, action, reward, discount, next_obs) of every sampleable one."""
        oldest = self.total - self.capacity
        out = {}
        for ep in self.eps:
            steps = len(ep["a"])
            for t in range(steps):
                if ep["g0"] + t < oldest:
                    continue
                ret, m, term, ready = 0.0, 0, False, False
                for j in range(self.n):
                    if t + j >= steps:
                        break  # lookahead not written yet
                    ret += self.g ** j * float(ep["r"][t + j])
                    m += 1
                    if ep["term"][t + j] or ep["trunc"][t + j]:
                        term, ready = bool(ep["term"][t + j]), True
                        break
                else:
                    ready = True
                if not ready:
                    continue
                if not feats and ep["g0"] + max(t - self.k + 1, 0) < oldest:
                    continue  # a frame of the stack was overwritten
                obs, nxt = ((ep["feats"][t], ep["feats"][t + m]) if feats else (self.stack(ep, t), self.stack(ep, t + m)))
                out[ep["g0"] + t] = (obs, ep["a"][t], np.float32(ret), np.float32(0.0 if term else self.g ** m), nxt)
        return out


def _drive(buf, ref, plan, rng, with_feats=False):
    """Play ``plan``: a list of (steps, end) with end in term / trunc / open (left in progress or abandoned)."""
    for steps, end in plan:
        frame = rng.integers(0, 256, FRAME, dtype=np.uint8)
        feat = rng.normal(size=DIM).astype(np.float32) if with_feats else None
        buf.start_episode(frame, feat)
        ref.start(frame, feat)
        for i in range(steps):
            gid = ref.total - 1  # global index of the frame the action is taken from
            a = np.array([gid, rng.normal()], np.float32)
            r = float(np.float32(rng.normal()))
            nf = rng.integers(0, 256, FRAME, dtype=np.uint8)
            nfeat = rng.normal(size=DIM).astype(np.float32) if with_feats else None
            last = i == steps - 1
            term, trunc = last and end == "term", last and end == "trunc"
            buf.add(a, r, nf, term, trunc, nfeat)
            ref.add(a, r, nf, term, trunc, nfeat)


PLAN = [(6, "trunc"), (2, "term"), (1, "trunc"), (4, "open"), (5, "term"), (3, "trunc"), (1, "term"),
        (7, "trunc"), (5, "open")]


def _check_against(buf, ref, feats):
    expected = ref.expected(feats)
    slots = buf.indices(feats)
    batch = buf.gather(slots, feats)
    ids = batch.action[:, 0].astype(np.int64).tolist()
    assert sorted(ids) == sorted(expected), "sampleable transitions differ from the reference"
    assert len(buf) == len(buf.indices())
    for row, gid in enumerate(ids):
        obs, a, r, d, nxt = expected[gid]
        np.testing.assert_array_equal(batch.obs[row], obs)
        np.testing.assert_array_equal(batch.action[row], a)
        assert batch.reward[row] == r
        assert batch.discount[row] == d
        np.testing.assert_array_equal(batch.next_obs[row], nxt)
    return expected


@pytest.mark.parametrize("capacity", [1000, 13, 7])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("n", [1, 3])
def test_matches_reference(capacity, k, n):
    rng = np.random.default_rng(capacity * 10 + k * 3 + n)
    buf = ReplayBuffer(capacity, FRAME, k, (2,), discount=0.9, nstep=n)
    ref = Reference(capacity, k, n, 0.9)
    checked = 0
    for i, step in enumerate(PLAN):  # check after every episode, so the in-progress and wrapped states are seen
        _drive(buf, ref, [step], rng)
        expected = _check_against(buf, ref, feats=False)
        checked += len(expected)
        # sampled batches hold only valid transitions and equal the reference rows
        if expected:
            batch = buf.sample(64, np.random.default_rng(i))
            assert batch.obs.shape == (64, k * FRAME[0], *FRAME[1:]) and batch.obs.dtype == np.uint8
            assert batch.reward.dtype == np.float32 and batch.discount.dtype == np.float32
            for row, gid in enumerate(batch.action[:, 0].astype(np.int64)):
                obs, _, r, d, nxt = expected[int(gid)]
                np.testing.assert_array_equal(batch.obs[row], obs)
                np.testing.assert_array_equal(batch.next_obs[row], nxt)
                assert (batch.reward[row], batch.discount[row]) == (r, d)
    assert checked > 0
    assert buf.num_frames == min(capacity, ref.total)
    assert buf.num_transitions_added == sum(len(ep["a"]) for ep in ref.eps)


def test_truncated_bootstraps_terminated_does_not():
    for end, disc in (("trunc", 0.25), ("term", 0.0)):
        buf = ReplayBuffer(100, (1, 1, 1), 1, (), action_dtype=np.int64, discount=0.5, nstep=3)
        frames = [np.full((1, 1, 1), v, np.uint8) for v in (10, 11, 12)]
        buf.start_episode(frames[0])
        buf.add(0, 1.0, frames[1], False, False)
        buf.add(1, 2.0, frames[2], end == "term", end == "trunc")
        batch = buf.gather(buf.indices())
        assert batch.action.tolist() == [0, 1]
        assert batch.reward.tolist() == [1.0 + 0.5 * 2.0, 2.0]  # episode shorter than n: m = 2, then 1
        assert batch.discount.tolist() == [disc, disc * 2 if end == "trunc" else 0.0]
        assert batch.next_obs[:, 0, 0, 0].tolist() == [12, 12]  # the last observation of the episode


def test_pending_lookahead_becomes_sampleable():
    buf = ReplayBuffer(100, FRAME, 2, (2,), nstep=3)
    frame = np.zeros(FRAME, np.uint8)
    buf.start_episode(frame)
    with pytest.raises(ValueError, match="no sampleable transition"):
        buf.sample(4, np.random.default_rng(0))
    lens = []
    for i in range(5):
        buf.add(np.zeros(2), 1.0, frame, False, i == 4)
        lens.append(len(buf))
    assert lens == [0, 0, 1, 2, 5]  # t is sampleable once a_{t+2} is written, all of them once it ends


def test_wrap_drops_transitions_whose_stack_was_overwritten():
    buf = ReplayBuffer(5, (1, 1, 1), 3, (), action_dtype=np.int64, nstep=1, feature_dim=1)
    buf.start_episode(np.full((1, 1, 1), 0, np.uint8), np.zeros(1))
    for t in range(10):
        buf.add(t, 0.0, np.full((1, 1, 1), t + 1, np.uint8), False, t == 9, np.full(1, t + 1.0))
    # frames 6..10 survive; the stacks of t=6 (frames 4, 5, 6) and t=7 (5, 6, 7) lost frames
    assert sorted(buf.gather(buf.indices(False), False).action.tolist()) == [8, 9]
    batch = buf.gather(buf.indices(False), False)
    order = np.argsort(batch.action)
    assert batch.obs[order, :, 0, 0].tolist() == [[6, 7, 8], [7, 8, 9]]
    assert batch.next_obs[order, :, 0, 0].tolist() == [[7, 8, 9], [8, 9, 10]]
    # features need no stack: every surviving transition
    assert sorted(buf.gather(buf.indices(True), True).action.tolist()) == [6, 7, 8, 9]
    assert len(buf) == 4
    drawn = buf.sample(500, np.random.default_rng(0), features=False).action
    assert set(drawn.tolist()) == {8, 9}


@pytest.mark.parametrize("store_frames", [True, False])
@pytest.mark.parametrize("n", [1, 3])
def test_feature_mode(store_frames, n):
    rng = np.random.default_rng(n)
    buf = ReplayBuffer(11, FRAME, 3, (2,), discount=0.8, nstep=n, feature_dim=DIM, store_frames=store_frames)
    ref = Reference(11, 3, n, 0.8)
    for step in PLAN:
        _drive(buf, ref, [step], rng, with_feats=True)
        expected = _check_against(buf, ref, feats=True)
        if store_frames:
            _check_against(buf, ref, feats=False)
    batch = buf.sample(32, rng)
    assert batch.obs.shape == (32, DIM) and batch.obs.dtype == np.float32 and batch.next_obs.shape == (32, DIM)
    for row, gid in enumerate(batch.action[:, 0].astype(np.int64)):
        np.testing.assert_array_equal(batch.obs[row], expected[int(gid)][0])
    if store_frames:
        assert buf.sample(8, rng, features=False).obs.shape == (8, 3 * FRAME[0], *FRAME[1:])
    else:
        assert buf.nbytes() < ReplayBuffer(11, FRAME, 3, (2,), feature_dim=DIM).nbytes()
        with pytest.raises(ValueError, match="store_frames=False"):
            buf.sample(8, rng, features=False)


def _episode(rng, steps, end, with_feats=False):
    term = np.zeros(steps, bool)
    trunc = np.zeros(steps, bool)
    if end == "term":
        term[-1] = True
    elif end == "trunc":
        trunc[-1] = True
    return {"obs": rng.integers(0, 256, (steps + 1, *FRAME), dtype=np.uint8),
            "action": rng.normal(size=(steps, 2)).astype(np.float32),
            "reward": rng.normal(size=steps).astype(np.float32), "terminated": term, "truncated": trunc,
            "features": rng.normal(size=(steps + 1, DIM)).astype(np.float32) if with_feats else None}


@pytest.mark.parametrize("with_feats", [False, True])
def test_add_episode_equals_step_by_step(with_feats):
    rng = np.random.default_rng(3)
    plan = [(5, "trunc"), (2, "term"), (0, "open"), (3, "open"), (23, "trunc"), (1, "term"), (4, "open")]
    episodes = [_episode(rng, s, e, with_feats) for s, e in plan]
    kw = {"feature_dim": DIM} if with_feats else {}
    bulk, steps = (ReplayBuffer(17, FRAME, 3, (2,), nstep=3, **kw) for _ in range(2))
    for ep in episodes:
        bulk.add_episode(ep["obs"], ep["action"], ep["reward"], ep["terminated"], ep["truncated"], ep["features"])
        feats = ep["features"] if with_feats else [None] * len(ep["obs"])
        steps.start_episode(ep["obs"][0], feats[0])
        for t in range(len(ep["action"])):
            steps.add(ep["action"][t], ep["reward"][t], ep["obs"][t + 1], ep["terminated"][t], ep["truncated"][t],
                      feats[t + 1])
    a, b = bulk.state_dict(), steps.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # the last episode was left open: both continue it the same way
    for buf in (bulk, steps):
        buf.add(np.ones(2), 1.0, episodes[0]["obs"][0], True, False, np.ones(DIM) if with_feats else None)
    np.testing.assert_array_equal(bulk.sample(16, np.random.default_rng(1)).obs,
                                  steps.sample(16, np.random.default_rng(1)).obs)


def test_add_episode_rejects_bad_input():
    buf = ReplayBuffer(50, FRAME, 1, (2,))
    ep = _episode(np.random.default_rng(0), 4, "trunc")
    with pytest.raises(ValueError, match="only its last step"):
        buf.add_episode(ep["obs"], ep["action"], ep["reward"], np.array([1, 0, 0, 0], bool), ep["truncated"])
    with pytest.raises(ValueError, match="single frames"):
        buf.add_episode(ep["obs"][:-1], ep["action"], ep["reward"], ep["terminated"], ep["truncated"])
    with pytest.raises(ValueError, match="reward has length"):
        buf.add_episode(ep["obs"], ep["action"], ep["reward"][:2], ep["terminated"], ep["truncated"])


def test_state_dict_round_trip():
    rng = np.random.default_rng(5)
    buf = ReplayBuffer(19, FRAME, 3, (2,), nstep=3, feature_dim=DIM)
    _drive(buf, Reference(19, 3, 3, 0.99), PLAN, rng, with_feats=True)
    f = io.BytesIO()
    np.savez(f, **buf.state_dict())
    f.seek(0)
    with np.load(f, allow_pickle=False) as z:
        state = {k: z[k] for k in z.files}
    other = ReplayBuffer(19, FRAME, 3, (2,), nstep=3, feature_dim=DIM)
    other.load_state_dict(state)
    assert (len(other), other.num_frames, other.num_transitions_added) == (len(buf), buf.num_frames,
                                                                             buf.num_transitions_added)
    for features in (True, False):
        x, y = (b.sample(32, np.random.default_rng(9), features) for b in (buf, other))
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    # the open episode continues identically after the restore
    for b in (buf, other):
        b.add(np.zeros(2), 2.0, np.zeros(FRAME, np.uint8), False, True, np.zeros(DIM))
    for u, v in zip(buf.sample(32, np.random.default_rng(2)), other.sample(32, np.random.default_rng(2))):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(ValueError, match="build the buffer with the settings"):
        ReplayBuffer(20, FRAME, 3, (2,), feature_dim=DIM).load_state_dict(state)


def test_sampling_is_uniform_over_valid_transitions():
    buf = ReplayBuffer(40, (1, 1, 1), 2, (), action_dtype=np.int64, nstep=2)
    gid = 0
    for steps, end in ((7, "term"), (9, "trunc"), (30, "trunc"), (5, "open")):
        buf.start_episode(np.zeros((1, 1, 1), np.uint8))
        for i in range(steps):
            gid += 1
            buf.add(gid, 0.0, np.zeros((1, 1, 1), np.uint8), end == "term" and i == steps - 1,
                    end == "trunc" and i == steps - 1)
    valid = sorted(buf.gather(buf.indices()).action.tolist())
    drawn = buf.sample(60_000, np.random.default_rng(0)).action
    ids, counts = np.unique(drawn, return_counts=True)
    assert ids.tolist() == valid
    mean = len(drawn) / len(valid)
    assert np.all(np.abs(counts - mean) < 5 * np.sqrt(mean))


def test_abandoned_episode_counts_as_truncated():
    buf = ReplayBuffer(20, (1, 1, 1), 1, (), action_dtype=np.int64, discount=0.5, nstep=2)
    buf.start_episode(np.full((1, 1, 1), 1, np.uint8))
    buf.add(0, 1.0, np.full((1, 1, 1), 2, np.uint8), False, False)
    buf.start_episode(np.full((1, 1, 1), 3, np.uint8))  # reset without an end flag
    batch = buf.gather(buf.indices())
    assert (batch.action.tolist(), batch.discount.tolist(), batch.next_obs.ravel().tolist()) == ([0], [0.5], [2])


def test_errors_are_one_line_value_errors():
    buf = ReplayBuffer(10, FRAME, 3, (2,))
    frame = np.zeros(FRAME, np.uint8)
    with pytest.raises(ValueError, match="before start_episode") as e:
        buf.add(np.zeros(2), 0.0, frame, False, False)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="no sampleable transition"):
        buf.sample(4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        buf.start_episode(frame.astype(np.float32))
    with pytest.raises(ValueError, match="stacked observation"):
        buf.start_episode(np.zeros((6, 3, 3), np.uint8))
    buf.start_episode(frame)
    with pytest.raises(ValueError, match="action must have shape"):
        buf.add(np.zeros(3), 0.0, frame, False, False)
    buf.add(np.zeros(2), 0.0, frame, True, False)
    with pytest.raises(ValueError, match="after the episode ended"):
        buf.add(np.zeros(2), 0.0, frame, False, False)
    with pytest.raises(ValueError, match="feature_dim"):
        buf.sample(4, np.random.default_rng(0), features=True)
    fbuf = ReplayBuffer(10, FRAME, 1, (2,), feature_dim=DIM)
    with pytest.raises(ValueError, match="pass start_episode"):
        fbuf.start_episode(frame)
    with pytest.raises(ValueError, match="pass feature_dim"):
        ReplayBuffer(10, FRAME, 1, (2,), store_frames=False)


def test_memory_per_transition():
    buf = ReplayBuffer(1000, (3, 84, 84), 3, (6,))
    frame_bytes = 3 * 84 * 84  # 21,168: each frame once, uint8
    per = buf.bytes_per_transition()
    assert frame_bytes <= per <= frame_bytes + 64  # action, reward, flags, step index
    sb3 = 2 * 9 * 84 * 84  # stacked obs and next_obs, as SB3's default ReplayBuffer stores them
    assert per <= sb3 / 4
    assert ReplayBatch._fields == ("obs", "action", "reward", "discount", "next_obs")
