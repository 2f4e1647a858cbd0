"""Profile values and options accepted but meaningless (issue 22, faults second sweep): a nan
timeout, millions of rounds, a malformed list taken as a string, nan or zero on the command
line. Each is refused with what was wrong and what is valid."""

from __future__ import annotations

import argparse

import pytest

from bench.config import options
from bench.config.profiles import (
    MAX_CASES,
    MAX_ROUNDS,
    ProfileError,
    load_profile,
    parse_override,
    planned_cases,
    profile_from_doc,
)

CHAIN = {"workload": "chain", "executors": ["local"], "warmup_rounds": 0}


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_timeout_that_is_not_a_finite_number_is_refused(value: str) -> None:
    with pytest.raises(ProfileError, match=r"timeout_s must be a finite number of seconds > "
                                           r"0, got -?(nan|inf)"):
        load_profile("smoke", [f"timeout_s={value}"])


def test_a_timeout_in_a_profile_file_is_checked_too() -> None:
    with pytest.raises(ProfileError, match="timeout_s must be a finite number"):
        profile_from_doc("t", {**CHAIN, "timeout_s": float("nan")})
    assert profile_from_doc("t", {**CHAIN, "timeout_s": 5}).scenarios[0].timeout_s == 5.0


def test_rounds_have_an_upper_bound() -> None:
    with pytest.raises(ProfileError) as raised:
        load_profile("smoke", ["rounds=2000000"])
    assert str(raised.value).endswith(f"rounds must be at most {MAX_ROUNDS}, got 2000000; for "
                                      f"a precise median use --bench-precision instead")
    with pytest.raises(ProfileError, match=f"warmup_rounds must be at most {MAX_ROUNDS}"):
        profile_from_doc("t", {**CHAIN, "warmup_rounds": MAX_ROUNDS + 1})
    assert profile_from_doc("t", {**CHAIN, "rounds": MAX_ROUNDS}).scenarios[0].rounds == \
        MAX_ROUNDS


def test_the_planned_runs_have_an_upper_bound() -> None:
    # 60 swept values x (plain + local + dask) x 1000 rounds: 180,000 runs.
    doc = {**CHAIN, "executors": ["local", "dask"], "rounds": MAX_ROUNDS,
           "matrix": [{"n": list(range(1, 61))}]}
    with pytest.raises(ProfileError) as raised:
        profile_from_doc("t", doc)
    assert str(raised.value) == (
        f"profile 't': 60 scenario(s) plan 180000 runs (scenarios x modes x rounds), more "
        f"than the {MAX_CASES} a session may plan; fewer rounds, executors or swept values")
    fewer = profile_from_doc("t", {**doc, "rounds": 10})
    assert sum(planned_cases(s) for s in fewer.scenarios) == 60 * 3 * 10


def test_planned_cases_count_environments_probes_and_warmups() -> None:
    (s,) = load_profile("smoke", ["rounds=5", "warmup_rounds=1", "probes='compare'"],
                        environments=["a=covalent==0.240.0", "b=covalent==0.240.0"]).scenarios
    assert planned_cases(s) == (1 + 2 * 2) * 2 * 6  # plain + 2 executors x 2 envs, bare too


@pytest.mark.parametrize("text", ["n=[1,2", "n=[1, 2,,]", "s=\"unterminated", "t={a=1",
                                  "x=1.5s", "x=-"])
def test_malformed_toml_is_refused_with_the_toml_error(text: str) -> None:
    with pytest.raises(ProfileError) as raised:
        parse_override(text, "--bench-arg")
    message = str(raised.value)
    assert message.startswith(f"--bench-arg {text}: ") and "is not a valid TOML value (" in message
    assert "write a list as [1, 2]" in message and "(at line" not in message
    assert "\n" not in message


def test_malformed_list_is_refused_where_it_would_have_been_a_string() -> None:
    with pytest.raises(ProfileError, match=r"'\[1,2' is not a valid TOML value \(Unclosed "
                                           r"array"):
        load_profile(None, [], ["n=[1,2"], workload="fanout")


@pytest.mark.parametrize(("text", "value"), [
    ("shape=lean", "lean"), ("device=cuda", "cuda"), ("data_dir=./data", "./data"),
    ("data_dir=/tmp/x", "/tmp/x"), ("n=[1, 2]", [1, 2]), ("s=\"a b\"", "a b"),
    ("rate=-0.5", -0.5), ("w=infinity", "infinity"),
])
def test_bare_words_and_valid_toml_still_parse(text: str, value: object) -> None:
    assert parse_override(text)[1] == value


# --- argparse validators for the suite's options (bench.config.options) ---------------------

VALIDATORS = {
    "--bench-precision": options.precision_seconds,
    "--bench-max-rounds": options.max_rounds,
    "--bench-time-budget": options.time_budget_minutes,
    "--covalent-workers": options.worker_count,
    "--covalent-threads-per-worker": options.threads_per_worker,
    "--external-workers": options.worker_count,
    "--bench-stacks": options.stack_rounds,
    "--bench-stacks-rate": options.stacks_rate,
}


def _parse(option: str, value: str, capsys) -> tuple[object, str]:
    parser = argparse.ArgumentParser(prog="pytest")
    parser.add_argument(option, type=VALIDATORS[option])
    try:
        return vars(parser.parse_args([option, value])).popitem()[1], ""
    except SystemExit as exc:
        assert exc.code == 2
        return None, capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize(("option", "value", "parsed"), [
    ("--bench-precision", "0.05", 0.05), ("--bench-time-budget", "30", 30.0),
    ("--bench-max-rounds", "1", 1), ("--bench-max-rounds", str(MAX_ROUNDS), MAX_ROUNDS),
    ("--covalent-workers", "4", 4), ("--covalent-threads-per-worker", "1", 1),
    ("--external-workers", "2", 2), ("--bench-stacks", "2", 2),
    ("--bench-stacks-rate", "20", 20),
])
def test_valid_option_values_pass(option: str, value: str, parsed: object, capsys) -> None:
    assert _parse(option, value, capsys) == (parsed, "")


@pytest.mark.parametrize(("option", "value", "says"), [
    ("--bench-precision", "nan", "expected a finite number of seconds (the CI half-width to "
                                 "reach) > 0, got 'nan'"),
    ("--bench-precision", "inf", "got 'inf'"),
    ("--bench-precision", "0", "got '0'"),
    ("--bench-precision", "-1", "got '-1'"),
    ("--bench-precision", "fast", "got 'fast'"),
    ("--bench-time-budget", "nan", "expected a finite number of minutes > 0, got 'nan'"),
    ("--bench-time-budget", "0", "got '0'"),
    ("--bench-max-rounds", "0", f"expected a whole number of measured rounds between 1 and "
                                f"{MAX_ROUNDS}, got '0'"),
    ("--bench-max-rounds", str(MAX_ROUNDS + 1), f"between 1 and {MAX_ROUNDS}, got"),
    ("--bench-max-rounds", "2.5", "got '2.5'"),
    ("--covalent-workers", "0", "expected a whole number of Dask workers >= 1, got '0'"),
    ("--external-workers", "-2", "expected a whole number of Dask workers >= 1, got '-2'"),
    ("--bench-stacks", "0", "expected a whole number of profiled rounds between 1 and"),
    ("--bench-stacks-rate", "5000", "expected a whole number of samples per second between "
                                    "1 and 1000, got '5000'"),
    ("--covalent-threads-per-worker", "0", "expected a whole number of threads per Dask "
                                           "worker >= 1, got '0'"),
    ("--covalent-workers", "many", "got 'many'"),
])
def test_invalid_option_values_are_usage_errors(option: str, value: str, says: str,
                                                capsys) -> None:
    parsed, err = _parse(option, value, capsys)
    assert parsed is None
    assert err.startswith(f"pytest: error: argument {option}: expected ") and says in err
