"""The benchmarks' pure parts: the ideal batching server, arrivals, the Azure LLM trace."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from bench.arrivals import compress, ideal_batching, percentile, poisson, read_azure_llm, words_for

if TYPE_CHECKING:
    from pathlib import Path


def test_one_request_takes_one_item_time() -> None:
    assert ideal_batching([2.0], rate=10) == pytest.approx([0.1])


def test_requests_waiting_together_share_one_batch() -> None:
    assert ideal_batching([0.0, 0.0, 0.0], rate=10) == pytest.approx([0.3, 0.3, 0.3])


def test_the_server_starts_at_once_and_batches_what_queued_meanwhile() -> None:
    # 0: alone, done at 0.1; 0.05 and 0.1 wait and go together at 0.1, done at 0.3;
    # 0.5 finds the server idle, done at 0.6.
    latencies = ideal_batching([0.0, 0.05, 0.1, 0.5], rate=10)
    assert latencies == pytest.approx([0.1, 0.25, 0.2, 0.1])


def test_a_batch_holds_at_most_max_batch() -> None:
    # Five at once, two per batch, half a second per item: done at 1, 1, 2, 2, 2.5.
    latencies = ideal_batching([0.0] * 5, rate=2, max_batch=2)
    assert latencies == pytest.approx([1.0, 1.0, 2.0, 2.0, 2.5])


def test_no_requests_no_latencies() -> None:
    assert ideal_batching([], rate=1) == []


@pytest.mark.parametrize(
    ("arrivals", "rate", "max_batch"),
    [([0.0], 0.0, 32), ([0.0], 1.0, 0), ([1.0, 0.5], 1.0, 32)],
)
def test_bad_input_is_refused(arrivals: list[float], rate: float, max_batch: int) -> None:
    with pytest.raises(ValueError):
        ideal_batching(arrivals, rate, max_batch)


def test_poisson_arrivals_are_seeded_ordered_and_at_the_rate() -> None:
    times = poisson(1000.0, 10.0, seed=3)
    assert times == poisson(1000.0, 10.0, seed=3)
    assert times != poisson(1000.0, 10.0, seed=4)
    assert times == sorted(times) and 0 <= times[0] and times[-1] < 10.0
    assert len(times) == pytest.approx(10_000, rel=0.05)  # sd 100: 5 sd either side


def test_compress_scales_to_the_mean_rate_and_keeps_the_window() -> None:
    # Four requests over 3 s at 2/s last 2 s: every time scaled by 2/3.
    assert compress([10.0, 11.0, 12.0, 13.0], mean_rate=2.0, window=1.5) == pytest.approx(
        [0.0, 2 / 3, 4 / 3]
    )
    with pytest.raises(ValueError):
        compress([1.0, 1.0], mean_rate=2.0, window=10)


def test_words_for_a_request() -> None:
    assert [words_for(t) for t in (1600, 3000, 800, 15, 3, 0)] == [200, 200, 100, 1, 1, 1]


def test_read_azure_llm_orders_by_time(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:47.1805900,10,1\n"
        "2023-11-16 18:15:46.9305900,20,2\n"
    )
    arrivals, tokens = read_azure_llm(path)
    assert arrivals == pytest.approx([0.0, 0.25, 0.5])
    assert tokens == [374, 20, 10]


def test_read_azure_llm_refuses_an_empty_trace(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n")
    with pytest.raises(ValueError, match="no requests"):
        read_azure_llm(path)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(10, 0, -1)]
    assert percentile(values, 0.5) == 6.0
    assert percentile(values, 0.99) == 10.0
    assert percentile(values, 0.0) == 1.0
