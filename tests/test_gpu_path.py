"""The GPU path's switches in their CPU form: device=auto, bf16 autocast and torch.compile decide by the device, and
compiling keeps a module's state_dict (checkpoints) and copies as they were."""

from __future__ import annotations

import copy

import pytest
import torch

from worldssl.runtime.device import autocast, compile_enabled, compile_modules, resolve_device
from worldssl.runtime.errors import ConfigError


def test_auto_picks_cuda_when_present_and_the_cpu_otherwise():
    device = resolve_device("auto")
    assert device.type == ("cuda" if torch.cuda.is_available() else device.type)
    if not torch.cuda.is_available():
        assert device.type in ("cpu", "mps")
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_compile_and_bf16_are_on_by_default_on_cuda_only():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert compile_enabled("auto", cuda) and not compile_enabled("auto", cpu)
    assert compile_enabled(True, cpu) and not compile_enabled(False, cuda)
    with pytest.raises(ConfigError):
        compile_enabled("sometimes", cpu)
    on_cpu = autocast(cpu, "auto", cpu_auto=False)
    assert not isinstance(on_cpu, torch.autocast)  # the CPU form: float32
    assert isinstance(autocast(cpu, True), torch.autocast)  # forced: bf16 on the CPU too


def test_compiled_modules_keep_their_state_dict_and_copy():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    keys = list(net.state_dict())
    assert not compile_modules([net], "auto", torch.device("cpu"))  # auto on a CPU: left alone
    assert net._compiled_call_impl is None
    assert compile_modules([net], True, torch.device("cpu"))
    assert net._compiled_call_impl is not None
    assert list(net.state_dict()) == keys  # checkpoints written and read as before
    twin = copy.deepcopy(net)
    assert list(twin.state_dict()) == keys


def test_world_model_trainer_compiles_by_its_setting(shapes_dataset, tmp_path):
    from worldssl.data import EpisodeDataset
    from worldssl.worldmodels.train import WorldModelSettings, WorldModelTrainer, build_from_spec

    ds = EpisodeDataset(shapes_dataset)
    spec = {"obs_shape": list(ds.obs_shape), "action_space": ds.manifest["action_space"],
            "encoder": {"kind": "slots", "size": "small", "num_slots": 2, "embedding_dim": 2, "hidden_dim": 8},
            "transition": "gnn", "latent": {"hidden_dim": 8}, "objective": "contrastive", "objective_kwargs": {},
            "reward": False}
    for setting, compiled in (("auto", False), (True, True)):
        model, objective = build_from_spec(spec)
        trainer = WorldModelTrainer(model, objective, ds, WorldModelSettings(compile=setting, progress=False),
                                    tmp_path / str(setting), torch.device("cpu"))
        assert trainer.compiled is compiled
        assert (model.encoder._compiled_call_impl is not None) is compiled
