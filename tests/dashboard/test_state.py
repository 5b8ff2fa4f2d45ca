"""The dashboard's core: price buckets, per-browser cursors, frames (no sockets here)."""

from __future__ import annotations

from streamer.dashboard.state import Cursor, DashboardState
from streamer.net import protocol as P


def regime(sym: str, t: float, price: float, state: int = 0, seq: int = 0) -> P.Regime:
    names = ("calm", "turbulent")
    probs = [0.9, 0.1] if state == 0 else [0.2, 0.8]
    return P.Regime(
        v=1, seq=seq, ts=1.7e9 + t, symbol=sym, t=t, price=price, state=state,
        regime=names[state], probs=probs, changed=False,
    )  # fmt: skip


def word(stream: str, i: int, label: str | None, conf: float) -> P.Speech:
    return P.Speech(
        v=1, seq=i, ts=1.7e9 + i, stream=stream, utterance=i, label=label, confidence=conf,
        start=0.5 * i, end=0.5 * i + 0.4, nbest=[P.Candidate("apple", -10.0)],
    )  # fmt: skip


def test_a_bucket_keeps_first_min_max_last_and_the_last_regime() -> None:
    s = DashboardState()
    for t, p, k in ((1.0, 10.0, 0), (2.0, 12.0, 0), (3.0, 9.0, 1), (4.0, 11.0, 1)):
        s.ingest(regime("X", t, p, k))
    assert s.close_buckets() == 1
    f = s.frame(Cursor(), now=0.0)
    assert f["symbols"]["X"]["points"] == [[4.0, 10.0, 9.0, 12.0, 11.0, 1]]
    assert f["symbols"]["X"]["regime"] == "turbulent"
    assert f["symbols"]["X"]["names"] == ["calm", "turbulent"]
    assert f["symbols"]["X"]["probs"] == [0.2, 0.8]
    assert s.close_buckets() == 0  # no ticks since: no point


def test_frames_carry_only_what_is_new_to_each_browser() -> None:
    s = DashboardState(history=5)
    a, b = Cursor(), Cursor()
    for i in range(3):
        s.ingest(regime("X", float(i), 10.0 + i))
        s.close_buckets()
    first = s.frame(a, 0.0)
    assert first["snapshot"] and len(first["symbols"]["X"]["points"]) == 3
    s.ingest(regime("X", 3.0, 13.0))
    s.close_buckets()
    f = s.frame(a, 0.0)
    assert not f["snapshot"] and "reset" not in f["symbols"]["X"]
    assert [p[0] for p in f["symbols"]["X"]["points"]] == [3.0]
    assert "points" not in s.frame(a, 0.0)["symbols"]["X"]  # nothing new
    # b joins late: the whole history kept (at most 5 points), flagged as a reset
    for i in range(4, 10):
        s.ingest(regime("X", float(i), 10.0))
        s.close_buckets()
    late = s.frame(b, 0.0)
    assert late["symbols"]["X"]["reset"] and len(late["symbols"]["X"]["points"]) == 5
    # a fell further behind than the history: it is sent everything again, as a reset
    f = s.frame(a, 0.0)
    assert f["symbols"]["X"]["reset"] and [p[0] for p in f["symbols"]["X"]["points"]] == [
        5.0, 6.0, 7.0, 8.0, 9.0,
    ]  # fmt: skip


def test_time_going_back_restarts_the_chart() -> None:
    s = DashboardState()
    c = Cursor()
    for t in (5.0, 6.0):
        s.ingest(regime("X", t, 10.0))
        s.close_buckets()
    s.frame(c, 0.0)
    s.ingest(regime("X", 1.0, 10.0))  # a restarted replay
    s.close_buckets()
    f = s.frame(c, 0.0)
    assert f["symbols"]["X"]["reset"] and [p[0] for p in f["symbols"]["X"]["points"]] == [1.0]


def test_words_per_stream_and_the_unknown_word() -> None:
    s = DashboardState(words=2)
    c = Cursor()
    s.ingest(word("a", 0, "apple", 0.9))
    assert [w["label"] for w in s.frame(c, 0.0)["words"]] == ["apple"]
    for i, label in enumerate(("kiwi", None, "fig"), start=1):
        s.ingest(word("a", i, label, 0.5))
    f = s.frame(c, 0.0)
    assert [w["label"] for w in f["words"]] == ["kiwi", None, "fig"]  # all new ones, in order
    assert s.frame(c, 0.0)["words"] == []
    assert [w["label"] for w in s.frame(Cursor(), 0.0)["words"]] == [None, "fig"]  # kept: 2


def test_heartbeats_make_it_connected_until_they_stop() -> None:
    s = DashboardState(stale_after=3.0)
    assert not s.frame(Cursor(), 0.0)["health"]["connected"]
    hb = P.Heartbeat(v=1, seq=0, ts=0.0, session="s", interval=0.5, subscribers=2, last={})
    s.ingest(hb, 100.0)
    f = s.frame(Cursor(), 102.0)
    assert f["health"]["connected"] and f["health"]["heartbeat_age"] == 2.0
    assert f["health"]["subscribers"] == 2
    assert not s.frame(Cursor(), 103.5)["health"]["connected"]


def test_metrics_drops_and_the_service_state_are_reported() -> None:
    s = DashboardState()
    s.ingest(
        P.Metrics(
            v=1, seq=0, ts=0.0, session="s", uptime=1.0, subscribers=3, hwm=10, policy="nodrop",
            sent={"regime": 9}, dropped={"regime": 3, "speech": 1},
        )
    )  # fmt: skip
    s.ingest(P.Status(v=1, seq=0, ts=0.0, state="draining", session="s"))
    h = s.frame(Cursor(), 0.0)["health"]
    assert (h["dropped"], h["subscribers"], h["state"]) == (4, 3, "draining")


def summary(sym: str, t: float, prices: tuple[float, float, float, float], state: int,
            ticks: int = 100, seq: int = 0) -> P.Summary:  # fmt: skip
    names = ("calm", "turbulent")
    first, low, high, last = prices
    return P.Summary(
        v=1, seq=seq, ts=1.7e9 + t + 0.05, symbol=sym, ticks=ticks, t0=t - 0.1, t=t,
        first=first, low=low, high=high, last=last, state=state, regime=names[state],
        probs=[0.9, 0.1] if state == 0 else [0.2, 0.8], changes=0, regime_ts=1.7e9 + t,
        regime_seq=ticks * (seq + 1) - 1,
    )  # fmt: skip


def test_each_summary_is_a_chart_point_and_its_price_is_as_old_as_its_last_decode() -> None:
    s = DashboardState()
    s.ingest(summary("X", 1.0, (10.0, 9.0, 12.0, 11.0), 0, seq=0))
    s.ingest(summary("X", 2.0, (11.0, 10.5, 13.0, 12.5), 1, seq=1))
    assert s.close_buckets() == 0  # already points: nothing waits for the clock
    f = s.frame(Cursor(), now=0.0)
    x = f["symbols"]["X"]
    assert x["points"] == [[1.0, 10.0, 9.0, 12.0, 11.0, 0], [2.0, 11.0, 10.5, 13.0, 12.5, 1]]
    assert (x["regime"], x["price"], x["ticks"], x["names"]) == (
        "turbulent", 12.5, 200, ["calm", "turbulent"],
    )  # fmt: skip
    assert x["ts"] == 1.7e9 + 2.0  # the decode's publish time, not the summary's


def test_heartbeat_levels_are_shown_while_connected() -> None:
    s = DashboardState(stale_after=3.0)
    hb = P.Heartbeat(
        v=1, seq=0, ts=0.0, session="s", interval=0.5, last={},
        levels={"mic": P.Level(rms_dbfs=-31.5, peak_dbfs=-12.0)},
    )  # fmt: skip
    s.ingest(hb, 100.0)
    assert s.frame(Cursor(), 100.5)["health"]["levels"] == {"mic": [-31.5, -12.0]}
    assert s.frame(Cursor(), 104.0)["health"]["levels"] == {}  # stale: no level to trust
    s.ingest(P.Heartbeat(v=1, seq=1, ts=0.0, session="s", interval=0.5, last={}), 105.0)
    assert s.frame(Cursor(), 105.0)["health"]["levels"] == {}  # no stream had samples
