"""Episode datasets: files on disk, the reader, and collection from envs."""

from worldssl.data.collect import CollectResult, CollectSpec, collect, episode_seed, run_episode
from worldssl.data.episodes import (
    Episode,
    EpisodeDataset,
    Sequences,
    Transitions,
    list_episode_files,
    read_manifest,
    write_episode,
    write_manifest,
)
from worldssl.data.replay import ReplayBatch, ReplayBuffer

__all__ = [
    "CollectResult", "CollectSpec", "Episode", "EpisodeDataset", "ReplayBatch", "ReplayBuffer", "Sequences",
    "Transitions", "collect", "episode_seed", "list_episode_files", "read_manifest", "run_episode",
    "write_episode", "write_manifest",
]
