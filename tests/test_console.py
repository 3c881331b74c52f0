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
        clock[0] = 115.0                      # round 2 (the next epoch, after a 15 s validation), 2 s a batch
        report(1, 20)
        clock[0] = 125.0
        report(6, 20)
    lines = capsys.readouterr().err.strip().splitlines()
    assert "(0.00/s, ETA ?)" in lines[-2]     # the round's first step: no rate yet
    rates = [(float(m[1]), float(m[2])) for m in (re.search(r"\(([\d.]+)/s, ETA (\d+) s\)", ln) for ln in lines)
             if m]
    assert lines[-1].split(" ", 1)[1].startswith("epoch: 6/20 batches")
    assert rates[-1] == (0.5, 28.0)          # 5 batches in 10 s since the round began; 14 left
    assert (0.2, 0.0) in rates               # round 1 ended at 20/20 at its own rate


def test_progress_bar_on_a_terminal_survives_rounds(monkeypatch):
    import io

    from rich.console import Console

    buffer = io.StringIO()
    monkeypatch.setattr(console, "_err", Console(file=buffer, force_terminal=True, width=120))
    assert console.interactive()
    with console.progress("epoch", unit="batches") as report:
        for round_ in range(2):
            for done in range(1, 5):
                report(done, 4, loss=0.5 / (round_ + 1))
    assert "4/4" in buffer.getvalue() and "loss=0.25" in buffer.getvalue()
