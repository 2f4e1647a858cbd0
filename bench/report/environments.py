"""Covalent environments side by side ([[environments]]): each environment's overhead
families with their CIs, and every environment against the reference (the first): the
paired difference per round of orchestration, total overhead and each orchestration part,
with its 95 % CI and the Mann–Whitney p."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench.analysis.decompose import environments_of  # noqa: E402
from bench.analysis.findings import ENVIRONMENTS  # noqa: E402
from bench.report.blocks import Block, Figure, Heading, Table, Text  # noqa: E402
from bench.report.registry import ReportData, plot, section  # noqa: E402

FAMILIES = (("orchestration_s", "orchestration"), ("total_overhead_s", "total overhead"))


def _wrap(text: str, width: int = 60) -> str:
    return "\n".join(text[i:i + width] for i in range(0, len(text), width))


# Environments side by side answer the question the session asked: the key plot first.
@plot("environments", "environments.png", section="environments", key=0,
      topics={ENVIRONMENTS: 0}, when=lambda d: not d.diffs.empty, caption=(
          "Per configuration (one row each): orchestration and total overhead per environment "
          "and executor (median, 95 % CI), and on the right each environment minus the "
          "reference in the same round (median, 95 % CI; a filled marker is significant): a "
          "bar or marker that stands apart from the reference is a real change."))
def plot_environments(data: ReportData, path: Path) -> bool:
    summary, diffs = data.full_summary, data.diffs
    envs = environments_of(summary)
    if len(envs) < 2:
        return False
    rows = summary[summary["environment"].isin(envs)]
    rows = rows.assign(base=rows["executor"].str.split(":", n=1).str[1])
    colors = {env: f"C{k % 10}" for k, env in enumerate(envs)}
    configs = list(dict.fromkeys(rows["config_id"]))
    fig, axes = plt.subplots(len(configs), len(FAMILIES) + 1,
                             figsize=(5.2 * (len(FAMILIES) + 1), 3.4 * len(configs) + 0.8),
                             squeeze=False)
    for axrow, config_id in zip(axes, configs, strict=True):
        mine_cfg = rows[rows["config_id"] == config_id]
        bases = list(dict.fromkeys(mine_cfg["base"]))
        width = 0.8 / len(envs)
        for ax, (column, title) in zip(axrow, FAMILIES, strict=False):
            for k, env in enumerate(envs):
                mine = mine_cfg[mine_cfg["environment"] == env].set_index("base").reindex(bases)
                xs = [i + (k - (len(envs) - 1) / 2) * width for i in range(len(bases))]
                mid = mine[column]
                err = [mid - mine[f"{column}_ci_low"], mine[f"{column}_ci_high"] - mid]
                ax.bar(xs, mid, width, yerr=err, capsize=3, color=colors[env])
            ax.set_xticks(range(len(bases)), bases)
            ax.set_ylabel("seconds per run")
            ax.set_title(f"{title}\n{_wrap(config_id)}", fontsize=9)
            ax.axhline(0, color="black", linewidth=0.6)
        _plot_diffs(axrow[-1], diffs[diffs["config_id"] == config_id], bases, envs, colors)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[env]) for env in envs]
    labels = []
    for env in envs:
        version = rows.loc[rows["environment"] == env, "covalent"].dropna().astype(str)
        labels.append(f"{env} (covalent {version.iloc[0]})" if len(version) else env)
    labels[0] += ", the reference"
    fig.legend(handles, labels, loc="lower center", ncol=min(len(envs), 4), fontsize=8,
               frameon=False)
    fig.suptitle("Covalent environments side by side (medians of paired rounds, 95 % CI)")
    fig.tight_layout(rect=(0, 0.6 / (3.4 * len(configs) + 0.8), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_diffs(ax: plt.Axes, diffs: pd.DataFrame, bases: list[str], envs: list[str],
                colors: dict[str, str]) -> None:
    """Environment minus reference, paired by round: orchestration (circle) and total
    overhead (square) per executor and environment."""
    others = envs[1:]
    width = 0.8 / max(len(others), 1)
    for k, env in enumerate(others):
        for (metric, _), marker, shift in zip(FAMILIES, ("o", "s"), (-0.12, 0.12),
                                              strict=True):
            mine = diffs[(diffs["environment"] == env) & (diffs["metric"] == metric)]
            mine = mine.set_index("executor").reindex(bases)
            xs = [i + (k - (len(others) - 1) / 2) * width + shift * width
                  for i in range(len(bases))]
            err = [mine["diff_s"] - mine["diff_ci_low"], mine["diff_ci_high"] - mine["diff_s"]]
            ax.errorbar(xs, mine["diff_s"], yerr=err, fmt="none", ecolor=colors[env],
                        capsize=3)
            for x, y, sig in zip(xs, mine["diff_s"], mine["significant"], strict=True):
                ax.plot(x, y, marker=marker, color=colors[env], markersize=6,
                        markerfacecolor=colors[env] if pd.notna(sig) and bool(sig) else "white")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(bases)), bases)
    ax.set_xlim(-0.5, len(bases) - 0.5)  # the same slots as the bar panels beside it
    ax.set_ylabel("seconds per run, minus the reference")
    ax.set_title(f"vs {envs[0]}: orchestration (circle), total overhead (square)", fontsize=9)


def definitions_table(definitions: list[dict]) -> pd.DataFrame:
    """What each environment was (covalent_environments.json), one row each."""
    rows = [{
        "environment": d.get("name"), "requirement": d.get("requirement"),
        "variables": " ".join(f"{k}={v}" for k, v in (d.get("env") or {}).items()),
        "covalent": d.get("covalent", ""), "status": d.get("status", ""),
        "build": ("cached" if d.get("cached") else f"built in {d['build_s']:.0f} s")
        if "build_s" in d else "", "server start s": d.get("server_startup_s"),
        "why not up": d.get("failure", ""), "session": d.get("session_id", ""),
    } for d in definitions]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    if frame["session"].nunique() <= 1:
        frame = frame.drop(columns="session")
    return frame.drop(columns=[c for c in ("why not up", "variables")
                               if not frame[c].astype(bool).any()])


@section("environments", order=20)
def environments_section(data: ReportData, figures: list[Figure]) -> list[Block]:
    diffs, definitions = data.diffs, data.definitions
    if diffs.empty and not definitions:
        return []
    blocks: list[Block] = [Heading("Covalent environments side by side")]
    if definitions:
        blocks += [Text("The environments (covalent_environments.json): each a virtual "
                        "environment with that requirement, its own server and client, and "
                        "these variables for both; the first is the reference."),
                   Table(definitions_table(definitions), floatfmt=".1f")]
    if diffs.empty:
        return blocks
    families = diffs[diffs["metric"].isin([c for c, _ in FAMILIES])]
    parts = diffs[~diffs["metric"].isin([c for c, _ in FAMILIES])
                  & diffs["significant"].astype(bool)]
    blocks += [
        Text("Every environment ran in the same session as the reference "
             f"(`{diffs['reference'].iloc[0]}`), round by round, on its own server, with the "
             "client side of each run in its own interpreter; the plain runs are shared. "
             "`diff_s` is the median over rounds of (environment − reference) in the same "
             "round, with its 95 % CI; `p_value` the two-sided Mann–Whitney U of the "
             "two samples; `significant` when p < 0.05 and the CI excludes 0."),
        Table(families, floatfmt=".3f"),
    ]
    if not parts.empty:
        blocks += [Text("Orchestration parts that changed significantly (a part that changed "
                        "for a known reason, such as completion detection, shows as itself):"),
                   Table(parts, floatfmt=".3f")]
    return blocks + figures
