"""CI: the GitHub workflow is valid and runs the same steps as .ci/run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github/workflows/benchmark.yml"


def _ci_steps() -> list[str]:
    lines = (REPO / ".ci/run").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# --- steps"))
    return [line for line in lines[start + 1:] if line.strip() and not line.startswith("#")]


def test_workflow_is_valid_github_actions_syntax() -> None:
    checker = shutil.which("check-jsonschema")
    assert checker, "check-jsonschema is a test dependency: pip install -e '.[test]'"
    proc = subprocess.run(
        [checker, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflow_runs_the_same_steps_as_ci_run() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads `on` as True
    assert {"push", "pull_request"} <= set(triggers)
    steps = workflow["jobs"]["overhead"]["steps"]
    runs = [step["run"].strip() for step in steps if "run" in step]
    assert _ci_steps() == [r for r in runs if r in _ci_steps()]
    assert set(_ci_steps()) <= set(runs)
    uses = {step.get("uses", "").split("@")[0] for step in steps}
    assert {"actions/cache", "actions/upload-artifact", "actions/setup-python"} <= uses
    assert any("GITHUB_STEP_SUMMARY" in r for r in runs)


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    steps = _ci_steps()
    command = ('ruff check . && pytest -n 3 --dist worksteal -m "not quiet" --durations=15 '
               '&& pytest -m quiet --durations=5')
    assert f'pip install -e ".[test]" && {command}' in readme
    assert steps[:2] == ['pip install -e ".[test]"', command]
