/**
 * Library-internal standard normal functions (pdf, cdf, tail, quantile, the
 * partial moments Lloyd–Max needs), accurate to about 1e-15 relative.
 * Web-standard only.
 *
 * erf uses the all-positive series erf x = (2/√π)·e^(−x²)·Σ 2^n x^(2n+1)/(2n+1)!!
 * below x = 2.5, and erfc the continued fraction
 * erfc x = e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))) above.
 *
 * @module
 */

const SQRT_PI = Math.sqrt(Math.PI);
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** erf(x) for x ≥ 0 via the positive series. */
function erfSeries(x: number): number {
  const x2 = x * x;
  let term = x, sum = x;
  for (let n = 1; n < 500; n++) {
    term *= (2 * x2) / (2 * n + 1);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return (2 / SQRT_PI) * Math.exp(-x2) * sum;
}

/** erfc(x) for x ≥ 2.5 via the continued fraction, evaluated backwards. */
function erfcFraction(x: number): number {
  const terms = x < 4 ? 120 : x < 8 ? 60 : 30;
  let f = x;
  for (let k = terms; k >= 1; k--) f = x + k / 2 / f;
  return Math.exp(-x * x) / SQRT_PI / f;
}

/**
 * Complementary error function.
 *
 * @param x Any real.
 * @returns erfc(x) = 1 − erf(x).
 */
export function erfc(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x < 0) return 2 - erfc(-x);
  if (x < 2.5) return 1 - erfSeries(x);
  return erfcFraction(x);
}

/**
 * Standard normal density φ(x).
 *
 * @param x Any real (±∞ gives 0).
 * @returns φ(x).
 */
export function normalPdf(x: number): number {
  return Number.isFinite(x) ? INV_SQRT_2PI * Math.exp(-0.5 * x * x) : 0;
}

/**
 * Standard normal cdf Φ(x), accurate in the lower tail.
 *
 * @param x Any real.
 * @returns Φ(x).
 */
export function normalCdf(x: number): number {
  if (x === -Infinity) return 0;
  if (x === Infinity) return 1;
  return x < 0 ? 0.5 * erfc(-x / Math.SQRT2) : 1 - 0.5 * erfc(x / Math.SQRT2);
}

/**
 * P(a < X < b) for X ~ N(0, 1), computed on the side that avoids cancellation.
 *
 * @param a Lower end (may be −∞).
 * @param b Upper end (may be +∞).
 * @returns The probability.
 */
export function normalInterval(a: number, b: number): number {
  if (a >= 0) return normalCdf(-a) - normalCdf(-b);
  return normalCdf(b) - normalCdf(a);
}

/**
 * Φ⁻¹(p) by bisection on [−40, 40] refined with Newton steps.
 *
 * @param p A probability in (0, 1).
 * @returns x with Φ(x) = p.
 */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) {
    if (p === 0) return -Infinity;
    if (p === 1) return Infinity;
    throw new RangeError(`Cannot take a normal quantile of ${p}: it must be in [0, 1]`);
  }
  if (p > 0.5) return -normalQuantile(1 - p);
  let lo = -40, hi = 0;
  for (let i = 0; i < 80; i++) {
    const mid = 0.5 * (lo + hi);
    if (normalCdf(mid) < p) lo = mid;
    else hi = mid;
  }
  let x = 0.5 * (lo + hi);
  for (let i = 0; i < 3; i++) {
    const d = normalPdf(x);
    if (d === 0) break;
    x -= (normalCdf(x) - p) / d;
  }
  return x;
}

/**
 * E[(X − y)² ; a < X < b] for X ~ N(0, 1): the squared error of mapping the
 * interval (a, b) to the level y, from the partial moments
 * ∫x²φ = P + aφ(a) − bφ(b) and ∫xφ = φ(a) − φ(b).
 *
 * @param a Lower end (may be −∞).
 * @param b Upper end (may be +∞).
 * @param y The level.
 * @returns The contribution to the mean squared error.
 */
export function normalIntervalError(a: number, b: number, y: number): number {
  const p = normalInterval(a, b);
  const pa = normalPdf(a), pb = normalPdf(b);
  const m1 = pa - pb;
  const m2 = p + (Number.isFinite(a) ? a * pa : 0) - (Number.isFinite(b) ? b * pb : 0);
  return m2 - 2 * y * m1 + y * y * p;
}
