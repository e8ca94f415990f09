import numpy as np
import pytest

from unisim.schemas.controls import ControlStats, ControlTokenizer


def _stats(values, names=("x", "y")):
    return ControlStats.from_values(names, np.asarray(values, np.float32))


def test_bounds_are_robust_percentiles_not_outlier_extremes():
    rng = np.random.default_rng(0)
    values = rng.uniform(-0.1, 0.1, (10_000, 2)).astype(np.float32)
    values[:5] = 1e6  # a few wild outliers
    values[5] = np.nan  # ignored rows
    stats = _stats(values)
    assert stats.count == 9_999
    assert stats.max[0] == pytest.approx(1e6)
    assert -0.1 < stats.low[0] < -0.095 and 0.095 < stats.high[0] < 0.1


def test_tokens_cover_the_bins_and_round_trip_within_half_a_bin():
    rng = np.random.default_rng(1)
    values = rng.uniform(-0.1, 0.1, (50_000, 2)).astype(np.float32)
    tok = ControlTokenizer(_stats(values))
    tokens = tok.encode(values)
    assert tokens.dtype == np.uint16 and tokens.min() == 0 and tokens.max() == 4095
    inside = ((values >= tok.low) & (values <= tok.high)).all(axis=1)
    error = np.abs(tok.decode(tokens[inside]) - values[inside])
    bound = tok.max_error()
    assert (error <= bound + 1e-8).all()  # + float32 rounding of the decoded value
    assert error.max() > 0.5 * bound.max()  # the bound is tight, not vacuous
    np.testing.assert_allclose(bound, (tok.high - tok.low) / 8192)


def test_values_outside_the_bounds_are_clipped_to_the_end_bins():
    tok = ControlTokenizer(_stats(np.linspace(-1, 1, 1001)[:, None].repeat(2, 1)))
    tokens = tok.encode(np.array([[-50.0, 50.0]], np.float32))
    assert tokens.tolist() == [[0, 4095]]
    decoded = tok.decode(tokens)
    assert decoded[0, 0] == pytest.approx(tok.low[0], abs=float(tok.max_error()[0]) * 1.01)


def test_constant_dimension_maps_to_token_zero_and_decodes_to_the_constant():
    values = np.stack([np.linspace(-1, 1, 100), np.full(100, 0.25)], axis=1)
    tok = ControlTokenizer(_stats(values))
    tokens = tok.encode(values)
    assert (tokens[:, 1] == 0).all()
    assert np.allclose(tok.decode(tokens)[:, 1], 0.25)


def test_encode_refuses_nan_and_wrong_width():
    tok = ControlTokenizer(_stats(np.random.default_rng(2).normal(size=(100, 2))))
    with pytest.raises(ValueError, match="NaN"):
        tok.encode(np.array([[np.nan, 0]], np.float32))
    with pytest.raises(ValueError, match="dims"):
        tok.encode(np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError):
        tok.decode(np.array([[4096, 0]]))


def test_stats_survive_json_and_give_the_same_mapping():
    values = np.random.default_rng(3).normal(size=(500, 2))
    stats = _stats(values)
    again = ControlStats.from_json(stats.to_json())
    assert again == stats
    np.testing.assert_array_equal(ControlTokenizer(again).encode(values), ControlTokenizer(stats).encode(values))


def _sample(chunks, capacity):
    from unisim.schemas.controls import ControlSample, row_hashes

    sample = ControlSample(2, capacity)
    for episode, rows in chunks:
        sample.add(row_hashes(episode, np.arange(len(rows))), rows)
    return sample


def test_control_sample_is_exact_below_capacity_and_order_independent_above():
    rng = np.random.default_rng(5)
    chunks = [(f"ep{i}", rng.normal(size=(int(rng.integers(1, 60)), 2)).astype(np.float32)) for i in range(200)]
    chunks[3][1][5] = np.nan  # non-finite rows are skipped, as before
    every = np.concatenate([rows for _, rows in chunks])
    exact = _sample(chunks, capacity=1 << 20).stats(("x", "y"), 1.0, 99.0)
    assert exact == ControlStats.from_values(("x", "y"), np.sort(every[np.isfinite(every).all(1)], axis=0))
    assert exact.rank_error_bound() == 0.0

    capacity = 500
    forward = _sample(chunks, capacity)
    merged = _sample(chunks[100:], capacity).merge(_sample(chunks[:100][::-1], capacity))
    a, b = forward.stats(("x", "y"), 1.0, 99.0), merged.stats(("x", "y"), 1.0, 99.0)
    assert a == b  # the same rows whatever the order and grouping: equal bytes on reruns
    assert a.count == exact.count and a.min == exact.min and a.max == exact.max  # exact regardless
    assert a.percentile_rows == capacity and len(forward.sample()) == capacity
    finite = every[np.isfinite(every).all(1)]
    bound = a.rank_error_bound(delta=1e-6)
    for dim in range(2):  # each stored percentile is a value whose rank in all the data is within the bound
        for q, value in ((0.01, a.low[dim]), (0.99, a.high[dim])):
            rank = np.mean(finite[:, dim] <= value)
            assert abs(rank - q) <= bound, (dim, q, rank, bound)
    again = ControlStats.from_json(a.to_json())
    assert again == a and again.rank_error_bound() == bound
