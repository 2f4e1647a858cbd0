"""Where the time goes, by function (`--bench-stacks N`): per orchestration part and the
tasks' own time, the functions that hold the most sampled seconds per run (hotspots.csv),
what grew between environments (a differential profile of the profiled rounds), what
sampling cost (profiled − unprofiled wall of the same round), a flame graph of one run and
the trace and speedscope files of every profiled run."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench.analysis.decompose import environments_of  # noqa: E402
from bench.analysis.findings import PART_NAMES  # noqa: E402
from bench.analysis.hotspots import (  # noqa: E402
    ALPHA,
    MIN_TESTED_S,
    PART_ROLES,
    SUMMARY_PARTS,
    counted,
    environment_differentials,
    growers,
    label,
)
from bench.records import STACKS_DIR  # noqa: E402
from bench.report.blocks import Block, Bullets, Figure, Heading, Table, Text, save_figure  # noqa: E402
from bench.report.registry import ReportData, derived, plot, section  # noqa: E402

TOP = 5
def part_functions(hot: pd.DataFrame, top: int = TOP) -> pd.DataFrame:
    """Per configuration, executor label and part: its seconds per run (the part's roles'
    sampled thread-seconds) and its top functions by self seconds per run (a run without
    the function counts 0), with the share of the part they cover."""
    hot = hot.assign(label=label(hot))
    rows = []
    for (config_id, name, part), group in hot.groupby(["config_id", "label", "part"],
                                                      sort=False):
        if part not in PART_ROLES:
            continue
        mine = group[[counted(part, r, w) for r, w in
                      zip(group["role"], group["waiting"].astype(bool), strict=True)]]
        runs = group["run_id"].nunique()
        if mine.empty or not runs:
            continue
        funcs = (mine.groupby(["module", "function"], sort=False)
                 .agg(self_s=("self_s", "sum"), line=("line", "first"),
                      category=("category", "first"), waiting=("waiting", "first"))
                 .reset_index())
        funcs["self_s"] /= runs
        # The part's seconds: the client's main thread whole (its waits are the part), the
        # busy threads of the server and the workers.
        client = mine[mine["role"] == "client"]
        part_s = (client.drop_duplicates(["run_id"])["part_s"].sum()
                  + mine[mine["role"] != "client"]["self_s"].sum()) / runs
        funcs = funcs[funcs["self_s"] > 0].sort_values("self_s", ascending=False).head(top)
        for rank, f in enumerate(funcs.itertuples(), 1):
            rows.append({"config_id": config_id, "executor": name, "part": part,
                         "part_s": part_s, "rank": rank, "module": f.module,
                         "function": f.function, "line": f.line, "category": f.category,
                         "waiting": bool(f.waiting), "self_s": f.self_s,
                         "share": f.self_s / part_s if part_s else float("nan")})
    return pd.DataFrame(rows)


@derived("hotspot_diffs", "hotspot_diffs.csv")
def hotspot_diffs(data: ReportData) -> pd.DataFrame:
    """Per function and part, each environment's profiled rounds against the reference's
    (bench.analysis.hotspots.environment_differentials)."""
    if data.hotspots is None or data.hotspots.empty:
        return pd.DataFrame()
    return environment_differentials(data.hotspots, environments_of(data.all_runs))


def _table(columns: list[str], rows: list[list]) -> Table:
    return Table(pd.DataFrame(rows, columns=columns), as_text=True)


def _fmt(s: float) -> str:
    return f"{s:.3f}" if abs(s) < 10 else f"{s:.1f}"


@section("profiles", order=65)
def profiles_section(data: ReportData, figures: list[Figure]) -> list[Block]:
    hot = data.hotspots
    if hot is None or hot.empty:
        return []
    rate = ", ".join(f"{r:g}" for r in sorted(set(hot["rate_hz"].dropna())))
    runs = hot["run_id"].nunique()
    blocks: list[Block] = [
        Heading("Where the time goes, by function"),
        Text(f"{runs} profiled runs (`--bench-stacks`): py-spy sampled every process of each "
             f"run (the client's main thread, the server and its children, the workers) at "
             f"{rate} Hz, idle threads included, and each sample was placed by time in the "
             f"run's parts. Seconds are sampled thread-seconds per run; a profiled run is an "
             f"extra run of its round, never in the figures above. Per part, the functions "
             f"that hold the most (self time: the function itself, not what it calls; "
             f"*waiting*: a thread blocked in it, on HTTP, a lock, a poll): on the client, "
             f"its main thread, waits included (they are the part); on the server and the "
             f"workers, the threads that were busy (their idle pool threads wait all along).")]
    table = part_functions(hot)
    lead = _largest_parts(data.full_summary, table)
    if lead:
        blocks.append(Bullets(tuple(lead)))
    if len(table):
        rows = [[r.executor, r.part, _fmt(r.part_s) if r.rank == 1 else "", r.rank,
                 f"`{r.module}:{r.function}` ({r.line:.0f})" if pd.notna(r.line)
                 else f"`{r.module}:{r.function}`",
                 r.category + (", waiting" if r.waiting else ""), _fmt(r.self_s),
                 f"{100 * r.share:.0f} %"]
                for r in table.itertuples()]
        blocks.append(_table(["executor", "part", "part s/run", "#", "function (line)",
                              "kind", "self s/run", "of part"], rows))
    grown = growers(data.table("hotspot_diffs"))
    if len(grown):
        sig = grown[grown["significant"]]
        blocks.append(Heading("What grew, against the reference environment", 3))
        blocks.append(Text(
            "Per part, the function whose self time per run grew most (environment − "
            "reference over the profiled rounds: median difference, 95 % bootstrap CI; "
            "Mann–Whitney p by permutation, and q: that p adjusted by Benjamini–Hochberg "
            "over every function tested in the comparison, those with at least "
            f"{MIN_TESTED_S:g} s per run). A wait is named with the client's call it "
            "waited under, the one whose inclusive time grew most (Covalent's first). "
            + (f"{len(sig)} of {len(grown)} significant (q < {ALPHA:g})." if len(sig)
               else f"None is significant (q < {ALPHA:g}).")))
        blocks.append(_table(
            ["environment", "executor", "part", "function", "grew s/run", "95 % CI", "p",
             "q"],
            [[g.environment, g.executor, g.part,
              f"`{g.module}:{g.function}` ({g.role}{', waiting' if g.waiting else ''})"
              + (f", under `{g.via_module}:{g.via_function}` ({g.via_delta_s:+.3f} s "
                 f"inclusive)" if isinstance(g.via_function, str) else ""),
              f"{g.delta_s:+.3f}", f"[{g.ci_low:+.3f}, {g.ci_high:+.3f}]", f"{g.p:.2g}",
              f"{g.p_adj:.2g}"]
             for g in grown.head(20).itertuples()]))
    if data.stacks is not None and len(data.stacks):
        blocks.append(Heading("What sampling cost", 3))
        blocks.append(Text("Profiled minus unprofiled run of the same round (median, 95 % "
                           "CI, Wilcoxon p); the timed rounds never ran sampled."))
        blocks.append(_table(
            ["configuration", "executor", "metric", "rounds", "unprofiled s", "cost s",
             "95 % CI", "p"],
            [[c.config_id, c.executor, c.metric, c.rounds, _fmt(c.bare_median_s),
              f"{c.cost_s:+.3f}", f"[{c.cost_ci_low:+.3f}, {c.cost_ci_high:+.3f}]",
              f"{c.p_value:.3f}" if pd.notna(c.p_value) else "–"]
             for c in data.stacks.itertuples()]))
    blocks += figures
    files = _run_files(data.out_dir, hot)
    if files:
        blocks.append(Text(
            "Per profiled run, `trace.json` (Chrome trace-event format: open it in "
            "https://ui.perfetto.dev or chrome://tracing: the client's phases, the nodes and "
            "tasks on the server's and workers' tracks, and the samples) and one speedscope "
            "file per process (https://www.speedscope.app): " + "; ".join(files) + "."))
    return blocks


def _largest_parts(summary: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """Per executor, the summary's largest orchestration part in words, with the functions
    that held it in the profiled runs (those a thread spent working in, not waiting)."""
    lines = []
    if summary is None or summary.empty or table.empty:
        return lines
    for row in summary.itertuples():
        label = (f"{row.environment}:{row.executor}" if isinstance(
            getattr(row, "environment", ""), str) and row.environment
            and not str(row.executor).startswith(f"{row.environment}:") else str(row.executor))
        parts = {c: getattr(row, c) for c in SUMMARY_PARTS if pd.notna(getattr(row, c, None))}
        if not parts:
            continue
        column = max(parts, key=parts.get)
        mine = table[(table["config_id"] == row.config_id) & (table["executor"] == label)
                     & (table["part"] == SUMMARY_PARTS[column]) & ~table["waiting"]]
        if mine.empty:
            continue
        funcs = ", ".join(f"`{f.module}:{f.function}` {f.self_s:.2f} s ({f.category})"
                          for f in mine.head(3).itertuples())
        lines.append(f"`{label}`: the largest part, {PART_NAMES[column]} ({parts[column]:.2f} "
                     f"s per timed run), spent its profiled time most in {funcs}.")
    return lines


def _run_files(out_dir: Path, hot: pd.DataFrame) -> list[str]:
    """Links to one profiled run's files per executor label (the rest lie beside them)."""
    found = []
    first = hot.assign(label=label(hot)).drop_duplicates("label")
    for row in first.itertuples():
        run_dir = out_dir / STACKS_DIR / str(row.run_id)
        trace = run_dir / "trace.json"
        if trace.is_file():
            found.append(f"{row.label}: [{trace.relative_to(out_dir)}]"
                         f"({trace.relative_to(out_dir)}) and {STACKS_DIR}/{row.run_id}/")
    return found


# --- the flame graph ------------------------------------------------------------------------


def _flame_run(data: ReportData) -> tuple[str, str] | None:
    """The profiled Covalent run to draw: of the run with most orchestration samples."""
    hot = data.hotspots
    cov = hot[(hot["mode"] == "covalent") & hot["part"].isin(list(PART_ROLES))]
    if cov.empty:
        return None
    per_run = cov.drop_duplicates(["run_id", "part", "role"]).groupby("run_id")["part_s"].sum()
    run_id = str(per_run.idxmax())
    return run_id, label(cov[cov["run_id"] == run_id]).iloc[0]


def flame_tree(profile: dict, frames: list[dict]) -> dict[tuple[str, ...], float]:
    """Seconds per call path (root first) of one speedscope evented profile."""
    spent: dict[tuple[str, ...], float] = defaultdict(float)
    stack: list[str] = []
    last = None
    for event in profile["events"]:
        if last is not None and stack:
            spent[tuple(stack)] += event["at"] - last
        last = event["at"]
        name = frames[event["frame"]]["name"]
        if event["type"] == "O":
            stack.append(name)
        elif stack:
            stack.pop()
    return spent


def _layout(spent: dict[tuple[str, ...], float]
            ) -> tuple[list[tuple[int, float, float, str]], tuple[str, ...]]:
    """(depth, x, width, name) boxes, children left to right, and the trunk left out above
    them: the frames every sample shares (for the client: pytest's and the engine's calls
    down to the run), so the boxes start where the run's own calls branch."""
    total: dict[tuple[str, ...], float] = defaultdict(float)
    children: dict[tuple[str, ...], set[tuple[str, ...]]] = defaultdict(set)
    for path, s in spent.items():
        for i in range(1, len(path) + 1):
            total[path[:i]] += s
            children[path[:i - 1]].add(path[:i])
    whole = sum(spent.values())
    trunk: tuple[str, ...] = ()
    while True:  # down the single child that holds (nearly) all of the time
        big = [c for c in children.get(trunk, ()) if total[c] >= 0.98 * whole]
        if len(big) != 1 or len(children.get(big[0], ())) == 0:
            break
        trunk = big[0]
    boxes = []

    def place(path: tuple[str, ...], x: float) -> None:
        for child in sorted(children.get(path, ()), key=lambda c: c[-1]):
            boxes.append((len(child) - 1 - len(trunk), x, total[child], child[-1]))
            place(child, x)
            x += total[child]

    place(trunk, 0.0)
    return boxes, trunk


@plot("flame", "flame.png", section="profiles",
      when=lambda d: d.hotspots is not None and not d.hotspots.empty, caption=(
          "One profiled run as flame graphs (icicles: the root at the top, a box's width its "
          "sampled seconds): the client's main thread, which holds every client-side part, "
          "and the server's main thread, where Covalent's dispatcher runs; the widest boxes "
          "near the bottom are where the time goes."))
def plot_flame(data: ReportData, path: Path) -> bool:
    chosen = _flame_run(data)
    if chosen is None:
        return False
    run_id, label = chosen
    run_dir = data.out_dir / STACKS_DIR / run_id
    panels = []
    for role in ("client", "server"):
        files = sorted(run_dir.glob(f"speedscope-{role}-*.json"),
                       key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        if not files:
            continue
        doc = json.loads(files[0].read_text())  # the root process: the lowest pid
        pid = files[0].stem.rsplit("-", 1)[1]
        main = [p for p in doc["profiles"] if f"({pid})" in p["name"]] or doc["profiles"][:1]
        if main:
            panels.append((f"{role} {pid}, main thread",
                           flame_tree(main[0], doc["shared"]["frames"])))
    panels = [(title, tree) for title, tree in panels if tree]
    if not panels:
        return False
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, 4.6 * len(panels)), squeeze=False)
    for ax, (title, tree) in zip(axes[:, 0], panels, strict=True):
        boxes, trunk = _layout(tree)
        width = max((x + w for d, x, w, n in boxes if d == 0), default=1.0)
        depth = min(max((d for d, *_ in boxes), default=0) + 1, 40)
        for d, x, w, name in boxes:
            if d >= depth or w < width * 0.002:
                continue
            ax.add_patch(plt.Rectangle((x, d), w, 0.95, color=plt.cm.YlOrRd(0.25 + 0.6 * (
                hash(name) % 97) / 97), linewidth=0))
            if w > width * 0.04:
                ax.text(x + w * 0.01, d + 0.45, name[: int(140 * w / width)], fontsize=6,
                        va="center", clip_on=True)
        ax.set_xlim(0, width)
        ax.set_ylim(depth, 0)
        ax.set_yticks([])
        ax.set_xlabel("sampled seconds")
        under = f", under {' > '.join(trunk[-3:])}" if trunk else ""
        ax.set_title(f"{title}: {width:.2f} s sampled{under}", fontsize=9, loc="left")
    fig.suptitle(f"Flame graphs of profiled run {run_id} ({label})")
    save_figure(fig, path)
    return True
