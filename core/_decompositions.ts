/**
 * Library-internal symmetric eigendecomposition and thin SVD on raw row-major
 * Float64Arrays (no validation; `linalg.ts` validates). Web-standard only.
 *
 * @module
 */

import { gramRaw, matmulRaw } from "./_dense.ts";

const EPS = 2 ** -52;

/**
 * Exponent k such that multiplying by 2^k brings the largest |x| near 1, or 0
 * when it already lies in [2^-200, 2^200] (where squares neither overflow nor
 * underflow). Scaling by a power of two is exact.
 */
function balancingExponent(x: Float64Array): number {
  let max = 0;
  for (let i = 0; i < x.length; i++) max = Math.max(max, Math.abs(x[i]!));
  if (max === 0 || (max >= 2 ** -200 && max <= 2 ** 200)) return 0;
  return -Math.floor(Math.log2(max));
}

/** x ← x·2^k in place, in two steps so that 2^k itself never overflows. */
function scaleByPowerOfTwo(x: Float64Array, k: number): void {
  const f1 = 2 ** Math.trunc(k / 2), f2 = 2 ** (k - Math.trunc(k / 2));
  for (let i = 0; i < x.length; i++) x[i] = x[i]! * f1 * f2;
}

/** From this many columns on, {@linkcode svdRaw} preconditions with the eigenvectors of AᵀA. */
const PRECONDITION_MIN_COLS = 48;

/**
 * Householder reduction of a symmetric A [n, n] (overwritten) to a tridiagonal
 * T: returns its diagonal `d`, its off-diagonal `e` (e[i] = T[i, i+1]) and the
 * orthogonal Z [n, n] with A = Zᵀ·T·Z.
 *
 * @see Golub and Van Loan, Matrix Computations (4th ed.), Algorithm 8.3.1.
 */
function tridiagonalize(
  a: Float64Array,
  n: number,
): { d: Float64Array; e: Float64Array; z: Float64Array } {
  const d = new Float64Array(n);
  const e = new Float64Array(Math.max(0, n - 1));
  const betas = new Float64Array(n);
  const p = new Float64Array(n);
  // Step k reflects x = A[k, k+1:] (row k equals column k by symmetry) onto
  // α·e₁ with H = I − β·v·vᵀ and updates the trailing block B = A[k+1:, k+1:]
  // to H·B·H = B − v·wᵀ − w·vᵀ, with p = β·B·v and w = p − (β/2)(vᵀp)·v.
  // v overwrites row k's tail so that Z can be accumulated afterwards.
  for (let k = 0; k + 2 < n; k++) {
    const rk = k * n;
    const lo = k + 1;
    d[k] = a[rk + k]!;
    let scale = 0;
    for (let j = lo; j < n; j++) scale += Math.abs(a[rk + j]!);
    if (scale === 0) {
      e[k] = 0;
      betas[k] = 0;
      continue;
    }
    let sigma = 0;
    for (let j = lo; j < n; j++) {
      const v = a[rk + j]! / scale;
      a[rk + j] = v;
      sigma += v * v;
    }
    const x0 = a[rk + lo]!;
    const alpha = x0 >= 0 ? -Math.sqrt(sigma) : Math.sqrt(sigma);
    a[rk + lo] = x0 - alpha;
    const beta = 1 / (sigma - x0 * alpha);
    betas[k] = beta;
    e[k] = alpha * scale;
    // p = β·B·v over the trailing block (rows contiguous)
    let vp = 0;
    for (let i = lo; i < n; i++) {
      const ri = i * n;
      let s = 0;
      for (let j = lo; j < n; j++) s += a[ri + j]! * a[rk + j]!;
      s *= beta;
      p[i] = s;
      vp += a[rk + i]! * s;
    }
    const kk = 0.5 * beta * vp;
    for (let i = lo; i < n; i++) p[i] = p[i]! - kk * a[rk + i]!; // p := w
    for (let i = lo; i < n; i++) {
      const ri = i * n;
      const vi = a[rk + i]!, wi = p[i]!;
      for (let j = lo; j < n; j++) a[ri + j] = a[ri + j]! - vi * p[j]! - wi * a[rk + j]!;
    }
  }
  if (n >= 2) {
    d[n - 2] = a[(n - 2) * n + n - 2]!;
    e[n - 2] = a[(n - 2) * n + n - 1]!;
  }
  if (n >= 1) d[n - 1] = a[(n - 1) * n + n - 1]!;
  // Z = H_{n−3}···H_0 = ((I·H_{n−3})·H_{n−4})···H_0; before multiplying by H_k
  // only rows and columns ≥ k+1 differ from the identity.
  const z = new Float64Array(n * n);
  for (let i = 0; i < n; i++) z[i * n + i] = 1;
  for (let k = n - 3; k >= 0; k--) {
    const beta = betas[k]!;
    if (beta === 0) continue;
    const rk = k * n, lo = k + 1;
    for (let r = lo; r < n; r++) {
      const rr = r * n;
      let s = 0;
      for (let j = lo; j < n; j++) s += z[rr + j]! * a[rk + j]!;
      s *= beta;
      if (s === 0) continue;
      for (let j = lo; j < n; j++) z[rr + j] = z[rr + j]! - s * a[rk + j]!;
    }
  }
  return { d, e, z };
}

/**
 * Diagonalizes the symmetric tridiagonal (d, e) in place by implicit QR steps
 * with Wilkinson shifts, rotating the rows of z [n, n] along (z ← Pᵀ·z).
 *
 * @see Golub and Van Loan, Matrix Computations (4th ed.), Algorithms 8.3.2–8.3.3.
 */
function tridiagonalQr(d: Float64Array, e: Float64Array, z: Float64Array, n: number): void {
  let hi = n - 1;
  let iterations = 0;
  const maxIterations = 50 * Math.max(1, n);
  while (hi > 0) {
    // deflate negligible off-diagonals at the bottom
    if (Math.abs(e[hi - 1]!) <= EPS * (Math.abs(d[hi - 1]!) + Math.abs(d[hi]!))) {
      e[hi - 1] = 0;
      hi--;
      continue;
    }
    let lo = hi - 1;
    while (lo > 0 && Math.abs(e[lo - 1]!) > EPS * (Math.abs(d[lo - 1]!) + Math.abs(d[lo]!))) lo--;
    if (lo > 0) e[lo - 1] = 0;
    if (++iterations > maxIterations) {
      throw new RangeError("Cannot compute eigh() as the QR iteration did not converge");
    }
    // Wilkinson shift: the eigenvalue of the trailing 2×2 block closer to d[hi]
    const dd = (d[hi - 1]! - d[hi]!) / 2;
    const en = e[hi - 1]!;
    const mu = d[hi]! - (en * en) / (dd + (dd >= 0 ? 1 : -1) * Math.hypot(dd, en));
    let x = d[lo]! - mu, y = e[lo]!;
    for (let k = lo; k < hi; k++) {
      // rotation in plane (k, k+1) with first column (c, s) ∝ (x, y)
      const r = Math.hypot(x, y);
      const c = r === 0 ? 1 : x / r, s = r === 0 ? 0 : y / r;
      if (k > lo) e[k - 1] = r;
      const a0 = d[k]!, b0 = e[k]!, f0 = d[k + 1]!;
      const cc = c * c, ss = s * s, cs = c * s;
      d[k] = cc * a0 + 2 * cs * b0 + ss * f0;
      d[k + 1] = ss * a0 - 2 * cs * b0 + cc * f0;
      e[k] = cs * (f0 - a0) + (cc - ss) * b0;
      if (k + 1 < hi) {
        const next = e[k + 1]!;
        y = s * next; // the bulge at (k, k+2)
        e[k + 1] = c * next;
        x = e[k]!;
      }
      const rk = k * n, rk1 = rk + n;
      for (let j = 0; j < n; j++) {
        const zk = z[rk + j]!, zk1 = z[rk1 + j]!;
        z[rk + j] = c * zk + s * zk1;
        z[rk1 + j] = c * zk1 - s * zk;
      }
    }
  }
}

/**
 * Eigendecomposition of a symmetric A [n, n] (overwritten).
 *
 * @returns `values` ascending [n] and `vectors` [n, n] with eigenvectors as columns.
 */
export function eighRaw(
  a: Float64Array,
  n: number,
): { values: Float64Array; vectors: Float64Array } {
  const k = balancingExponent(a);
  if (k !== 0) scaleByPowerOfTwo(a, k);
  const { d, e, z } = tridiagonalize(a, n);
  tridiagonalQr(d, e, z, n);
  // rows of z are the eigenvectors, in the order of d
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => d[i]! - d[j]!);
  const values = new Float64Array(n);
  const vectors = new Float64Array(n * n);
  for (let c = 0; c < n; c++) {
    const src = order[c]!;
    values[c] = d[src]!;
    const rs = src * n;
    for (let r = 0; r < n; r++) vectors[r * n + c] = z[rs + r]!;
  }
  if (k !== 0) scaleByPowerOfTwo(values, -k);
  return { values, vectors };
}

/**
 * Thin SVD of a tall or square A [m, n] (m ≥ n) by one-sided Jacobi.
 *
 * @returns `u` [m, n], `s` [n] descending, `v` [n, n] (singular vectors as columns).
 */
export function svdRaw(
  a: Float64Array,
  m: number,
  n: number,
): { u: Float64Array; s: Float64Array; v: Float64Array } {
  const k = balancingExponent(a);
  if (k !== 0) {
    a = a.slice();
    scaleByPowerOfTwo(a, k);
  }
  // Work on columns as contiguous rows: W = (A·V₀)ᵀ [n, m], Vt = V₀ᵀ [n, n].
  // For larger n, V₀ holds the eigenvectors of AᵀA, so that the columns of A·V₀
  // start nearly orthogonal and the Jacobi sweeps that follow (which set the
  // accuracy) converge in two or three sweeps instead of eight to ten.
  // Otherwise V₀ = I.
  let w: Float64Array, vt: Float64Array;
  if (n >= PRECONDITION_MIN_COLS) {
    const v0 = eighRaw(gramRaw(a, m, n), n).vectors; // [n, n], columns ascending
    const w0 = matmulRaw(a, v0, m, n, n); // [m, n]
    w = new Float64Array(n * m);
    vt = new Float64Array(n * n);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) w[j * m + i] = w0[i * n + j]!;
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) vt[j * n + i] = v0[i * n + j]!;
  } else {
    w = new Float64Array(n * m);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) w[j * m + i] = a[i * n + j]!;
    vt = new Float64Array(n * n);
    for (let i = 0; i < n; i++) vt[i * n + i] = 1;
  }
  const norms = new Float64Array(n);
  const tol = EPS * m;
  for (let sweep = 0; sweep < 60; sweep++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let t = 0; t < m; t++) s += w[j * m + t]! * w[j * m + t]!;
      norms[j] = s;
    }
    let rotated = false;
    for (let i = 0; i < n - 1; i++) {
      const ri = i * m;
      for (let j = i + 1; j < n; j++) {
        const alpha = norms[i]!, beta = norms[j]!;
        if (alpha === 0 || beta === 0) continue;
        const rj = j * m;
        let gamma = 0;
        for (let t = 0; t < m; t++) gamma += w[ri + t]! * w[rj + t]!;
        if (Math.abs(gamma) <= tol * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        // rotation that makes columns i and j orthogonal (Hestenes)
        const zeta = (beta - alpha) / (2 * gamma);
        const tn = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + tn * tn), s = c * tn;
        for (let t = 0; t < m; t++) {
          const x = w[ri + t]!, y = w[rj + t]!;
          w[ri + t] = c * x - s * y;
          w[rj + t] = s * x + c * y;
        }
        const vi = i * n, vj = j * n;
        for (let t = 0; t < n; t++) {
          const x = vt[vi + t]!, y = vt[vj + t]!;
          vt[vi + t] = c * x - s * y;
          vt[vj + t] = s * x + c * y;
        }
        norms[i] = alpha - tn * gamma;
        norms[j] = beta + tn * gamma;
      }
    }
    if (!rotated) break;
  }
  const sv = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let t = 0; t < m; t++) s += w[j * m + t]! * w[j * m + t]!;
    sv[j] = Math.sqrt(s);
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => sv[j]! - sv[i]!);
  const s = new Float64Array(n);
  const u = new Float64Array(m * n); // [m, n]
  const v = new Float64Array(n * n); // [n, n]
  const smax = n > 0 ? sv[order[0]!]! : 0;
  const negligible = smax * EPS * Math.max(m, n);
  const uCols: Float64Array[] = []; // accepted columns of U, for completion
  const missing: number[] = [];
  for (let c = 0; c < n; c++) {
    const src = order[c]!;
    s[c] = sv[src]!;
    for (let r = 0; r < n; r++) v[r * n + c] = vt[src * n + r]!;
    if (s[c]! > negligible && s[c]! > 0) {
      const col = new Float64Array(m);
      const inv = 1 / s[c]!;
      for (let t = 0; t < m; t++) col[t] = w[src * m + t]! * inv;
      uCols.push(col);
      for (let t = 0; t < m; t++) u[t * n + c] = col[t]!;
    } else {
      missing.push(c);
    }
  }
  // Complete U with unit vectors orthogonalized (twice) against the columns so far.
  let candidate = 0;
  for (const c of missing) {
    for (; candidate < m; candidate++) {
      const col = new Float64Array(m);
      col[candidate] = 1;
      for (let pass = 0; pass < 2; pass++) {
        for (const q of uCols) {
          let dot = 0;
          for (let t = 0; t < m; t++) dot += q[t]! * col[t]!;
          for (let t = 0; t < m; t++) col[t] = col[t]! - dot * q[t]!;
        }
      }
      let nrm = 0;
      for (let t = 0; t < m; t++) nrm += col[t]! * col[t]!;
      nrm = Math.sqrt(nrm);
      if (nrm > 0.5) {
        for (let t = 0; t < m; t++) col[t] = col[t]! / nrm;
        uCols.push(col);
        for (let t = 0; t < m; t++) u[t * n + c] = col[t]!;
        candidate++;
        break;
      }
    }
  }
  if (k !== 0) scaleByPowerOfTwo(s, -k);
  return { u, s, v };
}
