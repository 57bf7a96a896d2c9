from __future__ import annotations

from sfu.layers import DOWN_COOLDOWN_S, UP_DELAY_S, Layer, LayerChooser

LAYERS = [Layer(0, 180, 150_000), Layer(1, 360, 500_000), Layer(2, 720, 1_500_000)]


def pick(
    c: LayerChooser,
    current: int | None,
    now: float,
    *,
    max_height: int | None = None,
    estimate: float | None = None,
    loss: float = 0.0,
) -> int:
    return c.choose(
        LAYERS, current, max_height=max_height, estimate_bps=estimate, loss=loss, now=now
    )


def test_first_choice_is_highest_that_fits() -> None:
    assert pick(LayerChooser(), None, 0.0) == 2
    assert pick(LayerChooser(), None, 0.0, max_height=360) == 1
    assert pick(LayerChooser(), None, 0.0, max_height=180) == 0
    assert pick(LayerChooser(), None, 0.0, max_height=100) == 0  # smallest there is
    assert pick(LayerChooser(), None, 0.0, estimate=700_000) == 1
    assert pick(LayerChooser(), None, 0.0, estimate=10_000) == 0


def test_a_small_tile_never_gets_a_bigger_layer() -> None:
    c = LayerChooser()
    current = pick(c, None, 0.0, max_height=180)
    for t in range(100):
        current = pick(c, current, t * 0.25, max_height=180, estimate=10_000_000)
        assert current == 0


def test_down_at_once_up_after_a_delay() -> None:
    c = LayerChooser()
    assert pick(c, 2, 0.0, estimate=400_000) == 0  # estimate dropped: straight down
    assert pick(c, 0, 0.5, estimate=5_000_000) == 0  # it recovered: wait
    assert pick(c, 0, 0.5 + UP_DELAY_S / 2, estimate=5_000_000) == 0
    assert pick(c, 0, 0.5 + UP_DELAY_S, estimate=5_000_000) == 2
    # A blip in between restarts the wait.
    c = LayerChooser()
    assert pick(c, 0, 0.0, estimate=5_000_000) == 0
    assert pick(c, 0, 1.0, estimate=100_000) == 0
    assert pick(c, 0, 1.5, estimate=5_000_000) == 0
    assert pick(c, 0, 1.5 + UP_DELAY_S - 0.01, estimate=5_000_000) == 0


def test_loss_steps_down_once_per_cooldown() -> None:
    c = LayerChooser()
    assert pick(c, 2, 0.0, loss=0.3) == 1
    assert pick(c, 1, 0.2, loss=0.3) == 1  # cooling down
    assert pick(c, 1, DOWN_COOLDOWN_S, loss=0.3) == 0
    assert pick(c, 0, 2 * DOWN_COOLDOWN_S, loss=0.3) == 0  # nothing lower
    assert pick(c, 0, 3.0, loss=0.0) == 0
    assert pick(c, 0, 3.0 + UP_DELAY_S, loss=0.0) == 2
