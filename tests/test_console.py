"""The plain-log progress lines a shell script sees (stderr is not a terminal under pytest)."""

import re

from cellsegcli import console


def test_progress_log_restarts_rate_and_eta_each_round(monkeypatch, capsys):
    clock = [0.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: clock[0])
    assert not console.interactive()
    with console.progress("epoch", unit="batches") as report:
        for done in range(1, 21):            # round 1: 20 batches, 5 s each
            clock[0] = 5.0 * done
            report(done, 20)
        clock[0] = 105.0                      # round 2 (the next epoch) starts over at 2 s a batch
        report(1, 20)
        clock[0] = 115.0
        report(6, 20)
    lines = capsys.readouterr().err.strip().splitlines()
    rates = [(float(m[1]), float(m[2])) for m in (re.search(r"\(([\d.]+)/s, ETA (\d+) s\)", ln) for ln in lines)]
    assert lines[-1].split(" ", 1)[1].startswith("epoch: 6/20 batches")
    assert rates[-1] == (0.5, 28.0)          # 5 batches in 10 s since the round began; 14 left
    assert (0.2, 0.0) in rates               # round 1 ended at 20/20 at its own rate
