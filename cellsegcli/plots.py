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
