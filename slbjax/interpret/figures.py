"""Figures of ``slbjax interpret`` (matplotlib, Agg): one function per figure, each saves a PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from slbjax.interpret.stats import SOH_CLASSES  # noqa: E402

DPI = 130


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def weights_heatmap(path: Path, weights: np.ndarray, cells: np.ndarray, cycles: np.ndarray) -> Path:
    """Fig. 4a: router weights [M, E] of the test samples, cells side by side in cycle order."""
    order = np.lexsort((cycles, cells))
    w, c = weights[order], cells[order]
    fig, ax = plt.subplots(figsize=(10, 3.2))
    im = ax.imshow(w.T, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
    bounds = np.flatnonzero(c[1:] != c[:-1]) + 1
    for b in bounds:
        ax.axvline(b - 0.5, color="white", lw=0.8)
    mids = (np.concatenate([[0], bounds]) + np.concatenate([bounds, [len(c)]])) / 2
    ax.set_xticks(mids, [str(n) for n in c[np.concatenate([[0], bounds])]], rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(w.shape[1]), [f"expert {i + 1}" for i in range(w.shape[1])])
    ax.set_xlabel("test samples (each cell in cycle order)")
    ax.set_title("Router weights over the test cells (experts ordered by the SOH they serve)")
    fig.colorbar(im, ax=ax, label="router weight")
    return _save(fig, path)


def weights_over_life(path: Path, cells: list[str], cycles: list[np.ndarray], weights: list[np.ndarray],
                      capacity: list[np.ndarray]) -> Path:
    """Fig. 4b: per cell, weights against cycle with the capacity at the start cycle."""
    n = len(cells)
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.3 * n), squeeze=False)
    for ax, name, cyc, w, cap in zip(axes[:, 0], cells, cycles, weights, capacity, strict=True):
        for j in range(w.shape[1]):
            ax.plot(cyc, w[:, j], lw=1, label=f"expert {j + 1}")
        ax.set_ylabel("router weight")
        ax.set_ylim(0, 1)
        ax2 = ax.twinx()
        ax2.plot(cyc, cap, color="black", lw=1.2, ls="--", label="capacity")
        ax2.set_ylabel("capacity (Ah)")
        ax.set_title(name, fontsize=9)
    axes[0, 0].legend(fontsize=7, ncol=min(6, weights[0].shape[1]), loc="upper right")
    axes[-1, 0].set_xlabel("start cycle")
    return _save(fig, path)


def tsne_pooled(path: Path, emb: np.ndarray, soh: np.ndarray) -> Path:
    """Fig. 4c: t-SNE of the weights pooled over the test cohort, coloured by SOH."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    sc = ax.scatter(emb[:, 0], emb[:, 1], c=soh * 100, s=6, cmap="coolwarm_r")
    fig.colorbar(sc, ax=ax, label="SOH at the start cycle (%)")
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_title("Router weights, t-SNE over all test cells")
    return _save(fig, path)


def tsne_per_cell(path: Path, embs: list[np.ndarray], lives: list[np.ndarray], names: list[str]) -> Path:
    """Fig. 4c, the authors' mode: each test cell embedded on its own, coloured by position in its life."""
    n = len(embs)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, e, life, name in zip(axes.ravel(), embs, lives, names, strict=False):
        sc = ax.scatter(e[:, 0], e[:, 1], c=life * 100, s=6, cmap="viridis", vmin=0, vmax=100)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(sc, ax=axes.ravel().tolist(), label="position in the cell's life (%)")
    fig.savefig(path, dpi=DPI)  # no tight_layout: the colour bar spans several axes
    plt.close(fig)
    return path


def confusion(path: Path, conf: np.ndarray, title: str) -> Path:
    """Fig. 4d: SOH class from the weights, row-normalised confusion (recall on the diagonal)."""
    rates = conf / np.maximum(conf.sum(1, keepdims=True), 1) * 100
    fig, ax = plt.subplots(figsize=(5.2, 4.3))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=100)
    labels = [c.split(" (")[0] for c in SOH_CLASSES]
    ax.set_xticks(range(3), labels)
    ax.set_yticks(range(3), [f"{lab}\n(n={int(n)})" for lab, n in zip(labels, conf.sum(1), strict=True)])
    for i in range(3):
        for j in range(3):
            ax.text(j, i, f"{rates[i, j]:.0f} %", ha="center", va="center",
                    color="white" if rates[i, j] > 60 else "black", fontsize=9)
    ax.set_xlabel("class predicted from the router weights")
    ax.set_ylabel("true class (SOH at the start cycle)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="share of the true class (%)")
    return _save(fig, path)


def mape_by_soh(path: Path, soh: np.ndarray, sample_mape: np.ndarray, bands: dict[str, dict]) -> Path:
    """Fig. 4e: each test sample's trajectory MAPE against its start SOH, band means marked."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.scatter(soh * 100, sample_mape, s=4, alpha=0.35, color="tab:gray", label="test sample")
    for name, b in bands.items():
        if b["samples"]:
            err = [[max(b["mape_pct"] - b["p05"], 0.0)], [max(b["p95"] - b["mape_pct"], 0.0)]]
            ax.errorbar(float(name), b["mape_pct"], yerr=err, fmt="o", color="tab:red", ms=8, capsize=4)
            ax.annotate(f"{b['mape_pct']:.2f} % ({b['cells']} cells)", (float(name), b["mape_pct"]),
                        textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.plot([], [], "o", color="tab:red", label="band mean (+-2.5 % SOH), 90 % over resampled cells")
    ax.set_xlabel("SOH at the start cycle (%)")
    ax.set_ylabel("trajectory MAPE (%)")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    ax.set_title("Prediction error by SOH at the prediction start")
    return _save(fig, path)


def importance(path: Path, rows: list[dict], base: float, title: str) -> Path:
    """Fig. 4f: change in MAPE per perturbed feature with its cell-resampled 90 % interval,
    and the rate at which the chosen experts change."""
    names = [r["feature"] for r in rows]
    d = np.array([r["delta_mape_pct"] for r in rows])
    lo = d - np.array([r["delta_p05"] for r in rows])
    hi = np.array([r["delta_p95"] for r in rows]) - d
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    y = np.arange(len(names))
    ax.barh(y, d, xerr=np.stack([np.maximum(lo, 0), np.maximum(hi, 0)]), color="tab:blue", capsize=2)
    ax.set_yticks(y, names)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(f"change in test MAPE (percentage points; baseline {base:.3f} %)")
    ax.invert_yaxis()
    ax2.barh(y, [r["expert_change_rate"] * 100 for r in rows], color="tab:orange")
    ax2.set_xlabel("samples whose chosen experts change (%)")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def expert_soh_ranges(path: Path, spec: dict) -> Path:
    """Each expert's SOH centre and 5-95 % range of the samples that choose it, with its usage share."""
    e = len(spec["usage_share"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(e) + 1
    c = np.asarray(spec["soh_centre"]) * 100
    lo = c - np.asarray(spec["soh_p05"]) * 100
    hi = np.asarray(spec["soh_p95"]) * 100 - c
    ax.errorbar(x, c, yerr=np.stack([lo, hi]), fmt="o", capsize=4)
    for xi, ci, s in zip(x, c, spec["usage_share"], strict=True):
        if np.isfinite(ci):
            ax.annotate(f"{s * 100:.0f} % of choices", (xi, ci), textcoords="offset points", xytext=(6, 0), fontsize=7)
    ax.set_xticks(x, [f"expert {i}" for i in x])
    ax.set_ylabel("SOH of the samples choosing it (%)")
    ax.set_title("Expert specialisation (member 1)")
    return _save(fig, path)


def knockout(path: Path, rows: list[dict]) -> Path:
    """Change in MAPE by SOH class when one expert is removed."""
    d = np.array([[r[f"class{c}_delta_mape_pct"] for c in range(3)] for r in rows])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    lim = np.nanmax(np.abs(d)) if np.isfinite(d).any() else 1.0
    im = ax.imshow(d, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_yticks(range(len(rows)), [f"expert {r['expert']} removed" for r in rows])
    ax.set_xticks(range(3), [c.split(" (")[0] for c in SOH_CLASSES])
    for i in range(d.shape[0]):
        for j in range(3):
            if np.isfinite(d[i, j]):
                ax.text(j, i, f"{d[i, j]:+.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="change in MAPE (percentage points)")
    ax.set_title("Expert knock-out by SOH class", fontsize=10)
    return _save(fig, path)


def attributions(path: Path, names: list[str], series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Path:
    """Feature attributions, each normalised to shares summing to 1; ``series`` maps a label to
    (share, lower, upper) [F] each (lower = upper = share: no whisker)."""
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(series)
    y = np.arange(len(names))
    for i, (label, (mid, lo, hi)) in enumerate(series.items()):
        ax.barh(y + i * width, mid * 100, height=width, label=label,
                xerr=np.stack([np.maximum(mid - lo, 0), np.maximum(hi - mid, 0)]) * 100, capsize=2)
    ax.set_yticks(y + width * (len(series) - 1) / 2, names)
    ax.invert_yaxis()
    ax.set_xlabel("share of the attribution (%)")
    ax.legend(fontsize=8)
    ax.set_title("Feature attributions\nwhiskers: router, range over members; "
                 "integrated gradients, 90 % over resampled test cells", fontsize=9)
    return _save(fig, path)
