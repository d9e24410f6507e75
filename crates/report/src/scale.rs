//! Axis scales: round tick values that cover the data, and the mapping from data values to
//! chart coordinates.
//!
//! Linear axes step by 1, 2 or 5 times a power of ten so a reader can interpolate between
//! gridlines in their head; log axes tick at powers of ten. The drawn domain is widened to the
//! outer ticks, so the first and last gridlines frame the data rather than cutting it.

/// How many intervals a linear axis aims for: enough gridlines to read values off, few
/// enough that labels on a 720-unit chart never collide.
const TARGET_INTERVALS: f64 = 5.0;

/// The most ticks a log axis shows before it starts skipping decades, for the same reason.
const MAX_LOG_TICKS: i32 = 9;

/// Slack when snapping a bound to a tick, so float noise such as `30.000000000000004` does
/// not add a whole empty interval to the axis.
const SNAP: f64 = 1e-9;

/// Round tick values covering `lo..=hi`, first tick at or below `lo`, last at or above `hi`.
///
/// Linear axes step by 1, 2 or 5 times a power of ten; a zero-width range is widened so it
/// still gets a readable axis. Log axes (`log = true`) tick at powers of ten, skipping
/// decades evenly when the range spans more than nine; they need `lo > 0` and return nothing
/// otherwise. Non-finite bounds also return nothing. The bounds may come in either order.
pub fn nice_ticks(lo: f64, hi: f64, log: bool) -> Vec<f64> {
    if !lo.is_finite() || !hi.is_finite() {
        return Vec::new();
    }
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
    if log {
        log_ticks(lo, hi)
    } else {
        linear_ticks(lo, hi)
    }
}

/// Ticks at `k * m * 10^e`, computed from integers so labels come out as the round numbers
/// they are meant to be (`0.3`, not `0.30000000000000004`).
fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (lo, hi) = widen(lo, hi);
    let span = hi - lo;
    if !span.is_finite() {
        // A range near the limits of f64 has no meaningful round steps; frame it as is.
        return vec![lo, hi];
    }
    let (mantissa, exp) = nice_step(span / TARGET_INTERVALS);
    let step = mantissa * pow10(exp);
    let first = (lo / step + SNAP).floor();
    let last = (hi / step - SNAP).ceil();
    if !(first.is_finite() && last.is_finite()) || last - first > 100.0 {
        return vec![lo, hi];
    }
    let (first, last) = (first as i64, last as i64);
    (first..=last)
        .map(|k| {
            let units = k as f64 * mantissa;
            // Dividing by an exact power of ten rounds once; multiplying by 0.1 rounds twice.
            if exp >= 0 {
                units * pow10(exp)
            } else {
                units / pow10(-exp)
            }
        })
        .collect()
}

/// A range of zero width (one distinct value) would give a zero step; open it up around the
/// value so the single point lands mid-axis.
fn widen(lo: f64, hi: f64) -> (f64, f64) {
    if hi > lo {
        (lo, hi)
    } else if lo == 0.0 {
        (0.0, 1.0)
    } else {
        let d = lo.abs() * 0.1;
        (lo - d, hi + d)
    }
}

/// The 1-2-5 step at or above `raw`, as (mantissa, power of ten).
fn nice_step(raw: f64) -> (f64, i32) {
    let exp = raw.log10().floor() as i32;
    let frac = raw / pow10(exp);
    match frac {
        f if f <= 1.0 + SNAP => (1.0, exp),
        f if f <= 2.0 + SNAP => (2.0, exp),
        f if f <= 5.0 + SNAP => (5.0, exp),
        _ => (1.0, exp + 1),
    }
}

/// Powers of ten from `floor(log10 lo)` to `ceil(log10 hi)`, at a stride that keeps at most
/// [`MAX_LOG_TICKS`] of them.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if lo <= 0.0 {
        return Vec::new();
    }
    let e0 = (lo.log10() + SNAP).floor() as i32;
    let mut e1 = (hi.log10() - SNAP).ceil() as i32;
    if e1 <= e0 {
        e1 = e0 + 1;
    }
    let span = e1 - e0;
    let stride = (span + MAX_LOG_TICKS - 2) / (MAX_LOG_TICKS - 1);
    let steps = (span + stride - 1) / stride;
    (0..=steps).map(|k| pow10(e0 + k * stride)).collect()
}

/// `10^e` as the nearest double: negative powers divide so `0.01` is exactly the literal.
fn pow10(e: i32) -> f64 {
    if e >= 0 {
        10f64.powi(e)
    } else {
        1.0 / 10f64.powi(-e)
    }
}

/// Maps data values on one axis to chart coordinates between two pixel positions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    lo: f64,
    hi: f64,
    log: bool,
    px0: f64,
    px1: f64,
}

impl Scale {
    /// A scale whose domain is the outer ticks, drawn from `px0` (at the first tick) to `px1`.
    pub(crate) fn new(ticks: &[f64], log: bool, px0: f64, px1: f64) -> Self {
        let lo = ticks.first().copied().unwrap_or(0.0);
        let hi = ticks.last().copied().unwrap_or(1.0);
        Self {
            lo,
            hi,
            log,
            px0,
            px1,
        }
    }

    /// The coordinate of `v`; callers pass only values the axis can show (positive on log).
    pub(crate) fn at(&self, v: f64) -> f64 {
        let t = |v: f64| if self.log { v.log10() } else { v };
        let (a, b) = (t(self.lo), t(self.hi));
        if b == a {
            return (self.px0 + self.px1) / 2.0;
        }
        self.px0 + (t(v) - a) / (b - a) * (self.px1 - self.px0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_one_two_five() {
        assert_eq!(nice_step(0.7), (1.0, 0));
        assert_eq!(nice_step(1.3), (2.0, 0));
        assert_eq!(nice_step(37.0), (5.0, 1));
        assert_eq!(nice_step(7.4), (1.0, 1));
    }

    #[test]
    fn decimal_ticks_are_exact_literals() {
        assert_eq!(
            nice_ticks(0.0, 0.5, false),
            vec![0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
        );
    }

    #[test]
    fn wide_log_ranges_skip_decades() {
        let t = nice_ticks(1e-3, 1e15, true);
        assert!(t.len() <= MAX_LOG_TICKS as usize, "{t:?}");
        assert!(t[0] <= 1e-3 && *t.last().expect("ticks") >= 1e15, "{t:?}");
    }

    #[test]
    fn scale_maps_ends_and_middle() {
        let s = Scale::new(&[1.0, 10.0, 100.0], true, 0.0, 200.0);
        assert!((s.at(10.0) - 100.0).abs() < 1e-9);
        let s = Scale::new(&[0.0, 10.0], false, 300.0, 100.0);
        assert!((s.at(5.0) - 200.0).abs() < 1e-9);
    }
}
