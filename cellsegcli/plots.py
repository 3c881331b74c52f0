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
