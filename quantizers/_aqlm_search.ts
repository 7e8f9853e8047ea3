/**
 * AQLM internals: residual k-means, the output-space beam search and the
 * least-squares codebook and scale updates. Library-internal (tested
 * directly); the public entry point is `aqlm.ts`. Web-standard only.
 *
 * @module
 */

import { permutation, type Prng } from "../core/prng.ts";
import { CholeskyError, matmulRaw } from "../core/_dense.ts";
import { upperCholeskyOfInverse } from "../hessian/_obs_kernels.ts";

/** Problem data shared by the phases. */
export interface Problem {
  rows: number;
  cols: number;
  g: number; // group size
  G: number; // groups per row
  M: number;
  K: number; // 2^B
  W: Float64Array; // [rows, cols]
  H: Float64Array; // [cols, cols]
}

/** Σ_r w_rᵀ H w_r: the output energy ‖WX‖² (per token). */
export function outputEnergy(p: Problem): number {
  const WH = matmulRaw(p.W, p.H, p.rows, p.cols, p.cols);
  let s = 0;
  for (let i = 0; i < WH.length; i++) s += WH[i]! * p.W[i]!;
  return s || 1;
}

/** Unscaled reconstruction U [rows, cols]: U[r, group j] = Σ_m C_m[code]. */
export function reconstructUnscaled(
  p: Problem,
  codebooks: Float64Array,
  codes: Int32Array,
): Float64Array {
  const { rows, cols, G, M } = p;
  const U = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) addRowReconstruction(p, codebooks, codes, r * G * M, U, r * cols);
  return U;
}

/** Σ_r (w_r − ŵ_r)ᵀ H (w_r − ŵ_r). */
export function objectiveOf(
  p: Problem,
  codebooks: Float64Array,
  codes: Int32Array,
  scales: Float64Array,
): number {
  const { rows, cols } = p;
  const R = reconstructUnscaled(p, codebooks, codes);
  for (let r = 0; r < rows; r++) {
    const s = scales[r]!;
    for (let c = 0; c < cols; c++) R[r * cols + c] = p.W[r * cols + c]! - s * R[r * cols + c]!;
  }
  const RH = matmulRaw(R, p.H, rows, cols, cols);
  let f = 0;
  for (let i = 0; i < RH.length; i++) f += RH[i]! * R[i]!;
  return f;
}

/** How often, and how tightly, the k-means checks that its centers stopped moving. */
export const KMEANS_CHECK = { every: 10, rtol: 1e-6, atol: 1e-8 } as const;

/**
 * Residual k-means: codebook m fitted on what codebooks 0..m−1 left of the
 * normalized groups. Each codebook runs at most `iterations` Lloyd steps and
 * stops early at a check (iterations 0, 10, 20, … after the update) where no
 * center moved by more than `atol + rtol·|old|` in any coordinate, the rule of
 * the reference's `fit_kmeans`; the codes are then the nearest centers.
 *
 * @returns The codebooks [M, K, g], the codes [rows, G, M] and the Lloyd steps run per codebook.
 */
export function residualKmeans(
  p: Problem,
  scales: Float64Array,
  iterations: number,
  rng: Prng,
): { codebooks: Float64Array; codes: Int32Array; lloydSteps: number[] } {
  const { rows, cols, g, G, M, K } = p;
  const n = rows * G;
  const points = new Float64Array(n * g); // normalized groups, then residuals
  for (let r = 0; r < rows; r++) {
    const inv = 1 / scales[r]!;
    for (let c = 0; c < cols; c++) points[r * cols + c] = p.W[r * cols + c]! * inv;
  }
  const codebooks = new Float64Array(M * K * g);
  const codes = new Int32Array(n * M);
  const assign = new Int32Array(n);
  const lloydSteps: number[] = [];
  for (let m = 0; m < M; m++) {
    const centers = codebooks.subarray(m * K * g, (m + 1) * K * g);
    // Seeded initialization: K distinct data points (all of them, plus small
    // Gaussian vectors, when there are fewer points than codes).
    const order = new Int32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    for (let k = 0; k < K; k++) {
      if (k < n) {
        const j = k + rng.int(n - k);
        const t = order[k]!;
        order[k] = order[j]!;
        order[j] = t;
        centers.set(points.subarray(order[k]! * g, order[k]! * g + g), k * g);
      } else {
        for (let a = 0; a < g; a++) centers[k * g + a] = 0.1 * rng.normal();
      }
    }
    const sums = new Float64Array(K * g);
    const counts = new Int32Array(K);
    let steps = 0;
    while (steps < iterations) {
      nearestCenters(points, n, centers, K, g, assign);
      sums.fill(0);
      counts.fill(0);
      for (let i = 0; i < n; i++) {
        const k = assign[i]!;
        counts[k] = counts[k]! + 1;
        for (let a = 0; a < g; a++) sums[k * g + a] = sums[k * g + a]! + points[i * g + a]!;
      }
      let moved = false;
      for (let k = 0; k < K; k++) {
        const cnt = counts[k]!;
        if (cnt === 0) continue; // an empty cluster keeps its center
        for (let a = 0; a < g; a++) {
          const old = centers[k * g + a]!, next = sums[k * g + a]! / cnt;
          if (Math.abs(next - old) > KMEANS_CHECK.atol + KMEANS_CHECK.rtol * Math.abs(old)) {
            moved = true;
          }
          centers[k * g + a] = next;
        }
      }
      steps++;
      if ((steps - 1) % KMEANS_CHECK.every === 0 && !moved) break;
    }
    lloydSteps.push(steps);
    nearestCenters(points, n, centers, K, g, assign);
    for (let i = 0; i < n; i++) {
      const k = assign[i]!;
      codes[i * M + m] = k;
      for (let a = 0; a < g; a++) points[i * g + a] = points[i * g + a]! - centers[k * g + a]!;
    }
  }
  return { codebooks, codes, lloydSteps };
}

function nearestCenters(
  points: Float64Array,
  n: number,
  centers: Float64Array,
  K: number,
  g: number,
  out: Int32Array,
): void {
  const norms = new Float64Array(K);
  for (let k = 0; k < K; k++) {
    let s = 0;
    for (let a = 0; a < g; a++) s += centers[k * g + a]! ** 2;
    norms[k] = s;
  }
  // Dot products of a chunk of points with every center as one GEMM
  // ([chunk, g]·[g, K]), then the argmin of ‖c‖² − 2·p·c per point.
  const centersT = new Float64Array(g * K); // [g, K]
  for (let k = 0; k < K; k++) {
    for (let a = 0; a < g; a++) centersT[a * K + k] = centers[k * g + a]!;
  }
  const chunk = Math.max(1, Math.min(n, Math.floor((1 << 20) / K)));
  for (let i0 = 0; i0 < n; i0 += chunk) {
    const rows = Math.min(chunk, n - i0);
    const dots = matmulRaw(points.subarray(i0 * g, (i0 + rows) * g), centersT, rows, g, K);
    for (let i = 0; i < rows; i++) {
      let best = 0, bestD = Infinity;
      const o = i * K;
      for (let k = 0; k < K; k++) {
        const d = norms[k]! - 2 * dots[o + k]!;
        if (d < bestD) {
          bestD = d;
          best = k;
        }
      }
      out[i0 + i] = best;
    }
  }
}

/**
 * The order in which a beam-search round revisits the codes: group by group,
 * every codebook of a group before the next group. With a generator, the
 * groups are shuffled and then, group by group, that group's codebooks (the
 * reference draws a fresh codebook order for each group, all rows alike);
 * without one, the natural order 0, 1, ….
 *
 * @param G Groups per row.
 * @param M Codebooks.
 * @param rng The round's generator, or null for the natural order.
 * @returns Code positions j·M + m, [G·M].
 */
export function visitOrder(G: number, M: number, rng: Prng | null): Int32Array {
  const order = new Int32Array(G * M);
  const groups = rng ? permutation(G, rng) : null;
  for (let i = 0; i < G; i++) {
    const j = groups ? groups[i]! : i;
    const books = rng ? permutation(M, rng) : null;
    for (let m = 0; m < M; m++) order[i * M + m] = j * M + (books ? books[m]! : m);
  }
  return order;
}

/**
 * Beam search over each row's codes in output space. For a change of one code
 * of group j from b to a (Δ = s·(a − b) on the group's columns), the objective
 * f(r) = rᵀHr of the residual r = w − ŵ becomes
 * f − 2Δᵀ(Hr)_j + ΔᵀH_jjΔ, so with v = s·H_jj·b + (Hr)_j every candidate code
 * costs one dot product: s²·aᵀH_jj a − 2s·a·v (+ a constant).
 * The (group, codebook) codes are revisited one at a time in `order` (every
 * row the same order). Overwrites `codes` with the best configuration found
 * per row (never worse than the one given, which is always in the beam).
 *
 * @param order Code positions j·M + m in visiting order, each once; see {@linkcode visitOrder}.
 */
export function beamSearch(
  p: Problem,
  codebooks: Float64Array,
  codes: Int32Array,
  scales: Float64Array,
  beamSize: number,
  order: Int32Array,
  onRow: (done: number) => void,
): void {
  const { rows, cols, g, G, M, K, H } = p;
  if (order.length !== G * M) {
    throw new RangeError(
      `Cannot run the AQLM beam search as 'order' must list all ${
        G * M
      } code positions: it has ${order.length}`,
    );
  }
  // aᵀ H_jj a for every group j, codebook m and code k: [G, M, K].
  const norms = new Float64Array(G * M * K);
  const Ha = new Float64Array(g);
  for (let j = 0; j < G; j++) {
    for (let m = 0; m < M; m++) {
      for (let k = 0; k < K; k++) {
        const c = (m * K + k) * g;
        let s = 0;
        for (let a = 0; a < g; a++) {
          let t = 0;
          const hr = (j * g + a) * cols + j * g;
          for (let b = 0; b < g; b++) t += H[hr + b]! * codebooks[c + b]!;
          Ha[a] = t;
          s += t * codebooks[c + a]!;
        }
        norms[(j * M + m) * K + k] = s;
      }
    }
  }
  const GM = G * M;
  // Two preallocated pools: the beam lives in one while its children are written to the other.
  const makePool = (): Candidate[] =>
    Array.from({ length: beamSize }, () => ({
      codes: new Int32Array(GM),
      r: new Float64Array(cols),
      hr: new Float64Array(cols),
      f: 0,
    }));
  const search: RowSearch = {
    p,
    codebooks,
    norms,
    beamSize,
    order,
    pools: [makePool(), makePool()],
    v: new Float64Array(g),
    delta: new Float64Array(g),
  };
  // One call per row (not one long loop here): V8 then optimizes the row's search as a
  // function instead of repeatedly entering and leaving on-stack-replaced inner loops.
  for (let row = 0; row < rows; row++) {
    const best = searchRow(search, row, codes.subarray(row * GM, (row + 1) * GM), scales[row]!);
    codes.set(best, row * GM);
    onRow(row + 1);
  }
}

/** One beam-search candidate: its codes, residual r = w − ŵ, H·r and objective rᵀHr. */
interface Candidate {
  codes: Int32Array;
  r: Float64Array;
  hr: Float64Array;
  f: number;
}

/** What the search of every row shares: the problem, the code norms, the order and buffers. */
interface RowSearch {
  p: Problem;
  codebooks: Float64Array;
  norms: Float64Array; // [G, M, K]
  beamSize: number;
  order: Int32Array;
  pools: [Candidate[], Candidate[]];
  v: Float64Array;
  delta: Float64Array;
}

/** The beam search of one row from its current codes; returns the best codes found (a pool's buffer). */
function searchRow(search: RowSearch, row: number, start: Int32Array, s: number): Int32Array {
  const { p, codebooks, norms, beamSize, order, pools, v, delta } = search;
  const { cols, g, M, K, H } = p;
  const first = pools[0][0]!;
  first.codes.set(start);
  const U = new Float64Array(cols);
  addRowReconstruction(p, codebooks, first.codes, 0, U, 0);
  for (let c = 0; c < cols; c++) first.r[c] = p.W[row * cols + c]! - s * U[c]!;
  first.hr.set(matVec(H, first.r, cols));
  let f = 0;
  for (let c = 0; c < cols; c++) f += first.r[c]! * first.hr[c]!;
  first.f = f;
  let beam: Candidate[] = [first];
  let flip = 1;
  for (let step = 0; step < order.length; step++) {
    const pos = order[step]!, j = Math.floor(pos / M), m = pos - j * M;
    const nb = pos * K;
    // Best (candidate, code) pairs by new objective, kept sorted ascending.
    const picks: { cand: number; code: number; f: number }[] = [];
    for (let ci = 0; ci < beam.length; ci++) {
      const cand = beam[ci]!;
      const old = cand.codes[pos]!;
      const bo = (m * K + old) * g;
      for (let a = 0; a < g; a++) {
        let t = 0;
        const hrow = (j * g + a) * cols + j * g;
        for (let b = 0; b < g; b++) t += H[hrow + b]! * codebooks[bo + b]!;
        v[a] = s * t + cand.hr[j * g + a]!;
      }
      let vb = 0;
      for (let a = 0; a < g; a++) vb += codebooks[bo + a]! * v[a]!;
      const base = cand.f - (s * s * norms[nb + old]! - 2 * s * vb);
      for (let k = 0; k < K; k++) {
        const co = (m * K + k) * g;
        let dot = 0;
        for (let a = 0; a < g; a++) dot += codebooks[co + a]! * v[a]!;
        const fk = base + s * s * norms[nb + k]! - 2 * s * dot;
        if (picks.length < beamSize || fk < picks[picks.length - 1]!.f) {
          if (isDuplicate(beam, picks, ci, k, pos)) continue;
          let at = picks.length;
          while (at > 0 && picks[at - 1]!.f > fk) at--;
          picks.splice(at, 0, { cand: ci, code: k, f: fk });
          if (picks.length > beamSize) picks.pop();
        }
      }
    }
    const next: Candidate[] = [];
    const pool = pools[flip]!;
    for (let pi = 0; pi < picks.length; pi++) {
      const pick = picks[pi]!;
      const parent = beam[pick.cand]!;
      const old = parent.codes[pos]!;
      const child = pool[pi]!;
      child.codes.set(parent.codes);
      child.r.set(parent.r);
      child.hr.set(parent.hr);
      child.f = pick.f;
      child.codes[pos] = pick.code;
      if (pick.code !== old) {
        const ao = (m * K + pick.code) * g, bo = (m * K + old) * g;
        for (let a = 0; a < g; a++) {
          delta[a] = s * (codebooks[ao + a]! - codebooks[bo + a]!);
          child.r[j * g + a] = child.r[j * g + a]! - delta[a]!;
        }
        // hr −= H[:, group j]·Δ (H symmetric: use rows of the group).
        for (let a = 0; a < g; a++) {
          const d = delta[a]!;
          if (d === 0) continue;
          const hrow = (j * g + a) * cols;
          for (let c = 0; c < cols; c++) child.hr[c] = child.hr[c]! - d * H[hrow + c]!;
        }
      }
      next.push(child);
    }
    beam = next;
    flip = 1 - flip;
  }
  return beam[0]!.codes;
}

/** Whether choosing `code` at position `pos` of candidate `ci` repeats a configuration already picked. */
function isDuplicate(
  beam: { codes: Int32Array }[],
  picks: { cand: number; code: number }[],
  ci: number,
  code: number,
  pos: number,
): boolean {
  for (const pick of picks) {
    if (pick.code !== code) continue;
    if (pick.cand === ci) return true;
    const x = beam[pick.cand]!.codes, y = beam[ci]!.codes;
    let same = true;
    for (let i = 0; i < x.length && same; i++) if (i !== pos && x[i] !== y[i]) same = false;
    if (same) return true;
  }
  return false;
}

/** Adds Σ_m C_m[code] of one row's groups (codes from `codeAt`) into `out` from `outAt`. */
function addRowReconstruction(
  p: Problem,
  codebooks: Float64Array,
  codes: Int32Array,
  codeAt: number,
  out: Float64Array,
  outAt: number,
): void {
  const { g, G, M, K } = p;
  for (let j = 0; j < G; j++) {
    const o = outAt + j * g;
    for (let m = 0; m < M; m++) {
      const cb = (m * K + codes[codeAt + j * M + m]!) * g;
      for (let a = 0; a < g; a++) out[o + a] = out[o + a]! + codebooks[cb + a]!;
    }
  }
}

function matVec(H: Float64Array, x: Float64Array, n: number): Float64Array {
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let t = 0;
    const o = i * n;
    for (let c = 0; c < n; c++) t += H[o + c]! * x[c]!;
    y[i] = t;
  }
  return y;
}

/**
 * The linear map θ ↦ Ŵ(θ) from all codebooks to the scaled reconstruction,
 * and its adjoint. The objective is ‖(W − Ŵ(θ))‖²_H, so the least-squares
 * codebooks solve Aᵀ(A(θ)·H) = Aᵀ(W·H).
 */
function applyA(
  p: Problem,
  theta: Float64Array,
  codes: Int32Array,
  scales: Float64Array,
): Float64Array {
  const U = reconstructUnscaled(p, theta, codes);
  for (let r = 0; r < p.rows; r++) {
    const s = scales[r]!;
    for (let c = 0; c < p.cols; c++) U[r * p.cols + c] = s * U[r * p.cols + c]!;
  }
  return U;
}

function applyAt(
  p: Problem,
  Y: Float64Array,
  codes: Int32Array,
  scales: Float64Array,
): Float64Array {
  const { rows, cols, g, G, M, K } = p;
  const out = new Float64Array(M * K * g);
  for (let r = 0; r < rows; r++) {
    const s = scales[r]!;
    for (let j = 0; j < G; j++) {
      const o = r * cols + j * g;
      for (let m = 0; m < M; m++) {
        const cb = (m * K + codes[(r * G + j) * M + m]!) * g;
        for (let a = 0; a < g; a++) out[cb + a] = out[cb + a]! + s * Y[o + a]!;
      }
    }
  }
  return out;
}

/**
 * Least-squares codebooks given the codes: conjugate gradients on the normal
 * equations started from the current codebooks (each step lowers the
 * quadratic objective; at convergence it is the closed-form optimum).
 */
export function updateCodebooks(
  p: Problem,
  codebooks: Float64Array,
  codes: Int32Array,
  scales: Float64Array,
  steps: number,
): Float64Array {
  const { rows, cols } = p;
  const normal = (theta: Float64Array): Float64Array =>
    applyAt(p, matmulRaw(applyA(p, theta, codes, scales), p.H, rows, cols, cols), codes, scales);
  const rhs = applyAt(p, matmulRaw(p.W, p.H, rows, cols, cols), codes, scales);
  const x = Float64Array.from(codebooks);
  const Ax = normal(x);
  const res = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) res[i] = rhs[i]! - Ax[i]!;
  const dir = Float64Array.from(res);
  let rr = dot(res, res);
  const stop = 1e-20 * Math.max(dot(rhs, rhs), 1e-300);
  for (let it = 0; it < steps && rr > stop; it++) {
    const Ad = normal(dir);
    const dAd = dot(dir, Ad);
    if (!(dAd > 0)) break;
    const alpha = rr / dAd;
    for (let i = 0; i < x.length; i++) {
      x[i] = x[i]! + alpha * dir[i]!;
      res[i] = res[i]! - alpha * Ad[i]!;
    }
    const rrNew = dot(res, res);
    const beta = rrNew / rr;
    rr = rrNew;
    for (let i = 0; i < x.length; i++) dir[i] = res[i]! + beta * dir[i]!;
  }
  return x;
}

/** Per-row least-squares scale: s = (wᵀHu)/(uᵀHu) for the unscaled reconstruction u. */
export function updateScales(
  p: Problem,
  codebooks: Float64Array,
  codes: Int32Array,
  scales: Float64Array,
): void {
  const { rows, cols } = p;
  const U = reconstructUnscaled(p, codebooks, codes);
  const UH = matmulRaw(U, p.H, rows, cols, cols);
  for (let r = 0; r < rows; r++) {
    let num = 0, den = 0;
    for (let c = 0; c < cols; c++) {
      num += UH[r * cols + c]! * p.W[r * cols + c]!;
      den += UH[r * cols + c]! * U[r * cols + c]!;
    }
    if (den > 0 && Number.isFinite(num / den)) scales[r] = num / den;
  }
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/**
 * Sequential code assignment with Optimal Brain Surgeon compensation (as GPTQ
 * does for scalar grids, with one vector decision per group): groups are
 * fixed left to right; each group's codes minimize ‖U_JJ^{−ᵀ}(w_J − q)‖², the
 * exact loss of fixing the group while every later column is still free to
 * compensate, and the error is then propagated to the later columns through
 * U, the upper Cholesky factor of H⁻¹. Within a group the M codebooks are
 * chosen greedily then revisited once. Overwrites `codes`.
 *
 * @param p The problem.
 * @param codebooks [M, K, g].
 * @param scales Row scales.
 * @param codes Output, [rows, G, M].
 * @param dampRatio Damping as a fraction of the mean diagonal.
 */
export function sequentialAssign(
  p: Problem,
  codebooks: Float64Array,
  scales: Float64Array,
  codes: Int32Array,
  dampRatio: number,
): void {
  const { rows, cols, g, G, M, K, H } = p;
  const diag = new Float64Array(cols);
  let mean = 0;
  for (let c = 0; c < cols; c++) {
    const d = H[c * cols + c]!;
    diag[c] = d > 0 ? d : 1; // dead inputs: their weights do not matter
    mean += diag[c]!;
  }
  mean /= cols;
  const identity = new Int32Array(cols).map((_, i) => i);
  let U: Float32Array | undefined;
  let damping = dampRatio * mean;
  for (let attempt = 0; attempt < 8 && !U; attempt++, damping *= 10) {
    try {
      U = upperCholeskyOfInverse(H, cols, identity, diag, damping);
    } catch (err) {
      if (!(err instanceof CholeskyError)) throw err;
    }
  }
  if (!U) throw new RangeError("Cannot assign AQLM codes: the damped Hessian stays singular");
  const Wc = Float64Array.from(p.W); // [rows, cols], updated as groups are fixed
  const A = new Float64Array(g * g); // metric (U_JJᵀU_JJ)⁻¹ = U_JJ⁻¹U_JJ⁻ᵀ
  const Ui = new Float64Array(g * g);
  const norms = new Float64Array(M * K);
  const target = new Float64Array(g);
  const At = new Float64Array(g);
  const q = new Float64Array(g);
  for (let J = 0; J < G; J++) {
    const c0 = J * g;
    // Inverse of the upper-triangular block U_JJ.
    Ui.fill(0);
    for (let i = g - 1; i >= 0; i--) {
      Ui[i * g + i] = 1 / U[(c0 + i) * cols + c0 + i]!;
      for (let j = i + 1; j < g; j++) {
        let s = 0;
        for (let k = i + 1; k <= j; k++) s += U[(c0 + i) * cols + c0 + k]! * Ui[k * g + j]!;
        Ui[i * g + j] = -s * Ui[i * g + i]!;
      }
    }
    for (let i = 0; i < g; i++) {
      for (let j = 0; j < g; j++) {
        let s = 0;
        for (let k = Math.max(i, j); k < g; k++) s += Ui[i * g + k]! * Ui[j * g + k]!;
        A[i * g + j] = s;
      }
    }
    for (let mk = 0; mk < M * K; mk++) {
      let s = 0;
      for (let a = 0; a < g; a++) {
        let t = 0;
        for (let b = 0; b < g; b++) t += A[a * g + b]! * codebooks[mk * g + b]!;
        s += t * codebooks[mk * g + a]!;
      }
      norms[mk] = s;
    }
    for (let r = 0; r < rows; r++) {
      const s = scales[r]!;
      const base = (r * G + J) * M;
      for (let a = 0; a < g; a++) target[a] = Wc[r * cols + c0 + a]! / s;
      // Greedy over codebooks, then one revisit of each given the others.
      for (let pass = 0; pass < 2; pass++) {
        for (let m = 0; m < M; m++) {
          // residual target: t minus every other codebook's current vector
          for (let a = 0; a < g; a++) q[a] = target[a]!;
          for (let m2 = 0; m2 < M; m2++) {
            if (m2 === m || (pass === 0 && m2 > m)) continue;
            const o = (m2 * K + codes[base + m2]!) * g;
            for (let a = 0; a < g; a++) q[a] = q[a]! - codebooks[o + a]!;
          }
          for (let a = 0; a < g; a++) {
            let t = 0;
            for (let b = 0; b < g; b++) t += A[a * g + b]! * q[b]!;
            At[a] = t;
          }
          let best = 0, bestScore = Infinity;
          for (let k = 0; k < K; k++) {
            const o = (m * K + k) * g;
            let dot = 0;
            for (let a = 0; a < g; a++) dot += codebooks[o + a]! * At[a]!;
            const score = norms[m * K + k]! - 2 * dot;
            if (score < bestScore) {
              bestScore = score;
              best = k;
            }
          }
          codes[base + m] = best;
        }
      }
      // The fixed values, then OBS propagation column by column.
      q.fill(0);
      for (let m = 0; m < M; m++) {
        const o = (m * K + codes[base + m]!) * g;
        for (let a = 0; a < g; a++) q[a] = q[a]! + s * codebooks[o + a]!;
      }
      const row = r * cols;
      for (let a = 0; a < g; a++) {
        const col = c0 + a;
        const err = (Wc[row + col]! - q[a]!) / U[col * cols + col]!;
        Wc[row + col] = q[a]!;
        if (err === 0) continue;
        const urow = col * cols;
        for (let c = col + 1; c < cols; c++) Wc[row + c] = Wc[row + c]! - err * U[urow + c]!;
      }
    }
  }
}
