"""Per-step timing summaries shared by the zoo and the diffusers side of the benchmark."""

from __future__ import annotations

import statistics


def record_times(out: dict, times: list[float], batch: int) -> None:
    """Writes the summary of the step times so far (seconds) into ``out``; called after
    every step, so a run stopped by ``timeout`` still reports the steps it timed."""
    median = statistics.median(times)
    out.update(
        timed_steps=len(times),
        step_ms_median=1e3 * median,
        step_ms_min=1e3 * min(times),
        step_ms_max=1e3 * max(times),
        images_per_s=batch / median,
    )
