"""Profiles: every shipped one loads; overrides apply; mistakes say what is valid."""

from __future__ import annotations

import pytest

from bench.config.profiles import (
    ProfileError,
    available_profiles,
    load_profile,
    parse_override,
    profile_from_doc,
)
from mnist_core.config import SHAPES, WorkflowConfig


def test_shipped_profiles_load() -> None:
    assert {"smoke", "quick", "tutorial", "full"} <= set(available_profiles())
    for name in available_profiles():
        profile = load_profile(name, data_dir="/data/mnist")
        assert profile.scenarios
        for s in profile.scenarios:
            assert s.rounds >= 1 and set(s.executors) <= {"local", "dask", "external"}
        ids = [s.id for s in profile.scenarios]
        assert len(ids) == len(set(ids)), "every scenario has its own id"


def test_full_profile_covers_the_matrix() -> None:
    scenarios = load_profile("full", data_dir="/data/mnist").scenarios
    configs = [WorkflowConfig(**s.params) for s in scenarios]
    assert {c.shape for c in configs} == set(SHAPES)
    assert {c.data_path for c in configs} == {"tutorial", "preloaded"}
    assert {c.models for c in configs} == {1, 2, 4, 8}
    assert {s.concurrency for s in scenarios} == {1, 2, 4, 8}
    tutorial_sizes = {c.train_subset for c in configs if c.shape == "tutorial"}
    assert len(tutorial_sizes) >= 3, "a line needs several workload sizes"
    assert {"local", "dask"} <= {e for s in scenarios for e in s.executors}


def test_matrix_parts_are_a_union_with_their_own_settings() -> None:
    doc = {
        "rounds": 3,
        "params": {"epochs": 1, "train_subset": 1000},
        "matrix": [
            {"name": "sizes", "shape": ["tutorial", "lean"], "train_subset": [1000, 2000]},
            {"name": "sweep", "models": [2, 4], "rounds": 1, "executors": ["dask"]},
            {"name": "burst", "concurrency": [1, 4]},
        ],
    }
    profile = profile_from_doc("t", doc, data_dir="/d")
    by_part: dict[str, list] = {}
    for s in profile.scenarios:
        by_part.setdefault(s.part, []).append(s)
    assert len(by_part["sizes"]) == 4  # 2 x 2, not crossed with the other parts
    assert [s.params["models"] for s in by_part["sweep"]] == [2, 4]
    assert all(s.rounds == 1 and s.executors == ("dask",) for s in by_part["sweep"])
    assert all(s.rounds == 3 and s.executors == ("local", "dask") for s in by_part["sizes"])
    # burst's concurrency=1 twin is sizes' (tutorial, 1000): the same scenario runs once.
    assert [s.concurrency for s in by_part["burst"]] == [4]
    (burst,) = by_part["burst"]
    assert burst.id == WorkflowConfig(**burst.params).id + "-n4"
    # An override replaces a swept value in every part.
    overridden = profile_from_doc("t", doc, ["train_subset=500", "rounds=2"], data_dir="/d")
    assert {s.params["train_subset"] for s in overridden.scenarios} == {500}
    assert {s.rounds for s in overridden.scenarios} == {2}


def test_a_profile_file_by_path(tmp_path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('rounds = 1\n[params]\nepochs = 1\n[[matrix]]\nbatch_size_train = [32, 64]\n')
    profile = load_profile(str(path), data_dir="/d")
    assert profile.name == "mine"
    assert [s.params["batch_size_train"] for s in profile.scenarios] == [32, 64]


def test_tutorial_profile_is_the_tutorials_workload() -> None:
    (scenario,) = load_profile("tutorial").scenarios
    config = WorkflowConfig(**scenario.params)
    assert (config.epochs, config.batch_size_train, config.batch_size_test) == (2, 64, 1000)
    assert (config.learning_rate, config.momentum, config.log_interval) == (0.01, 0.5, 200)
    assert config.train_subset is None and config.test_subset is None


def test_overrides() -> None:
    profile = load_profile("smoke", ["epochs=3", "rounds=5", "executors=['dask']"])
    (scenario,) = profile.scenarios
    assert scenario.params["epochs"] == 3 and scenario.rounds == 5
    assert scenario.executors == ("dask",)
    assert parse_override("device=cuda") == ("device", "cuda")
    assert parse_override("learning_rate=0.1") == ("learning_rate", 0.1)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("nope", [], "unknown profile 'nope'; available: .*smoke"),
        ("smoke", ["epoch=1"], "unknown key 'epoch'.*parameters of workload 'mnist': .*epochs"),
        ("smoke", ["epochs=0"], "epochs must be a positive integer"),
        ("smoke", ["executors=['ray']"], "invalid executors.*valid: local, dask, external"),
        ("smoke", ["shape=wide"], "shape must be one of tutorial, lean, per-epoch, monolithic"),
        ("smoke", ["data_path=mmap"], "data_path must be one of tutorial, preloaded"),
        ("smoke", ["concurrency=0"], "concurrency must be an integer >= 1"),
        ("smoke", ["models=0"], "models must be a positive integer"),
        ("smoke", ["rounds=0"], "rounds must be an integer >= 1"),
        ("smoke", ["novalue"], "expects KEY=VALUE"),
        ("smoke", ["timeout_s=0"], "timeout_s must be a finite number of seconds > 0"),
    ],
)
def test_mistakes_are_explained(name: str, overrides: list[str], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        load_profile(name, overrides)


def test_unknown_key_in_a_matrix_part_is_named() -> None:
    doc = {"matrix": [{"name": "x", "shapes": ["lean"]}]}
    with pytest.raises(ProfileError, match="unknown key.*shapes.*parameters of .*shape"):
        profile_from_doc("t", doc)


def test_profile_tables_must_be_tables() -> None:
    with pytest.raises(ProfileError, match=r"\[params\] must be a table"):
        profile_from_doc("t", {"params": 3})
    with pytest.raises(ProfileError, match=r"\[\[matrix\]\] entries must be tables"):
        profile_from_doc("t", {"matrix": [1, 2]})


def test_pertask_profile_sweeps_chains_and_fanouts() -> None:
    scenarios = load_profile("pertask").scenarios
    assert {s.workload.name for s in scenarios} == {"chain", "fanout"}
    assert {s.params["n"] for s in scenarios} == {1, 10, 50}
    assert {s.params["sleep_s"] for s in scenarios} == {0.0, 0.1}


def test_bench_arg_list_expands_and_lattice_profile_applies() -> None:
    profile = load_profile(None, ["rounds=2"], ["n=[1, 4]", "sleep_s=0.5"], workload="fanout")
    assert profile.name == "lattice"
    assert [(s.params["n"], s.params["sleep_s"], s.rounds) for s in profile.scenarios] == [
        (1, 0.5, 2), (4, 0.5, 2)]
    assert [s.id for s in profile.scenarios] == ["fanout-n=1-sleep_s=0.5",
                                                "fanout-n=4-sleep_s=0.5"]
    with pytest.raises(ProfileError, match="unknown key 'm'.*parameters of workload 'fanout'"):
        load_profile(None, [], ["m=1"], workload="fanout")


def test_environments_from_the_command_line_take_variables() -> None:
    profile = load_profile(
        "smoke", environments=["now=covalent==0.240.0", "old-dask=covalent==0.240.0"],
        env_vars=["old-dask:COVALENT_USE_OLD_DASK=1", "old-dask:DASK_CONFIG=/x=y.yaml"],
    )
    envs = {e.name: e for e in profile.scenarios[0].environments}
    assert list(envs) == ["now", "old-dask"]
    assert envs["now"].env == {}
    assert envs["old-dask"].env == {"COVALENT_USE_OLD_DASK": "1", "DASK_CONFIG": "/x=y.yaml"}
    releases = load_profile("releases", env_vars=["0.238.0:X=1"])  # the profile's own list
    assert {e.name: e.env for e in releases.scenarios[0].environments}["0.238.0"] == {"X": "1"}


@pytest.mark.parametrize("text, message", [
    ("old-dask=1", "expects NAME:VARIABLE=VALUE"),
    ("nope:X=1", "no environment named 'nope'; environments: now"),
])
def test_a_bad_environment_variable_is_explained(text: str, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        load_profile("smoke", environments=["now=covalent==0.240.0"], env_vars=[text])
