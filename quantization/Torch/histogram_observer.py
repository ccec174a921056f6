"""A histogram observer with torch.ao's L2 range search at a fraction of its calibration cost.

torch.ao's ``HistogramObserver`` spends most of a calibration in ``torch.histc`` (measured on
EfficientNet-Lite0: about 8 ns per activation value, 15 M values per image, several times the
convolutions themselves) and re-bins its 2048-bin histogram whenever a batch widens the range,
which also makes the result depend on batch order. This observer counts every value once into a
fixed fine grid, [-R, R) with R a power of two: a wider batch doubles R, which merges bin pairs
exactly (no re-binning error), and the count is a multiply, a cast and a ``bincount`` (about half
of ``histc``'s cost). At ``calculate_qparams`` the fine histogram is folded onto torch.ao's own
2048 bins over the observed [min, max] and torch.ao's ``_non_linear_param_search`` runs unchanged,
so the range is torch.ao's up to the width of one fine bin.

The same search serves PT2E: torchao keeps its own copy of the observer classes (its convert only
accepts torchao observers), so :func:`pt2e_fast_histogram_observer` puts this one over torchao's
``HistogramObserver``; both copies share the search and error functions this relies on.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch.ao.quantization.observer import HistogramObserver

FINE_BINS = 16384  # over [-R, R): the observed [min, max] spans at least R/2, i.e. >= 2 fine bins per torch.ao bin
CHUNK = 1 << 20  # values per pass: the scratch buffers (4 MiB each) stay in cache
_SCRATCH: list[torch.Tensor] = []


def _scratch() -> tuple[torch.Tensor, torch.Tensor]:
    """One float32 and one int32 buffer of CHUNK values, shared by every observer of the process."""
    if not _SCRATCH:
        with torch.inference_mode(False):  # normal tensors: writable inside and outside inference mode
            _SCRATCH.extend((torch.empty(CHUNK), torch.empty(CHUNK, dtype=torch.int32)))
    return _SCRATCH[0], _SCRATCH[1]


class _FastHistogram:
    """torch.ao's HistogramObserver range search over an exact, order-independent histogram (a mixin over
    torch.ao's or torchao's ``HistogramObserver``).

    The qparams are kept until the next observed batch: FX calls ``calculate_qparams`` once per node
    that shares this observer (a conv and the ReLU6 after it), and the search is the slow part of it."""

    def __init__(self, bins: int = 2048, fine_bins: int = FINE_BINS, **kwargs) -> None:
        super().__init__(bins=bins, **kwargs)
        if fine_bins % 4 or fine_bins < 4 * bins:
            raise ValueError(f"fine_bins must be a multiple of 4 and at least 4 x bins (got {fine_bins})")
        self.fine_bins = fine_bins
        # fine_bins counts over [-R, R), plus one slot for float rounding just below R (see _count)
        self.register_buffer("fine_histogram", torch.zeros(fine_bins + 1, dtype=torch.int64))
        self.register_buffer("fine_range", torch.tensor(0.0))  # R; 0 = nothing observed yet
        self._half = torch.tensor(fine_bins / 2.0)
        self._batches = 0
        self._qparams: tuple[int, tuple[torch.Tensor, torch.Tensor]] | None = None

    def _grow(self, absmax: float) -> None:
        """Double R until it covers ``absmax``; each doubling sums bin pairs into the middle half."""
        if float(self.fine_range) == 0.0:
            exponent = math.frexp(absmax)[1] if absmax > 0 else -126  # 2**exponent > absmax
            self.fine_range.fill_(2.0 ** exponent)
            return
        hist = self.fine_counts()
        quarter = self.fine_bins // 4
        while float(self.fine_range) <= absmax:
            merged = torch.zeros_like(hist)
            merged[quarter:3 * quarter] = hist.view(-1, 2).sum(1)
            hist = merged
            self.fine_range.mul_(2.0)
        self.fine_histogram.zero_()
        self.fine_histogram[:-1] = hist

    def fine_counts(self) -> torch.Tensor:
        """The fine_bins counts, the rounding slot added to the last bin."""
        counts = self.fine_histogram[:-1].clone()
        counts[-1] += self.fine_histogram[-1]
        return counts

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        return self._observe(x_orig, None)

    def observe_clamped(self, x_orig: torch.Tensor, low: float, high: float) -> torch.Tensor:
        """What ``forward(x_orig.clamp(low, high))`` records, without the clamped copy of the activation.

        FX's clamp-aware observers (fx_quantizer.observe_clamped_ranges) see mostly conv outputs in
        front of a ReLU6; the copy was a second pass plus a fresh batch-sized buffer per call. Here the
        clamp goes onto the scalar range and, chunk by chunk, into the index space of the count:
        x -> x * N / 2R + N / 2 is monotonic, so clamping before or after it gives the same bin."""
        return self._observe(x_orig, (low, high))

    def _observe(self, x_orig: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach().float()
        x_min, x_max = torch.aminmax(x)
        if bounds is not None:
            x_min, x_max = x_min.clamp(*bounds), x_max.clamp(*bounds)  # infinities land on the bounds
        if not (torch.isfinite(x_min) and torch.isfinite(x_max)):  # as torch.ao: infinities are ignored
            if bounds is not None:  # a NaN: the plain path on the clamped copy decides, as before
                self._observe(x.clamp(*bounds), None)
                return x_orig
            x = x[torch.isfinite(x)]
            if x.numel() == 0:
                return x_orig
            x_min, x_max = torch.aminmax(x)
        absmax = max(-float(x_min), float(x_max))
        if absmax >= float(self.fine_range):
            self._grow(absmax)
        self.min_val.copy_(torch.minimum(self.min_val, x_min))
        self.max_val.copy_(torch.maximum(self.max_val, x_max))
        self._count(x.reshape(-1), bounds)
        self._batches += 1
        return x_orig

    def _count(self, values: torch.Tensor, bounds: tuple[float, float] | None = None) -> None:
        """Add ``values`` (all inside (-R, R), or clamped to ``bounds`` inside it) to the fine histogram.

        index = floor(x * N / 2R + N / 2), N / 2R a power of two; |x| < R puts it in [0, N], and N itself
        (float rounding just below R) lands in the extra last slot. The values go through in chunks
        with reused scratch buffers: fresh batch-sized temporaries cost more in page faults than the
        arithmetic. ``bincount`` counts a chunk in 1.3 ns a value where ``index_add_`` of ones took 2.2 and
        ``histc`` 7.7 (AMD EPYC, AVX2, 2 threads): the counting is most of a calibration, so it matters."""
        scale = self.fine_bins / (2.0 * float(self.fine_range))
        floats, indices = _scratch()
        slots = self.fine_histogram.numel()
        # scale is a power of two, so half + scale * bound (the bound as the float32 clamp would make it)
        # is exact in double and rounds once to the float32 a chunk value equal to the bound gets
        index_bounds = None if bounds is None else tuple(float(self._half) + scale * float(np.float32(b))
                                                         for b in bounds)
        for start in range(0, values.numel(), CHUNK):
            chunk = values[start:start + CHUNK]
            n = chunk.numel()
            torch.add(self._half, chunk, alpha=scale, out=floats[:n])
            if index_bounds is not None:
                floats[:n].clamp_(*index_bounds)
            indices[:n].copy_(floats[:n])
            self.fine_histogram += torch.bincount(indices[:n], minlength=slots)

    def fold_histogram(self) -> None:
        """torch.ao's ``histogram`` (``bins`` bins over [min_val, max_val]) from the fine one.

        Each fine bin is spread evenly over ``upsample_rate`` points (as torch.ao does when it
        re-bins), so a fine bin across a coarse bin edge splits its count between the two."""
        lo, hi = float(self.min_val), float(self.max_val)
        rate = self.upsample_rate
        width = 2.0 * float(self.fine_range) / self.fine_bins
        fine = self.fine_counts()
        nonzero = torch.nonzero(fine).flatten()
        counts = fine[nonzero].double().repeat_interleave(rate) / rate
        points = (-float(self.fine_range) + nonzero.double() * width).repeat_interleave(rate)
        points += (torch.arange(rate, dtype=torch.float64) + 0.5).repeat(len(nonzero)) * (width / rate)
        if hi > lo:
            index = ((points - lo) * (self.bins / (hi - lo))).floor().long().clamp_(0, self.bins - 1)
        else:
            index = torch.zeros_like(points, dtype=torch.long)
        folded = torch.bincount(index, weights=counts, minlength=self.bins).to(self.histogram.dtype)
        self.histogram.detach_().resize_(folded.shape)
        self.histogram.copy_(folded)

    def _non_linear_param_search(self) -> tuple[torch.Tensor, torch.Tensor]:
        """torch.ao's search, step for step, and its own error function; only its bin scans, which index
        a tensor element by element (most of its ~90 ms per observer), are bisections on a list."""
        import bisect

        if self.histogram.size()[0] != self.bins:
            raise AssertionError("bins mismatch")
        total = torch.sum(self.histogram).item()
        csum = torch.cumsum(self.histogram, dim=0).tolist()  # torch's own sums: the same bins as torch.ao
        stepsize, alpha, beta = 1e-5, 0.0, 1.0
        start_bin, end_bin, norm_min = 0, self.bins - 1, float("inf")
        while alpha < beta:
            next_alpha, next_beta = alpha + stepsize, beta - stepsize
            low = float(np.float32(next_alpha * total))
            high = float(np.float32(next_beta * total))
            left = min(max(start_bin, bisect.bisect_left(csum, low)), end_bin)
            right = max(min(end_bin, bisect.bisect_right(csum, high) - 1), start_bin)
            next_start_bin, next_end_bin = start_bin, end_bin
            if (left - start_bin) > (end_bin - right):
                next_start_bin, alpha = left, next_alpha
            else:
                next_end_bin, beta = right, next_beta
            if next_start_bin == start_bin and next_end_bin == end_bin:
                continue
            norm = self._compute_quantization_error(next_start_bin, next_end_bin)
            if norm > norm_min:
                break
            norm_min, start_bin, end_bin = norm, next_start_bin, next_end_bin
        width = (self.max_val - self.min_val) / self.bins
        return self.min_val + width * start_bin, self.min_val + width * (end_bin + 1)

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        if self._qparams is not None and self._qparams[0] == self._batches:
            return self._qparams[1]
        if float(self.fine_range) > 0.0:
            self.fold_histogram()
        qparams = super().calculate_qparams()
        self._qparams = (self._batches, qparams)
        return qparams


class FastHistogramObserver(_FastHistogram, HistogramObserver):
    """The fast histogram observer for torch.ao FX and eager mode."""


@functools.cache
def pt2e_fast_histogram_observer() -> type:
    """The same observer over torchao's ``HistogramObserver``, for PT2E (imported on first use: torchao is
    only needed by the PT2E toolchain)."""
    from torchao.quantization.pt2e.observer import HistogramObserver as TorchaoHistogramObserver

    return type("Pt2eFastHistogramObserver", (_FastHistogram, TorchaoHistogramObserver),
                {"__doc__": "The fast histogram observer for PT2E (torchao's observer classes).",
                 "__module__": __name__})
