"""One-Euro filter (Casiez, Roussel & Vogel, CHI 2012) for landmark streams.

Design choices:
- Standard formulation: a first-order low-pass whose cutoff rises with the (low-passed) speed,
  ``cutoff = min_cutoff + beta * |dx/dt|``; smoothing factor ``alpha = 1 / (1 + tau / dt)`` with
  ``tau = 1 / (2 pi cutoff)``. Slow motion is smoothed hard (jitter removed), fast motion follows
  with little lag.
- Element-wise on numpy arrays of any (fixed) shape, e.g. ``[21, 3]`` landmarks; timestamps in
  seconds, so irregular frame times (dropped frames) are handled. A change of shape, a
  non-increasing timestamp of more than ``reset_after`` seconds back, or ``reset()`` restarts it.
- Pure numpy, no state outside the instance: one filter per tracked hand.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["OneEuroFilter"]


def _alpha(dt: float, cutoff: np.ndarray | float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Speed-adaptive low-pass filter.

    Args:
        min_cutoff: cutoff frequency (Hz) at rest; lower = smoother, more lag when slow.
        beta: speed coefficient; higher = less lag when moving fast.
        d_cutoff: cutoff (Hz) of the derivative estimate.
        reset_after: a timestamp this many seconds before the previous one restarts the filter.
    """

    def __init__(
        self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0, reset_after: float = 1.0
    ) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0:
            raise ValueError("cutoff frequencies must be positive")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.reset_after = float(reset_after)
        self.reset()

    def reset(self) -> None:
        """Forget the history; the next sample passes through unchanged."""
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filter one sample.

        Args:
            x: array of any shape (the same on every call until ``reset``).
            t: timestamp in seconds.
        Returns:
            the filtered array (float64, same shape as ``x``).
        """
        x = np.asarray(x, dtype=np.float64)
        t = float(t)
        if self._x is None or self._x.shape != x.shape or t < self._t - self.reset_after:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        if dt <= 0:  # duplicate (or slightly out-of-order) timestamp: keep the current estimate
            return self._x.copy()
        a_d = _alpha(dt, self.d_cutoff)
        dx = (x - self._x) / dt
        self._dx = a_d * dx + (1.0 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = _alpha(dt, cutoff)
        self._x = a * x + (1.0 - a) * self._x
        self._t = t
        return self._x.copy()

    filter = __call__
