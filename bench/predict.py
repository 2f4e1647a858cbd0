"""`python -m bench predict`: what Covalent's orchestration will cost your graph, from a
stored envelope (the `envelope` profile's records), per environment and executor.

    python -m bench predict --bench-workload examples.fanout:fanout_workflow --bench-arg n=8 \
        --envelope reports/envelope

Reads the graph by one plain run (bench.adapters.covalent_api.graph_census: its nodes and
edges, its sublattices, and the serialized bytes of its tasks' outputs and its parameters),
turns it into the envelope's features (bench.analysis.envelope.features) and prints each
fitted model's point prediction and 95 % interval for one run. `--out FILE.csv` keeps them.

The prediction carries the envelope session's speed; the host's drifts (the same graph 25 %
faster an hour later). A measured session with `--bench-reference` runs the envelope's
reference graph too, and its report scales the prediction to the speed of that session.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from bench.analysis.envelope import FEATURES, features, fit, fits, stored_bytes, stored_envelope
from bench.config.profiles import ProfileError, parse_override
from bench.records import NoRecordsError
from bench.workloads import WorkloadError, workload_for


def census_of(workload_ref: str, inputs: str | None, args: list[str]) -> dict[str, float]:
    """The census of the workload's graph, for the parameters given as KEY=VALUE."""
    workload = workload_for(workload_ref, inputs=inputs)
    params = workload.check(dict(parse_override(a, "--bench-arg") for a in args))
    workload.prepare(params)
    return workload.census(params)


def predictions(census: dict[str, float], envelope_dir: Path) -> pd.DataFrame:
    """One row per fitted environment and executor: the prediction and its interval."""
    envelope = stored_envelope(envelope_dir)
    feats = features(census)
    found_fits = fits(envelope.sweep)
    if not found_fits:  # each fit's own reason: too few runs, or features that move together
        reasons = []
        for env, ex in envelope.sweep.groupby(["environment", "executor"]).groups:
            try:
                fit(envelope.sweep, env, ex)
            except ValueError as exc:
                reasons.append(str(exc))
        raise NoRecordsError(f"{envelope_dir}: no fit of the envelope's {len(FEATURES)} "
                             f"coefficients: {'; '.join(reasons)}")
    rows = []
    for found in found_fits:
        point, low, high = found.predict(feats)
        rows.append({"environment": found.environment,
                     "covalent": envelope.versions.get(found.environment, ""),
                     "executor": found.executor,
                     "predicted_orchestration_s": point, "interval_low_s": low,
                     "interval_high_s": high, "model_r2": found.r2,
                     "model_median_rel_error": found.median_rel_error, **feats})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench-workload", required=True, metavar="MODULE:ATTR",
                        help="the lattice (or a built-in workload)")
    parser.add_argument("--bench-inputs", default=None, metavar="MODULE:FUNC")
    parser.add_argument("--bench-arg", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--envelope", type=Path, default=Path("reports/envelope"),
                        help="records of an envelope session, or a report folder with its "
                        "envelope_runs.csv (default reports/envelope; reports/sample-envelope "
                        "is a real one of 2026-12-03)")
    parser.add_argument("--out", type=Path, default=None, help="write the table as CSV")
    args = parser.parse_args(argv)
    try:
        start = time.perf_counter()
        census = census_of(args.bench_workload, args.bench_inputs, args.bench_arg)
        took = time.perf_counter() - start
        table = predictions(census, args.envelope)
    except (WorkloadError, ProfileError, NoRecordsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"graph: {census['tasks']} tasks, {census['nodes']} nodes, {census['edges']} edges, "
          f"{census['sublattices']} sublattices, depth {census['depth']}, "
          f"{stored_bytes(census) / 1e6:.3g} MB serialized "
          f"(read by one plain run, {took:.1f} s)")
    if census.get("estimated"):
        print(f"note: estimated from the lattice's graph alone: {census['estimate_reason']} "
              f"(its tasks' outputs are not counted)")
    shown = table.drop(columns=list(FEATURES))
    print(shown.to_markdown(index=False, floatfmt=".3g"))
    print(f"at the speed of the envelope's session ({args.envelope}); for this host's speed "
          f"now, measure it with --bench-reference and report it with --envelope "
          f"{args.envelope}")
    if args.out:
        table.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
