"""Progress bars: on by default (also outside a terminal, so Jupyter shows them), off with quiet or TQDM_DISABLE."""

from __future__ import annotations

from vsfa.progress import enabled, progress


def test_bars_follow_quiet_and_tqdm_disable(monkeypatch, capsys):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert enabled() and not enabled(quiet=True)
    assert list(progress(range(3), "count")) == [0, 1, 2]
    assert "count" in capsys.readouterr().err  # drawn on stderr even though it is not a terminal here
    for value, on in (("1", False), ("true", False), ("0", True), ("", True)):
        monkeypatch.setenv("TQDM_DISABLE", value)
        assert enabled() is on
    monkeypatch.setenv("TQDM_DISABLE", "1")
    bar = progress(None, "manual", total=4)
    bar.update(4)
    bar.close()
    assert list(progress(range(2), "quiet")) == [0, 1] and capsys.readouterr().err == ""
