"""The report page in a real browser: a report built from synthesized run records opens in
headless Chromium (/usr/bin/chromium, Debian's `chromium` package) without errors, every
plot in the self-contained index.html loads, and a 1280×800 first screen shows the findings
beside the key plot. A screenshot of that screen is left beside the report (index.png).

No extra Python library: Chromium runs twice from the command line. `--dump-dom` loads a
copy of the page with a probe script that records script errors, console errors and
failed loads, and, on the load event, every image's state and the findings' place on the
screen into the DOM it dumps; `--screenshot` takes the picture of the page itself.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import struct
import subprocess
from pathlib import Path

import pytest

from bench.records import RunContext, RunRecord, phase_rows, phases_writer, run_row, runs_writer
from bench.report import make_report
from bench.report.html import HTML_PAGE
from bench.workloads.base import Outcome

WIDTH, HEIGHT = 1280, 800
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = ("headless Chromium is needed for this test: `apt-get install -y chromium` "
                "(Debian/Ubuntu; .ci/run installs it), or set CHROMIUM to a Chrome/Chromium "
                "binary")

# Injected at the top of <head> of a copy of the page: collects what goes wrong and, once
# everything has loaded, writes a JSON report into <pre id="probe">.
PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener('error', function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) {
      errors.push('failed to load ' + String(t.src || t.href).slice(-80));  // the name ends it
    } else {
      errors.push('error: ' + e.message);
    }
  }, true);
  window.addEventListener('unhandledrejection', function (e) {
    errors.push('unhandled rejection: ' + e.reason);
  });
  var consoleError = console.error;
  console.error = function () {
    errors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    return consoleError.apply(console, arguments);
  };
  window.addEventListener('load', function () {
    function box(el) {
      if (!el) return null;
      var r = el.getBoundingClientRect();
      return {top: r.top, bottom: r.bottom, left: r.left, right: r.right};
    }
    var images = Array.prototype.map.call(document.images, function (img) {
      return {alt: img.alt, src: img.getAttribute('src').slice(0, 22),
              complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
              box: box(img)};
    });
    var out = document.createElement('pre');
    out.id = 'probe';
    out.textContent = JSON.stringify({
      errors: errors, images: images, title: document.title,
      viewport: [window.innerWidth, window.innerHeight],
      scrollWidth: document.documentElement.scrollWidth,
      findings: Array.prototype.map.call(document.querySelectorAll('#findings li'), box),
      key: box(document.querySelector('#findings figure img'))
    });
    document.body.appendChild(out);
  });
})();
</script>"""


def chromium() -> str:
    """The browser binary; a missing one fails the test (CI installs it), never skips."""
    candidates = [os.environ.get("CHROMIUM", ""), *CHROMIUM_NAMES]
    found = next((shutil.which(c) for c in candidates if c and shutil.which(c)), None)
    if not found:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return found


def run_chromium(binary: str, profile: Path, *args: str, timeout: float = 60) -> str:
    """One headless Chromium run; its whole process group goes if it hangs."""
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-extensions", "--disable-background-networking",
               f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {timeout} s: {' '.join(args)}")
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {err[-2000:]}"
    return out


def probe(binary: str, page: Path, profile: Path) -> dict:
    """Load a probed copy of `page` (beside it, so relative paths resolve the same) and
    return what the probe saw."""
    text = page.read_text(encoding="utf-8")
    probed = page.with_name("probe-" + page.name)
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    try:
        dom = run_chromium(binary, profile, "--virtual-time-budget=10000", "--dump-dom",
                           probed.as_uri())
    finally:
        probed.unlink()
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not report (the page did not finish loading?): {dom[:500]}"
    return json.loads(html.unescape(found.group(1)))


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is no PNG"
    return struct.unpack(">II", head[16:24])


SESSION = "2026-01-01T000000+0000-test01"


def write_records(out: Path, warmup: bool = False) -> None:
    """A small fan-out session through the harness's own writers: n = 2 and n = 4 tasks,
    plain, local and dask, 3 interleaved rounds; every task timed from inside. `warmup`: a
    warm-up round first, its Covalent runs a second slower (the fresh server's first)."""
    runs, phases = runs_writer(out), phases_writer(out)
    for n in (2, 4):
        for rnd in range(4 if warmup else 3):
            cold = warmup and rnd == 0
            context = RunContext(session_id=SESSION, profile="pertask", workload="fanout",
                                 config_id=f"fanout-n={n}", params={"n": n, "sleep_s": 0.0},
                                 concurrency=1, round=rnd, warmup=cold,
                                 server={"server_startup_s": 4.2})
            for executor in ("", "local", "dask"):
                record = _record(n, rnd, executor, cold)
                row = run_row(context, record)
                runs.append(row)
                phases.append(*phase_rows(row, record))


def _record(n: int, rnd: int, executor: str, cold: bool = False) -> RunRecord:
    jitter = 0.02 * rnd + (1.0 if cold else 0.0)
    task_s = 0.05 if executor != "dask" else 0.06  # dask's tasks run a bit slower
    env = "OMP_NUM_THREADS=1;MALLOC_TRIM_THRESHOLD_=65536" if executor == "dask" else ""
    faults = 900 if executor == "dask" else 100
    run_id = f"{executor or 'plain'}-{n}-{rnd}"
    tag = {"run_id": run_id, "status": "COMPLETED", "tasks_probed": f"{n}/{n}",
           "outcome": Outcome(digest=f"digest-n{n}", metrics={"total": n})}
    if not executor:
        tasks = [{"phase": "in_task", "task": "work", "start_s": i * task_s,
                  "duration_s": task_s, "cpu_s": task_s, "sys_cpu_s": 0.001,
                  "page_faults": faults} for i in range(n)]
        return RunRecord(mode="plain", executor="", wall_s=n * task_s + 0.001, phases=tasks,
                         timings={"server_cpu_s": 0.01}, **tag)
    submit, wait, detect, download = 0.4 + jitter, 0.01, 0.05, 0.3
    server_start, gap, stage = submit + wait, 0.15 + 0.05 * (executor == "dask"), 0.2
    phases = [{"phase": "submit", "start_s": 0.0, "duration_s": submit},
              {"phase": "until_running", "start_s": submit, "duration_s": wait}]
    clock = server_start + gap
    for i in range(n):
        phases.append({"phase": "node", "task": "work", "start_s": clock,
                       "duration_s": stage + task_s, "bytes": 800})
        phases.append({"phase": "in_task", "task": "work", "start_s": clock + stage / 2,
                       "duration_s": task_s, "cpu_s": task_s, "sys_cpu_s": 0.004,
                       "page_faults": faults, "task_env": env, "pid": 100 + i})
        clock += stage + task_s + gap
    server_s = clock - server_start
    phases += [{"phase": "server", "start_s": server_start, "duration_s": server_s},
               {"phase": "completion_detect", "start_s": clock, "duration_s": detect},
               {"phase": "retrieve", "start_s": clock + detect, "duration_s": download}]
    wall = clock + detect + download + 0.002
    timings = {"submit_s": submit, "server_s": server_s, "retrieve_s": download,
               "stock_wall_s": wall + 0.5, "server_cpu_s": 1.5}
    return RunRecord(mode="covalent", executor=executor, wall_s=wall, phases=phases,
                     dispatch_id=f"d-{run_id}", timings=timings, **tag)


def test_probe_sees_broken_images_and_script_errors(tmp_path: Path) -> None:
    """The probe itself: a page with a missing image and a throwing script is caught."""
    binary = chromium()
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><head><title>x</title></head><body>"
                    '<img src="missing.png" alt="gone"><script>undefinedCall();</script>'
                    "<script>console.error('boom');</script></body></html>")
    seen = probe(binary, page, tmp_path / "profile")
    assert seen["images"][0]["width"] == 0
    assert any("undefinedCall" in e for e in seen["errors"]), seen["errors"]
    assert any("failed to load" in e and "missing.png" in e for e in seen["errors"]), seen
    assert any("console.error: boom" in e for e in seen["errors"])


def test_report_page_opens_in_chromium(tmp_path: Path) -> None:
    binary = chromium()
    records, out = tmp_path / "records", tmp_path / "report"
    write_records(records)
    make_report(records, out)
    page = out / HTML_PAGE
    text = page.read_text(encoding="utf-8")

    # Self-contained: every image is embedded, nothing is fetched.
    sources = re.findall(r'<img[^>]* src="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(?:src|href)="(?:https?:)?//', text)
    assert "<script" not in text
    plots = sorted(p.name for p in out.glob("*.png"))
    assert len(sources) == len(plots), (len(sources), plots)
    # The same findings open both pages.
    readme = (out / "README.md").read_text()
    assert readme.index("## Findings") < readme.index("## Summary")
    assert "Per run, Covalent `local` adds" in readme and "Cheapest configuration" in readme

    seen = probe(binary, page, tmp_path / "profile")
    assert seen["errors"] == [], seen["errors"]
    # Layout depends on the width only (the page uses no viewport heights), so the boxes
    # below are measured against HEIGHT whatever height --dump-dom's window leaves.
    assert seen["viewport"][0] == WIDTH, seen["viewport"]
    assert len(seen["images"]) == len(plots)
    for image in seen["images"]:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
    # The first screen: every finding starts on it and the key plot fits on it whole, with
    # no sideways scrolling.
    assert 3 <= len(seen["findings"]) <= 6, seen["findings"]
    assert all(box["top"] < HEIGHT for box in seen["findings"]), seen["findings"]
    assert seen["key"] and seen["key"]["bottom"] <= HEIGHT, seen["key"]
    assert seen["scrollWidth"] <= WIDTH, seen["scrollWidth"]
    assert seen["title"].startswith("What does Covalent cost?")

    shot = out / "index.png"
    run_chromium(binary, tmp_path / "profile", "--hide-scrollbars",
                 f"--screenshot={shot}", page.as_uri())
    assert png_size(shot) == (WIDTH, HEIGHT)
    assert shot.stat().st_size > 20_000  # a page, not a blank screen


# --- the findings' rules, on hand-made summary rows (no browser) -------------------------

def _summary_row(executor: str, **values: object) -> dict:
    row = {"workload": "w", "config_id": "c", "executor": executor, "concurrency": 1,
           "plain_median_s": 10.0, "covalent_median_s": 14.0, "covalent_rounds": 5,
           "total_overhead_s": 4.0, "total_overhead_s_ci_low": 3.5,
           "total_overhead_s_ci_high": 4.5, "total_overhead_pct": 40.0,
           "compute_inflation_s": 0.1, "compute_inflation_s_ci_low": 0.0,
           "compute_inflation_s_ci_high": 0.2, "submit_median_s": 0.5,
           "executor_cost_median_s": 2.5, "retrieve_median_s": 0.4,
           "same_output": True, "deterministic": True, "comparable": True}
    return {**row, **values}


def test_findings_name_the_dominant_part_and_the_allocator_remedy() -> None:
    import pandas as pd

    from bench.analysis.findings import DOMINANT_SHARE, REMEDY_FILE, findings

    summary = pd.DataFrame([
        _summary_row("local"),
        _summary_row("dask", total_overhead_s=8.0, total_overhead_s_ci_low=7.6,
                     total_overhead_s_ci_high=8.4, compute_inflation_s=6.0,
                     compute_inflation_s_ci_low=5.0, compute_inflation_s_ci_high=7.0,
                     plain_in_task_cpu_s=9.0, covalent_in_task_cpu_s=15.0,
                     plain_in_task_sys_cpu_s=0.1, covalent_in_task_sys_cpu_s=3.0,
                     plain_in_task_page_faults=40_000, covalent_in_task_page_faults=500_000,
                     covalent_task_env="OMP_NUM_THREADS=1;MALLOC_TRIM_THRESHOLD_=65536"),
    ])
    assert 6.0 / 8.0 >= DOMINANT_SHARE
    text = {f.topic: f.text for f in findings(summary)}
    assert "**+4.00 s** [+3.50, +4.50]" in text["overhead"]
    assert "on `local` is executor staging" in text["largest_part"]
    assert "Compute inflation dominates on `dask`" in text["compute_inflation"]
    assert "memory allocator" in text["compute_inflation"]
    assert REMEDY_FILE in text["compute_inflation"]
    assert "precision" not in text  # no target columns and narrow CIs: no sentence
    assert text["same_work"].startswith("Both modes did the same work")


def test_findings_precision_target_when_the_summary_has_one() -> None:
    import pandas as pd

    from bench.analysis.findings import findings

    summary = pd.DataFrame([_summary_row("local", precision_target_s=0.6),
                            _summary_row("dask", precision_target_s=0.3)])
    text = {f.topic: f.text for f in findings(summary)}["precision"]
    assert "met for `local` ±0.50 s" in text and "**not met** for `dask`" in text
    wide = pd.DataFrame([_summary_row("local", total_overhead_s_ci_high=6.0,
                                      same_output=False, deterministic=False)])
    found = {f.topic: f.text for f in findings(wide)}
    assert "more rounds" in found["precision"]
    assert "not deterministic" in found["same_work"]


def test_findings_lead_with_what_differs_from_the_reference_environment() -> None:
    import pandas as pd

    from bench.analysis.findings import findings

    def diff(env: str, metric: str, d: float, low: float, high: float, p: float) -> dict:
        return {"config_id": "c", "executor": "dask", "environment": env, "reference": "now",
                "metric": metric, "diff_s": d, "diff_ci_low": low, "diff_ci_high": high,
                "p_value": p, "significant": p < 0.05 and (low > 0 or high < 0)}

    diffs = pd.DataFrame([
        diff("old-dask", "orchestration_s", 1.59, 1.07, 1.72, 0.002),
        diff("old-dask", "executor_cost_s", 1.74, 1.41, 1.81, 0.002),
        diff("old-dask", "submit_s", 0.02, -0.07, 0.09, 0.59),
        diff("same", "orchestration_s", 0.05, -0.3, 0.4, 0.7),
    ])
    summary = pd.DataFrame([
        _summary_row("now:dask", environment="now"),
        _summary_row("old-dask:dask", environment="old-dask", total_overhead_s=9.0),
        _summary_row("same:dask", environment="same"),
    ])
    found = findings(summary, diffs=diffs)
    assert found[0].topic == "environments"
    assert ("differs significantly in 1 of 2 comparisons: `old-dask` on `dask` +1.59 s "
            "[+1.07, +1.72], p = 0.002, most in executor staging") in found[0].text
    assert "The other one is not distinguishable" in found[0].text
    text = {f.topic: f.text for f in found}
    # What Covalent costs is told for the reference; the others are in the first sentence.
    assert "`now:dask`" in text["overhead"] and "old-dask:dask" not in text["overhead"]
    none = findings(summary, diffs=diffs[diffs["environment"] == "same"])[0]
    assert none.text.startswith("No environment's orchestration differs significantly")
    # With profiled rounds, the function that grew most in that part, when significant.
    def grower(part: str, function: str, significant: bool) -> dict:
        return {"config_id": "c", "executor": "dask", "environment": "old-dask",
                "part": part, "module": "distributed.protocol", "function": function,
                "delta_s": 1.21, "significant": significant}

    grown = pd.DataFrame([grower("node", "dumps", True), grower("submit", "other", True)])
    text = findings(summary, diffs=diffs, grown=grown)[0].text
    assert ("most in executor staging and (de)serialization (+1.74 s, of which +1.21 s in "
            "`distributed.protocol:dumps`)") in text
    waited = grown.assign(module="socket", function="SocketIO.readinto", waiting=True,
                          via_module="covalent._api.apiclient",
                          via_function="CovalentAPIClient.put", via_delta_s=1.5)
    assert ("(+1.74 s, of which +1.21 s waiting in `socket:SocketIO.readinto` under "
            "`covalent._api.apiclient:CovalentAPIClient.put` (+1.50 s))"
            ) in findings(summary, diffs=diffs, grown=waited)[0].text
    unsure = findings(summary, diffs=diffs, grown=grown.assign(significant=False))[0].text
    assert "of which" not in unsure and "(+1.74 s)" in unsure


# --- the report's registry: a plot is one declaration ------------------------------------

def _figure_files(blocks: tuple) -> list[str]:
    from bench.report.blocks import Figure

    return [b.file for b in blocks if isinstance(b, Figure)]


def test_cold_start_plot_beside_the_per_configuration_plots(tmp_path: Path) -> None:
    """A session with a warm-up round gets the cold-start plot last among the plots; one
    without has none, and none left over from the earlier report."""
    import pandas as pd

    warm, plain, out = tmp_path / "warm", tmp_path / "plain", tmp_path / "report"
    write_records(warm, warmup=True)
    report = make_report(warm, out)
    summary = pd.read_csv(out / "summary.csv")
    assert (summary["cold_covalent_s"] > summary["covalent_median_s"] + 0.9).all()
    assert (out / "cold_start.png").stat().st_size > 10_000
    files = _figure_files(report.blocks)
    assert files[-1] == "cold_start.png" and files[-2] == "timeline.png", files
    page = (out / "README.md").read_text()
    assert "![cold_start](cold_start.png)" in page and "*The first warm-up run of each" in page
    assert page.index("cold_start.png") < page.index("## Where the time goes")

    write_records(plain)
    report = make_report(plain, out)
    assert not (out / "cold_start.png").exists()
    assert "cold_start.png" not in _figure_files(report.blocks)


def test_a_declared_plot_is_drawn_linked_from_its_finding_and_can_open_the_page(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One @plot declaration is all a plot needs: drawn where its condition holds, shown in
    its section, the plot of the findings topics it ranks first for and, with the lowest
    key rank, the key plot (then not repeated below)."""
    import matplotlib.pyplot as plt

    from bench.analysis.findings import OVERHEAD
    from bench.report import registry

    monkeypatch.setattr(registry, "PLOTS", list(registry.PLOTS))

    @registry.plot("probe", "probe.png", section="plots", caption="A probe plot.",
                   when=lambda d: not d.summary.empty, topics={OVERHEAD: -1}, key=-1)
    def draw(data: registry.ReportData, path: Path) -> None:
        fig, ax = plt.subplots()
        ax.bar(range(len(data.summary)), data.summary["overhead_s"])
        fig.savefig(path)
        plt.close(fig)

    with pytest.raises(ValueError, match="clashes"):
        registry.plot("probe", "other.png", section="plots", caption="")(draw)
    records = tmp_path / "records"
    write_records(records)
    report = make_report(records, tmp_path / "report")
    opening = next(b for b in report.blocks if hasattr(b, "items"))
    assert opening.key is not None and opening.key.file == "probe.png"
    assert opening.key.caption == "A probe plot."
    overhead = next(fig for text, fig in opening.items if "Per run, Covalent" in text)
    assert overhead is not None and overhead.file == "probe.png"
    assert "probe.png" not in _figure_files(report.blocks)  # the key plot opens the page
    assert (tmp_path / "report" / "probe.png").is_file()
