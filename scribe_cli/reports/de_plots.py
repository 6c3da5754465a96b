"""Volcano and MA plots of a DE table (the effect that ``called`` uses), called genes marked."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .de import column


def _axes_pair():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), constrained_layout=True)
    return plt, fig, axes


def plot(table: pd.DataFrame, effect: str, path, n_draws: int, title: str = "", label_top: int = 10) -> None:
    """Two panels in one PNG: volcano (effect against -log10 lfsr) and MA (effect against mean expression).
    lfsr estimated as 0 from N draws is drawn at 1 / (N + 1), the resolution of the estimate (marked so)."""
    plt, fig, axes = _axes_pair()
    eff = table[column(effect, "mean")].to_numpy()
    lfsr = table[column(effect, "lfsr")].to_numpy()
    called = table["called"].to_numpy(bool)
    masked = table["masked"].to_numpy(bool)
    floor = 1.0 / (n_draws + 1)
    y = -np.log10(np.maximum(lfsr, floor))
    x_ma = np.log10(np.maximum(table["mean_expr"].to_numpy(), 1e-6))
    groups = [(~called & ~masked, "not called", "0.6", 6), (masked, "masked (--min-mean)", "tab:orange", 6),
              (called, f"called ({called.sum()})", "tab:red", 10)]
    for ax, (xs, ys, xl, yl) in zip(axes, [(eff, y, f"{effect} effect (posterior mean)", "-log10 lfsr"),
                                           (x_ma, eff, "log10 mean expression (mean count per cell)", f"{effect} effect")]):
        for sel, label, colour, size in groups:
            if sel.any():
                ax.scatter(xs[sel], ys[sel], s=size, c=colour, alpha=0.7, lw=0, label=label)
        for i in np.flatnonzero(called)[:label_top]:  # the table is sorted: the first called are the strongest
            ax.annotate(str(table["gene"].iloc[i]), (xs[i], ys[i]), fontsize=6, alpha=0.8)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.legend(loc="upper left", fontsize=8)  # not "best": its search is slow with many points
    axes[0].axhline(-np.log10(floor), color="0.4", lw=0.6, ls=":")
    axes[0].set_title(f"volcano (dotted: lfsr < 1/{n_draws + 1}, the draws' resolution)")
    axes[1].axhline(0, color="0.4", lw=0.6)
    axes[1].set_title("MA")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110, format="png")  # the path may be a temporary name without .png
    plt.close(fig)
