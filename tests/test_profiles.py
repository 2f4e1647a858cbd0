"""Profiles: every shipped one loads; overrides apply; mistakes say what is valid."""

from __future__ import annotations

import pytest

from bench.profiles import ProfileError, available_profiles, load_profile, parse_override


def test_shipped_profiles_load() -> None:
    assert {"smoke", "quick", "tutorial"} <= set(available_profiles())
    for name in available_profiles():
        profile = load_profile(name, data_dir="/data/mnist")
        assert profile.configs and profile.rounds >= 1
        assert set(profile.executors) <= {"local", "dask"}


def test_tutorial_profile_is_the_tutorials_workload() -> None:
    (config,) = load_profile("tutorial").configs
    assert (config.epochs, config.batch_size_train, config.batch_size_test) == (2, 64, 1000)
    assert (config.learning_rate, config.momentum, config.log_interval) == (0.01, 0.5, 200)
    assert config.train_subset is None and config.test_subset is None


def test_overrides() -> None:
    profile = load_profile("smoke", ["epochs=3", "rounds=5", "executors=['dask']"])
    assert profile.configs[0].epochs == 3 and profile.rounds == 5
    assert profile.executors == ("dask",)
    assert parse_override("device=cuda") == ("device", "cuda")
    assert parse_override("learning_rate=0.1") == ("learning_rate", 0.1)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("nope", [], "unknown profile 'nope'; available: .*smoke"),
        ("smoke", ["epoch=1"], "unknown key 'epoch'.*valid keys: .*epochs"),
        ("smoke", ["epochs=0"], "epochs must be a positive integer"),
        ("smoke", ["executors=['ray']"], "invalid executors.*valid: local, dask"),
        ("smoke", ["rounds=0"], "rounds must be an integer >= 1"),
        ("smoke", ["novalue"], "expects key=value"),
    ],
)
def test_mistakes_are_explained(name: str, overrides: list[str], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        load_profile(name, overrides)
