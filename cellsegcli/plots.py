"""PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(history: list[dict], path: Path) -> Path:
    """Training/validation loss and validation Jaccard per epoch."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("BCE + Dice loss")
    ax1.legend()
    ax2.plot(epochs, [h["val_jaccard"] for h in history], color="tab:green")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation pixel Jaccard")
    ax2.set_ylim(0, 1)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.partial.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_timecourse(frames: dict[str, list], path: Path, *, jaccard: list[float] | None = None,
                    title: str = "") -> Path:
    """Cell count, confluence and (with ground truth) pixel Jaccard per frame."""
    plt = _pyplot()
    panels = 3 if jaccard is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.2), dpi=100)
    t = frames["frame"]
    axes[0].plot(t, frames["cell_count"], marker="o", ms=3)
    axes[0].set_ylabel("cells")
    axes[1].plot(t, frames["confluence_percent"], marker="o", ms=3, color="tab:orange")
    axes[1].set_ylabel("confluence (%)")
    if jaccard is not None:
        axes[2].plot(t, jaccard, marker="o", ms=3, color="tab:green")
        axes[2].set_ylabel("pixel Jaccard")
        axes[2].set_ylim(0, 1)
    for ax in axes:
        ax.set_xlabel("frame")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_lineage(lineage, path: Path, *, title: str = "", max_tracks: int = 400) -> Path:
    """Lineage trees: one horizontal bar per track from its first to its last frame, daughters next to
    their mother and joined to her end; ``lineage`` rows are ``track_id, first, last, parent``. Past
    ``max_tracks`` only the longest-lived trees are drawn (the title says so)."""
    import numpy as np

    plt = _pyplot()
    from .overlay import track_colour

    rows = {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in np.asarray(lineage).reshape(-1, 4)}
    children: dict[int, list[int]] = {}
    for track, (_, _, parent) in rows.items():
        if parent in rows:
            children.setdefault(parent, []).append(track)
    roots = [t for t, (_, _, p) in rows.items() if p not in rows]

    def subtree(t):
        out = [t]
        for c in sorted(children.get(t, [])):
            out += subtree(c)
        return out

    def span(t):
        return max(rows[n][1] for n in subtree(t)) - rows[t][0]

    roots.sort(key=lambda t: (-span(t), t))
    order, shown = [], 0
    for r in roots:
        tree = subtree(r)
        if order and shown + len(tree) > max_tracks:
            break
        order += tree
        shown += len(tree)
    y = {t: i for i, t in enumerate(order)}
    fig, ax = plt.subplots(figsize=(8, max(2.5, min(0.06 * len(order) + 1.5, 30))), dpi=100)
    for t in order:
        first, last, parent = rows[t]
        colour = tuple(v / 255 for v in track_colour(t))
        ax.plot([first, last + 1], [y[t], y[t]], color=colour, lw=2, solid_capstyle="butt")
        if parent in y:
            ax.plot([rows[parent][1] + 1, first], [y[parent], y[t]], color="0.5", lw=0.8)
    ax.set_xlabel("frame")
    ax.set_ylabel("track")
    ax.set_yticks([])
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    note = f" ({len(order)} of {len(rows)} tracks)" if len(order) < len(rows) else f" ({len(rows)} tracks)"
    ax.set_title((title or "lineage") + note)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
