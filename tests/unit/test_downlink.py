"""Each subscriber's downlink: its estimate, and what of the room fits it (sfu.downlink)."""

from __future__ import annotations

import itertools

import pytest

from sfu.downlink import (
    TIER,
    Allocator,
    DownlinkEstimate,
    DownlinkPolicy,
    Stream,
    allocate,
    cost,
)

# The startup grace (a young connection's low REMBs) has a test of its own.
POLICY = DownlinkPolicy(startup_s=0.0)
AUDIO = [Stream("a1", "audio", (40_000,)), Stream("a2", "audio", (40_000,))]
# A speaker's camera (three layers), a quieter one's (two), and a plain track.
SPEAKER = Stream("cam1", "video", (150_000, 500_000, 1_500_000), priority=0)
QUIET = Stream("cam2", "video", (150_000, 500_000), priority=1)
PLAIN = Stream("cam3", "video", (300_000,), priority=2)
ROOM = [*AUDIO, SPEAKER, QUIET, PLAIN]


def test_audio_first_then_every_video_at_its_lowest_layer_then_upgrades_by_priority() -> None:
    assert allocate(ROOM, 10_000_000) == {"a1": 0, "a2": 0, "cam1": 2, "cam2": 1, "cam3": 0}
    # 80k audio + 600k of lowest layers; 720k leaves 40k: no upgrade.
    assert allocate(ROOM, 720_000) == {"a1": 0, "a2": 0, "cam1": 0, "cam2": 0, "cam3": 0}
    # 350k more goes to the most important stream first.
    assert allocate(ROOM, 1_100_000) == {"a1": 0, "a2": 0, "cam1": 1, "cam2": 0, "cam3": 0}
    assert allocate(ROOM, 1_500_000) == {"a1": 0, "a2": 0, "cam1": 1, "cam2": 1, "cam3": 0}


def test_what_does_not_fit_is_paused_lowest_priority_first_and_audio_is_always_kept() -> None:
    assert allocate(ROOM, 500_000) == {"a1": 0, "a2": 0, "cam1": 0, "cam2": 0, "cam3": None}
    assert allocate(ROOM, 300_000) == {"a1": 0, "a2": 0, "cam1": 0, "cam2": None, "cam3": None}
    # Not even the speaker's lowest layer: every video paused, audio kept (even beyond).
    assert allocate(ROOM, 50_000) == {"a1": 0, "a2": 0, "cam1": None, "cam2": None, "cam3": None}
    # A budget to keep video that is wider than the one for upgrades (loss): kept, not raised.
    assert allocate(ROOM, 50_000, 720_000) == {
        "a1": 0,
        "a2": 0,
        "cam1": 0,
        "cam2": 0,
        "cam3": 0,
    }
    assert cost(ROOM, allocate(ROOM, 1_100_000)) == 80_000 + 500_000 + 150_000 + 300_000


def test_estimate_starts_sane_follows_remb_and_grows_once_remb_stops() -> None:
    e = DownlinkEstimate(POLICY)
    assert e.value(0.0) == POLICY.start_bps and e.stale(0.0)
    e.on_remb(600_000, 1.0)
    assert e.value(1.5) == 600_000 and not e.stale(1.5)
    # No REMB for a while (its video is paused, so the receiver estimates nothing): it grows.
    assert e.value(1.0 + POLICY.stale_after_s) == 600_000
    assert e.value(2.0 + POLICY.stale_after_s) == 600_000 * POLICY.stale_growth
    e.on_remb(10, 10.0)
    assert e.value(10.0) == POLICY.min_bps


def test_sustained_loss_lowers_the_estimate_and_low_loss_lets_it_grow_back() -> None:
    e = DownlinkEstimate(POLICY)
    e.on_remb(2_000_000, 0.0)
    e.on_loss(0.15, 1_000_000, 0.0)  # one report is smoothed: 9 % is not above 10 %
    assert e.value(0.0) == 2_000_000
    e.on_loss(0.3, 1_000_000, 0.0)  # 0.4 x 9 % + 0.6 x 30 % = 21.6 %
    capped = e.value(0.0)
    assert capped == pytest.approx(1_000_000 * (1 - 0.216 / 2))  # from what was sent
    assert e.delay_value(0.0) == 2_000_000
    e.on_loss(0.3, 1_000_000, 0.5)  # acts at most once per interval
    assert e.value(0.5) == capped
    e.on_loss(0.0, 900_000, 1.0)
    lowest = e.value(1.0)
    assert lowest < capped  # smoothed loss still above 10 % at 1 s: lowered once more
    e.on_loss(0.0, 900_000, 2.0)
    assert POLICY.loss_low < e.loss < POLICY.loss_high and e.value(2.0) == lowest
    e.on_loss(0.0, 900_000, 3.0)
    assert e.loss < POLICY.loss_low
    assert e.value(3.0) == lowest * POLICY.loss_growth  # grows again, once per interval
    for t in range(4, 20):
        e.on_loss(0.0, 900_000, float(t))
    e.on_remb(2_000_000, 20.0)
    assert e.loss_cap_bps is None and e.value(20.0) == 2_000_000  # back under the REMB
    # Loss between the two thresholds changes nothing.
    e.on_loss(0.05, 900_000, 21.0)
    e.on_loss(0.05, 900_000, 22.0)
    assert e.loss_cap_bps is None


def _estimate(bps: int, now: float = 0.0) -> DownlinkEstimate:
    e = DownlinkEstimate(POLICY)
    e.on_remb(bps, now)
    return e


def test_drops_at_once_rises_one_layer_at_a_time_after_a_hold() -> None:
    a = Allocator(DownlinkPolicy(probe=False))
    high = _estimate(10_000_000)
    assert a.decide(ROOM, high, 0, 0.0)["cam1"] == 2  # the first decision is taken whole
    low = _estimate(875_000, 1.0)  # 80 % of it: only the lowest layers fit
    assert a.decide(ROOM, low, 2_000_000, 1.0) == {
        "a1": 0,
        "a2": 0,
        "cam1": 0,
        "cam2": 0,
        "cam3": 0,
    }
    back = _estimate(10_000_000, 1.2)
    # Held down after the drop, then one layer of one stream per step.
    assert a.decide(ROOM, back, 700_000, 1.2)["cam1"] == 0
    assert a.decide(ROOM, back, 700_000, 1.0 + POLICY.hold_s - 0.1)["cam1"] == 0
    t = 1.0 + POLICY.hold_s
    assert a.decide(ROOM, back, 700_000, t) == {**a.current, "cam1": 1, "cam2": 0}
    assert a.decide(ROOM, back, 700_000, t + 0.5)["cam1"] == 1
    assert a.decide(ROOM, back, 700_000, t + 1.0)["cam1"] == 2
    assert a.decide(ROOM, back, 700_000, t + 2.0)["cam2"] == 1


def test_paused_video_resumes_at_its_lowest_layer_within_a_few_seconds() -> None:
    a = Allocator(DownlinkPolicy(probe=False))
    a.decide(ROOM, _estimate(10_000_000), 0, 0.0)
    paused = a.decide(ROOM, _estimate(60_000, 1.0), 2_000_000, 1.0)
    assert paused == {"a1": 0, "a2": 0, "cam1": None, "cam2": None, "cam3": None}
    back = _estimate(10_000_000, 2.0)
    times = {}
    t = 2.0
    while t < 12.0:
        result = a.decide(ROOM, back, 100_000, t)
        for key in ("cam1", "cam2", "cam3"):
            if result[key] is not None and key not in times:
                times[key] = t
                assert result[key] == 0  # back at the lowest layer first
        t += 0.25
    # In priority order, one step at a time, the first after the hold.
    assert times["cam1"] == 1.0 + POLICY.hold_s
    assert times["cam1"] < times["cam2"] < times["cam3"] <= 1.0 + POLICY.hold_s + 5


def test_flapping_doubles_the_hold_and_a_changing_link_does_not() -> None:
    a = Allocator(DownlinkPolicy(probe=False))
    e = _estimate(1_000_000)
    cheap = [*AUDIO, Stream("cam1", "video", (150_000, 500_000))]
    # Measured once it is sent, the top layer costs more than the estimate holds.
    dear = [*AUDIO, Stream("cam1", "video", (150_000, 1_200_000))]
    a.decide(dear, e, 0, 0.0)
    assert a.current["cam1"] == 0
    t = 0.0
    holds = []
    for _ in range(3):
        rise_at = t + a.hold_s
        holds.append(a.hold_s)
        assert a.decide(cheap, _estimate(1_000_000, rise_at), 0, rise_at)["cam1"] == 1
        t = rise_at + 1.0
        assert a.decide(dear, _estimate(1_000_000, t), 0, t)["cam1"] == 0
    assert holds == [POLICY.hold_s, 2 * POLICY.hold_s, 4 * POLICY.hold_s]
    # The estimate itself falling and coming back is followed, the hold never longer.
    b = Allocator(DownlinkPolicy(probe=False))
    b.decide(cheap, e, 0, 0.0)
    assert b.decide(cheap, _estimate(300_000, 1.0), 0, 1.0)["cam1"] == 0
    for i in range(3):
        up = 10.0 * (i + 1)
        assert b.decide(cheap, _estimate(1_000_000, up), 0, up)["cam1"] == 1
        down = up + 1.0  # within a probe's window, but the estimate fell
        assert b.decide(cheap, _estimate(300_000, down), 0, down)["cam1"] == 0
        assert b.hold_s == POLICY.hold_s


def test_an_estimate_at_its_receivers_ceiling_is_probed_one_layer_above() -> None:
    a = Allocator(POLICY)
    streams = [*AUDIO, SPEAKER]
    # Sending 230k (audio and the lowest layer), the receiver says 1.5 x 230k + 10k: all it
    # can say, though only the lowest layer fits it.
    e = _estimate(355_000)
    assert a.decide(streams, e, 230_000, 0.0)["cam1"] == 0
    assert e.at_ceiling(230_000, 0.0)
    t = POLICY.step_s
    assert a.decide(streams, e, 230_000, t)["cam1"] == 1  # the probe
    # Within its window the probe keeps what it took, though it does not fit.
    assert a.decide(streams, e, 580_000, t + 1.0)["cam1"] == 1
    # The REMB did not move: the probe failed, back down, and the hold doubles.
    t2 = t + POLICY.probe_window_s
    assert a.decide(streams, e, 580_000, t2)["cam1"] == 0
    assert a.hold_s == 2 * POLICY.hold_s
    # Next time the REMB grows with what arrives: the layer is kept, then fits.
    t3 = t2 + a.hold_s
    assert a.decide(streams, _estimate(355_000, t3), 230_000, t3)["cam1"] == 1
    grown = _estimate(450_000, t3 + POLICY.probe_window_s)
    assert a.decide(streams, grown, 580_000, t3 + POLICY.probe_window_s)["cam1"] == 1
    fits = _estimate(740_000, t3 + POLICY.probe_window_s + 1)
    assert a.decide(streams, fits, 580_000, t3 + POLICY.probe_window_s + 1)["cam1"] == 1
    assert a.probe_since is None and a.failures == 0


def test_an_estimate_below_its_ceiling_is_not_probed() -> None:
    a = Allocator(POLICY)
    streams = [*AUDIO, SPEAKER]
    for step in range(20):
        # Sending 230k, the receiver could say 355k: it says less, and says it again.
        e = _estimate(300_000, step * 0.5)
        assert not e.at_ceiling(230_000, step * 0.5)
        assert a.decide(streams, e, 230_000, step * 0.5)["cam1"] == 0


def test_with_every_video_paused_a_repeated_remb_below_its_ceiling_is_probed() -> None:
    """A browser estimates from video alone: with all of it paused, it repeats its last REMB,
    below the ceiling of the audio it receives, for ever; only a probe finds the room."""
    a = Allocator(POLICY)
    streams = [*AUDIO, SPEAKER, QUIET]
    a.decide(streams, _estimate(1_000_000), 0, 0.0)
    paused = a.decide(streams, _estimate(70_000, 1.0), 80_000, 1.0)
    assert paused["cam1"] is None and paused["cam2"] is None
    t, probed = 1.0, None
    while t < 1.0 + a.hold_s + POLICY.step_s + 0.5:
        e = _estimate(70_000, t)  # fresh, unchanged, under 1.5 x 80k + 10k
        assert not e.at_ceiling(80_000, t)
        result = a.decide(streams, e, 80_000, t)
        if result["cam1"] is not None and probed is None:
            probed = t
            assert result == {"a1": 0, "a2": 0, "cam1": 0, "cam2": None}
            break
        t += 0.25
    assert probed is not None and probed <= 1.0 + POLICY.hold_s + POLICY.step_s
    # The resumed key frame reads as a queue: the REMB dips, then grows with what arrives.
    # A probe from nothing measured is judged from its lowest REMB, so it holds.
    for i, remb in enumerate((60_000, 64_000, 70_000, 80_000)):
        now = probed + 0.5 * (i + 1)
        assert a.decide(streams, _estimate(remb, now), 230_000, now)["cam1"] == 0
    end = probed + POLICY.probe_window_s
    assert a.decide(streams, _estimate(90_000, end), 230_000, end)["cam1"] == 0
    assert a.probe_since == end  # judged again a window later
    # With loss the link is known to be short: no probe into it.
    b = Allocator(POLICY)
    b.decide(streams, _estimate(1_000_000), 0, 0.0)
    lossy = _estimate(70_000, 1.0)
    lossy.loss = 0.2
    b.decide(streams, lossy, 80_000, 1.0)
    for step in range(40):
        lossy.remb_at = 1.0 + step * 0.25
        assert b.decide(streams, lossy, 80_000, 1.0 + step * 0.25)["cam1"] is None


def test_a_probe_ends_at_once_when_the_estimate_falls() -> None:
    a = Allocator(POLICY)
    streams = [*AUDIO, SPEAKER]
    e = _estimate(355_000)
    a.decide(streams, e, 230_000, 0.0)
    assert a.decide(streams, e, 230_000, POLICY.step_s)["cam1"] == 1  # the probe
    fell = _estimate(320_000, POLICY.step_s + 0.5)
    assert a.decide(streams, fell, 580_000, POLICY.step_s + 0.5)["cam1"] == 0
    assert a.probe_since is None and a.failures >= 1


def test_a_subscriber_that_sends_no_remb_is_not_limited_but_for_loss() -> None:
    e = DownlinkEstimate(POLICY)
    a = Allocator(POLICY)
    # The start value for a while: what fits 1 Mbit/s.
    assert a.decide(ROOM, e, 0, 0.0) == allocate(ROOM, a.budget(POLICY.start_bps))
    assert a.decide(ROOM, e, 0, 0.0)["cam3"] is not None
    assert a.current["cam1"] == 0 and e.bps(0.0) == POLICY.start_bps
    # No REMB by then: unlimited, everything at once (no steps to climb from a guess).
    t = POLICY.start_s
    assert e.unknown(t) and e.bps(t) is None
    assert a.decide(ROOM, e, 1_000_000, t) == allocate(ROOM, 10_000_000)
    # Loss still lowers it.
    e.on_loss(0.4, 2_000_000, t + 1)
    assert e.bps(t + 1) == int(2_000_000 * (1 - 0.24 / 2))


def test_what_fits_the_whole_estimate_is_kept_and_raised_only_within_its_budget() -> None:
    a = Allocator(DownlinkPolicy(probe=False))
    streams = [*AUDIO, SPEAKER]
    # 580k sent (audio and the middle layer) under a 650k estimate: more than its budget
    # (520k), but within the estimate: kept, not dropped.
    a.decide(streams, _estimate(10_000_000), 0, 0.0)
    assert a.decide(streams, _estimate(650_000, 1.0), 0, 1.0)["cam1"] == 1
    for t in (2.0, 5.0, 10.0):
        assert a.decide(streams, _estimate(650_000, t), 0, t)["cam1"] == 1
    # Under 580k it is dropped, to what fits the estimate.
    assert a.decide(streams, _estimate(570_000, 11.0), 0, 11.0)["cam1"] == 0
    # Back to 650k: not raised, as the middle layer does not fit the budget.
    for t in (14.0, 20.0):
        assert a.decide(streams, _estimate(650_000, t), 0, t)["cam1"] == 0


def test_a_young_connections_low_rembs_lower_layers_but_do_not_pause_video() -> None:
    policy = DownlinkPolicy()
    e = DownlinkEstimate(policy)
    assert e.value(0.0) == e.delay_value(0.0) == policy.start_bps
    e.on_remb(300_000, 1.0)  # what a browser's estimator says before it has measured much
    assert e.value(1.0) == 300_000
    assert e.delay_value(1.0) == policy.start_bps
    e.on_remb(300_000, policy.startup_s)  # repeated once the connection is older
    assert e.delay_value(policy.startup_s) == 300_000


def _own(bps: int, now: float) -> DownlinkEstimate:
    """The SFU's own estimate (transport-wide feedback), which padding probes can raise."""
    e = _estimate(bps, now)
    e.padding = True
    return e


def test_with_its_own_estimate_the_sfu_probes_with_padding_and_never_with_video() -> None:
    a = Allocator(POLICY)
    streams = [*AUDIO, SPEAKER, QUIET]
    a.decide(streams, _own(1_000_000, 0.0), 0, 0.0)
    assert a.decide(streams, _own(100_000, 1.0), 80_000, 1.0)["cam1"] is None
    asked: list[tuple[float, float]] = []
    t = 1.0
    while t < 14.0:
        result = a.decide(streams, _own(100_000, t), 80_000, t)
        assert result["cam1"] is None and result["cam2"] is None  # no video to find out
        if a.probe_bps is not None:
            asked.append((t, a.probe_bps))
            a.probe_bps = None
        t += 0.25
    # The first once the hold after the drop is over, at what the speaker's lowest layer
    # and the audio need (within four fifths), with the margin.
    first, rate = asked[0]
    assert first == 1.0 + POLICY.hold_s
    need = (80_000 + SPEAKER.rates[0]) / (1 - POLICY.repair_share)
    assert rate == pytest.approx(min(need * POLICY.probe_margin, POLICY.probe_growth * 100_000))
    # Each that raised nothing doubles the wait, up to max_padding_probe_s; the hold after a
    # drop does not grow meanwhile.
    gaps = [round(b[0] - a_[0], 2) for a_, b in itertools.pairwise(asked)]
    assert gaps[0] == 2 * POLICY.padding_probe_s
    assert max(gaps) == POLICY.max_padding_probe_s and gaps[-1] == POLICY.max_padding_probe_s
    assert a.hold_s == POLICY.hold_s
    # A probe that raised the estimate: video follows at once, and probing goes on for the
    # next layer at the first pace.
    raised = t = asked[-1][0] + 0.25
    assert a.decide(streams, _own(400_000, t), 80_000, t)["cam1"] == 0
    while a.probe_bps is None and t < raised + 5.0:
        t += 0.25
        assert a.decide(streams, _own(400_000, t), 230_000, t)["cam1"] == 0
    assert a.probe_bps is not None and a.padding_failures == 0
    assert t - raised <= POLICY.step_s + POLICY.padding_probe_s


def test_a_new_speaker_does_not_swap_a_paused_video_for_one_being_sent() -> None:
    """Two speakers taking turns on a downlink with room for one video: the one being sent
    stays; a reorder of priority within a tier must not pause it to resume the other."""
    a = Allocator(POLICY)
    first = [*AUDIO, SPEAKER, QUIET]
    a.decide(first, _estimate(330_000, 0.0), 0, 0.0)
    kept = a.decide(first, _estimate(330_000, 0.5), 330_000, 0.5)
    assert kept["cam1"] == 0 and kept["cam2"] is None
    swapped = [
        *AUDIO,
        Stream("cam1", "video", SPEAKER.rates, 1),
        Stream("cam2", "video", QUIET.rates, 0),
    ]
    for step in range(20):
        now = 1.0 + step * 0.25
        result = a.decide(swapped, _estimate(330_000, now), 330_000, now)
        assert result["cam1"] == 0 and result["cam2"] is None, (now, result)
    # A higher tier (a screen share) still comes first.
    screen = Stream("screen", "video", (150_000,), priority=-TIER)
    result = a.decide([*swapped, screen], _estimate(330_000, 7.0), 330_000, 7.0)
    assert result["screen"] == 0 and result["cam1"] is None


def test_a_resume_that_overshoots_pauses_what_resumed_not_what_was_sent_before() -> None:
    """A screen share sent alone on a short link; a probe raises the estimate and the camera
    resumes; its key frame meets the queue and the estimate falls below even the screen.
    The camera is paused again, the screen keeps its lowest layer for a probe's window
    (the estimate comes back within it), and only a shortfall that lasts pauses it."""
    audio = Stream("a", "audio", (40_000,))
    screen = Stream("screen", "video", (150_000, 400_000), priority=0)
    camera = Stream("cam", "video", (120_000, 300_000), priority=2 * TIER)
    streams = [audio, screen, camera]
    a = Allocator(POLICY)
    a.decide(streams, _own(260_000, 0.0), 0, 0.0)
    t = 0.25
    while t < 4.0:  # settled: the screen at its lowest layer, the camera paused
        assert a.decide(streams, _own(260_000, t), 200_000, t) == {"a": 0, "screen": 0, "cam": None}
        t += 0.25
    raised = a.decide(streams, _own(420_000, t), 200_000, t)
    assert raised == {"a": 0, "screen": 0, "cam": 0}
    fell = t = t + 0.25
    kept = a.decide(streams, _own(185_000, t), 320_000, t)
    assert kept == {"a": 0, "screen": 0, "cam": None}
    while t < fell + POLICY.probe_window_s - 0.5:
        t += 0.25
        assert a.decide(streams, _own(185_000, t), 200_000, t)["screen"] == 0
    # Still short once the window is over: paused.
    t = fell + POLICY.probe_window_s
    assert a.decide(streams, _own(185_000, t), 200_000, t)["screen"] is None

    # High loss besides: no grace.
    b = Allocator(POLICY)
    b.decide(streams, _own(260_000, 0.0), 0, 0.0)
    t = 0.25
    while t < 4.0:
        b.decide(streams, _own(260_000, t), 200_000, t)
        t += 0.25
    assert b.decide(streams, _own(420_000, t), 200_000, t)["cam"] == 0
    lossy = _own(185_000, t + 0.25)
    lossy.loss = 0.3
    assert b.decide(streams, lossy, 320_000, t + 0.25)["screen"] is None
