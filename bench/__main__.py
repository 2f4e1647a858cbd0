"""`python -m bench <command>`: the harness's one entry point.

    python -m bench run [pytest options]   the benchmark (= pytest bench --benchmark-only ...)
    python -m bench report [--in DIR]      plots, tables and the page from the records
    python -m bench gate [--in DIR]        judge the latest session against the baseline
    python -m bench calibrate [--sessions K]  the gate's error rates, from K A/A sessions
    python -m bench predict --bench-workload MODULE:ATTR [--envelope DIR]
                                           orchestration predicted for your graph
    python -m bench list                   profiles and built-in workloads
"""

from __future__ import annotations

import sys
from pathlib import Path

COMMANDS = ("run", "report", "gate", "calibrate", "predict", "list")


def _list() -> int:
    from bench.config.profiles import available_profiles, load_profile
    from bench.workloads import BUILT_IN

    print("profiles (bench/config/, or the path of a .toml file):")
    for name in available_profiles():
        try:
            description = load_profile(name, data_dir="/mnist").description
        except Exception as exc:  # a broken profile is listed with its error
            description = f"(invalid: {exc})"
        print(f"  {name:<10} {description}")
    print("workloads (or any lattice as MODULE:ATTR / path/to/file.py:ATTR):")
    for name, workload in BUILT_IN.items():
        print(f"  {name:<10} {workload.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    command, rest = args[0], args[1:]
    if command == "run":
        import pytest

        suite = str(Path(__file__).resolve().parent)
        return int(pytest.main([suite, "--benchmark-only", *rest]))
    if command == "report":
        from bench.report.page import main as report_main

        return report_main(rest)
    if command == "gate":
        from bench.gate import main as gate_main

        return gate_main(rest)
    if command == "predict":
        from bench.predict import main as predict_main

        return predict_main(rest)
    if command == "calibrate":
        from bench.calibrate import main as calibrate_main

        return calibrate_main(rest)
    return _list()


if __name__ == "__main__":
    sys.exit(main())
