"""PNG figures of a run (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from metasd_train.atomic import write_with  # noqa: E402


def save(fig, path: Path) -> None:
    write_with(path, lambda p: fig.savefig(p, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def heatmap(
    values: list[list[float]], rows: list[str], cols: list[str], title: str, path: Path, fmt: str = "{:.2f}"
) -> None:
    fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 2, 0.6 * len(rows) + 1.5))
    im = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(
                j,
                i,
                fmt.format(v),
                ha="center",
                va="center",
                color="w" if v < (max(map(max, values)) + min(map(min, values))) / 2 else "k",
            )
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    save(fig, path)


def bars(groups: list[str], series: dict[str, list[float]], title: str, ylabel: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(1.6 * len(groups) + 3, 3.5))
    width = 0.8 / len(series)
    colors = plt.get_cmap("tab20").colors
    for k, (name, vals) in enumerate(series.items()):
        ax.bar([i + k * width for i in range(len(groups))], vals, width, label=name, color=colors[k % len(colors)])
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    save(fig, path)


def arm_timeline(arms: list[int], names: list[str], title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(names) + 1.5))
    ax.scatter(range(len(arms)), arms, s=6)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("round")
    ax.set_title(title)
    save(fig, path)
