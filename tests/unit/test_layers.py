from __future__ import annotations

from sfu.layers import UNMEASURED_FACTOR, Layer, allowed, rates

LAYERS = [Layer(0, 180, 150_000), Layer(1, 360, 500_000), Layer(2, 720, 1_500_000)]


def test_allowed_layers_fit_the_tile() -> None:
    assert allowed(LAYERS, None) == LAYERS
    assert allowed(LAYERS, 360) == LAYERS[:2]
    assert allowed(LAYERS, 180) == LAYERS[:1]
    assert allowed(LAYERS, 100) == LAYERS[:1]  # the smallest there is
    # A screen share's layers share one height (they differ in frame rate): a tile below it
    # still gets all three to choose from.
    screen = [Layer(q, 1080, 200_000.0 * (q + 1)) for q in range(3)]
    assert allowed(screen, 400) == screen
    assert allowed(screen, 1080) == screen
    assert allowed([], 400) == []


def test_rates_never_fall_and_guess_an_unmeasured_layer() -> None:
    assert rates(LAYERS) == (150_000, 500_000, 1_500_000)
    unmeasured = [LAYERS[0], Layer(1, 360, 0.0), Layer(2, 720, 100_000)]
    guess = 150_000 * UNMEASURED_FACTOR
    assert rates(unmeasured) == (150_000, guess, guess)
    # Below a measured layer: guessed down from it.
    only_top = [Layer(0, 180, 0.0), Layer(1, 360, 0.0), LAYERS[2]]
    assert rates(only_top) == (
        1_500_000 / UNMEASURED_FACTOR**2,
        1_500_000 / UNMEASURED_FACTOR,
        1_500_000,
    )
    assert rates([Layer(0, 180, 0.0)]) == (0.0,)
