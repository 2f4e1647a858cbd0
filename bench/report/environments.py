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

from bench.report.blocks import Block, Figure, Heading, Table, Text  # noqa: E402

PLOTS = {"environments": "environments.png"}
CAPTIONS = {"environments": "Orchestration per environment and executor (median, 95 % CI): "
                            "a bar that stands apart from the reference's is a real change."}
FAMILIES = (("orchestration_s", "orchestration"), ("total_overhead_s", "total overhead"))


def plot_environments(summary: pd.DataFrame, path: Path) -> bool:
    rows = summary[summary["environment"].fillna("").astype(str) != ""]
    if rows["environment"].nunique() < 2:
        return False
    bases = list(dict.fromkeys(rows["executor"].str.split(":", n=1).str[1]))
    envs = list(dict.fromkeys(rows["environment"]))
    fig, axes = plt.subplots(1, len(FAMILIES), figsize=(6 * len(FAMILIES), 3.8), squeeze=False)
    width = 0.8 / len(envs)
    for ax, (column, title) in zip(axes[0], FAMILIES, strict=True):
        for k, env in enumerate(envs):
            mine = rows[rows["environment"] == env].set_index(
                rows[rows["environment"] == env]["executor"].str.split(":", n=1).str[1])
            mine = mine[~mine.index.duplicated()].reindex(bases)
            xs = [i + (k - (len(envs) - 1) / 2) * width for i in range(len(bases))]
            mid = mine[column]
            err = [mid - mine[f"{column}_ci_low"], mine[f"{column}_ci_high"] - mid]
            version = mine["covalent"].dropna().astype(str)
            label = f"{env} ({version.iloc[0]})" if len(version) else env
            ax.bar(xs, mid, width, yerr=err, capsize=3, label=label)
        ax.set_xticks(range(len(bases)), bases)
        ax.set_ylabel("seconds per run")
        ax.set_title(title)
        ax.axhline(0, color="black", linewidth=0.6)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Covalent environments side by side (medians of paired rounds, 95 % CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def environments_section(summary: pd.DataFrame, diffs: pd.DataFrame, out_dir: Path
                         ) -> list[Block]:
    if diffs is None or diffs.empty:
        return []
    drawn = plot_environments(summary, out_dir / PLOTS["environments"])
    families = diffs[diffs["metric"].isin([c for c, _ in FAMILIES])]
    parts = diffs[~diffs["metric"].isin([c for c, _ in FAMILIES])
                  & diffs["significant"].astype(bool)]
    blocks: list[Block] = [
        Heading("Covalent environments side by side"),
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
    if drawn:
        blocks.append(Figure(PLOTS["environments"], CAPTIONS["environments"], "environments"))
    return blocks
