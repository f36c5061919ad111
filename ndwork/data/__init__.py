"""Long-format frames in, series arrays and sampled windows out.

`Panel` validates a (unique_id, ds, y) frame once and keeps each series as a slice of
one flat array; `windows` gathers training windows by index at every step, so fit's
extra memory grows with windows_batch_size, never with series length.
"""

from ndwork.data.panel import Panel, fill_gaps, future_dates, validate_frame
from ndwork.data.windows import WindowSampler, gather_windows, scale_windows

__all__ = ["Panel", "WindowSampler", "fill_gaps", "future_dates", "gather_windows", "scale_windows",
           "validate_frame"]
