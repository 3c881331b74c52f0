"""Linking speed and memory on a long synthetic movie: random-walking cells that divide, enter, leave
and are missed now and then; prints a table of frames/s and the accuracy against the known tracks.

    python benchmarks/tracking.py [--frames 1000] [--cells 100] [--seed 0]

Only the linker runs here (detections in, tracks out): the label passes cost what reading and
relabelling a frame costs (see the README). Accuracy: the share of true frame-to-frame links of a cell
that the tracks reproduce, and the true divisions reproduced exactly (mother's track the parent of both
daughters' tracks, which start on the division frame). Cells move 2 px (s.d. per axis) a frame, are
20 px across, divide with p = 0.002 per frame, leave through the edges and are missed with p = 0.01.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cellsegcli.tracking import Detections, LinkOptions, link  # noqa: E402


def simulate(frames: int, cells: int, seed: int, *, size: float = 1000.0, diameter: float = 20.0,
             step: float = 2.0, divide_p: float = 0.002, miss_p: float = 0.01):
    """Detections of a simulated movie and the true (frame, index) -> cell identity, plus true divisions."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, size, (cells, 2))
    ident = np.arange(cells)
    next_id = cells
    detections, truth, divisions = [], [], []
    area = int(np.pi * diameter**2 / 4)
    for t in range(frames):
        pos = pos + rng.normal(0, step, pos.shape)
        born = rng.random(len(pos)) < divide_p
        if born.any() and t:
            mothers = np.flatnonzero(born)
            offset = rng.normal(0, 1, (len(mothers), 2))
            offset *= (0.35 * diameter) / np.linalg.norm(offset, axis=1, keepdims=True)
            kids_a, kids_b = pos[mothers] + offset, pos[mothers] - offset
            ids_a, ids_b = np.arange(next_id, next_id + len(mothers)), np.arange(next_id + len(mothers),
                                                                                   next_id + 2 * len(mothers))
            next_id += 2 * len(mothers)
            divisions += [(t, int(m), int(a), int(b)) for m, a, b in zip(ident[mothers], ids_a, ids_b)]
            keep = ~born
            pos = np.concatenate([pos[keep], kids_a, kids_b])
            ident = np.concatenate([ident[keep], ids_a, ids_b])
        inside = (pos >= 0).all(1) & (pos < size).all(1)
        pos, ident = pos[inside], ident[inside]
        seen = rng.random(len(pos)) >= miss_p
        p, i = pos[seen], ident[seen]
        n = len(p)
        detections.append(Detections(t, np.arange(1, n + 1), p[:, 0].copy(), p[:, 1].copy(),
                                     np.full(n, area), np.zeros((n, 4), np.int64)))
        truth.append(i)
    return detections, truth, divisions


def accuracy(tracks, truth) -> float:
    """Share of a cell's true frame-to-frame links (its identity seen on consecutive frames) that the
    tracks reproduce (the same track id on both)."""
    good = total = 0
    for t in range(len(truth) - 1):
        a = dict(zip(truth[t].tolist(), tracks.ids[t].tolist()))
        for cell, tid in zip(truth[t + 1].tolist(), tracks.ids[t + 1].tolist()):
            if cell in a:
                total += 1
                good += a[cell] == tid
    return good / max(total, 1)


def divisions_found(tracks, truth, divisions) -> int:
    """True divisions reproduced exactly: both daughters' tracks start on the division frame with the
    mother's track (on the frame before) as parent."""
    parent = {int(r[0]): int(r[3]) for r in tracks.lineage}
    first = {int(r[0]): int(r[1]) for r in tracks.lineage}

    def track_of(t, cell):
        hit = np.flatnonzero(truth[t] == cell) if 0 <= t < len(truth) else []
        return int(tracks.ids[t][hit[0]]) if len(hit) else None

    found = 0
    for t, mother, a, b in divisions:
        m, da, db = track_of(t - 1, mother), track_of(t, a), track_of(t, b)
        if None not in (m, da, db) and da != db and parent.get(da) == m == parent.get(db) and first[da] == first[db] == t:
            found += 1
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--divisions-first", action="store_true", help="LinkOptions(divisions_first=True)")
    args = parser.parse_args()
    rows = []
    link(simulate(3, 5, args.seed)[0])   # imports (laptrack, networkx, pandas) outside the timings
    for frames in sorted({max(args.frames // 10, 2), args.frames}):
        detections, truth, divisions = simulate(frames, args.cells, args.seed)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        tracks = link(detections, LinkOptions(divisions_first=args.divisions_first))
        seconds = time.perf_counter() - started
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        n = sum(len(d) for d in detections)
        rows.append((frames, n, tracks.n_tracks, len(divisions), tracks.n_divisions,
                     divisions_found(tracks, truth, divisions), accuracy(tracks, truth), seconds, frames / seconds,
                     grown))
    print("| frames | detections | tracks | true divisions | divisions made | true ones found | links right "
          "| seconds | frames/s | peak RSS growth (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6]:.4f} | {r[7]:.1f} | {r[8]:.1f} "
              f"| {r[9]:.0f} |")


if __name__ == "__main__":
    main()
