/**
 * Hadamard matrices built by construction (no tables): Sylvester doubling,
 * Paley type I and II over GF(p^k), and Kronecker products of these.
 * Web-standard only.
 *
 * Every constructible order n is written in one canonical form,
 * `H_n = H_{2^K} ⊗ P_1 ⊗ … ⊗ P_r`, with `H_{2^K}` Sylvester's matrix in natural
 * order (`H[i, j] = (−1)^popcount(i & j)`) and `P_i` Paley blocks in ascending
 * order. The recipe chosen for n is the one with the cheapest fast transform
 * (Σ block orders + K per element; see `fwht`).
 *
 * @see R. E. A. C. Paley, "On orthogonal matrices", J. Math. Phys. 12 (1933).
 * @see J. J. Sylvester, "Thoughts on inverse orthogonal matrices" (1867).
 * @module
 */

import { galoisField, primePower } from "./galois.ts";

/** One block of a Hadamard construction. */
export type HadamardFactor =
  | {
    /** Sylvester's matrix of order 2^k (natural order). */
    readonly kind: "sylvester";
    /** Its order, 2^k. */
    readonly n: number;
    /** The exponent k. */
    readonly k: number;
  }
  | {
    /** Paley type I, order q + 1 for a prime power q ≡ 3 (mod 4): H = I + S, S skew. */
    readonly kind: "paley1";
    /** Its order, q + 1. */
    readonly n: number;
    /** The field order q = p^k. */
    readonly q: number;
    /** The characteristic. */
    readonly p: number;
    /** The degree. */
    readonly k: number;
  }
  | {
    /** Paley type II, order 2(q + 1) for a prime power q ≡ 1 (mod 4); symmetric. */
    readonly kind: "paley2";
    /** Its order, 2(q + 1). */
    readonly n: number;
    /** The field order q = p^k. */
    readonly q: number;
    /** The characteristic. */
    readonly p: number;
    /** The degree. */
    readonly k: number;
  };

/** How a Hadamard matrix of order n is built: `H_n = factors[0] ⊗ factors[1] ⊗ …`. */
export interface HadamardConstruction {
  /** The order. */
  readonly n: number;
  /** Kronecker factors: at most one Sylvester block (first), then Paley blocks by order. */
  readonly factors: readonly HadamardFactor[];
  /** Human-readable recipe, e.g. `"Sylvester(32) ⊗ Paley I(q = 7^3)"`. */
  readonly description: string;
}

/** A dense Hadamard matrix with its recipe. */
export interface HadamardMatrix {
  /** The order. */
  readonly n: number;
  /** Entries ±1, row-major [n, n]; H·Hᵀ = n·I. */
  readonly matrix: Int8Array;
  /** How it was built. */
  readonly construction: HadamardConstruction;
}

/** Cost of a recipe: per-element work of the fast transform (dense blocks cost their order). */
interface Recipe {
  cost: number;
  factors: HadamardFactor[];
}

const recipes = new Map<number, Recipe | null>();

function isHadamardOrder(n: number): boolean {
  return n === 1 || n === 2 || n % 4 === 0;
}

function leafOptions(n: number): Recipe[] {
  const out: Recipe[] = [];
  if ((n & (n - 1)) === 0) {
    const k = Math.round(Math.log2(n));
    out.push({ cost: k, factors: k === 0 ? [] : [{ kind: "sylvester", n, k }] });
  }
  if (n % 4 === 0) {
    const pk = primePower(n - 1);
    if (pk !== null && (n - 1) % 4 === 3) {
      out.push({ cost: n, factors: [{ kind: "paley1", n, q: n - 1, p: pk.p, k: pk.k }] });
    }
    const q2 = n / 2 - 1;
    const pk2 = primePower(q2);
    if (pk2 !== null && q2 % 4 === 1) {
      out.push({ cost: n, factors: [{ kind: "paley2", n, q: q2, p: pk2.p, k: pk2.k }] });
    }
  }
  return out;
}

function bestRecipe(n: number): Recipe | null {
  if (recipes.has(n)) return recipes.get(n)!;
  let best: Recipe | null = null;
  if (isHadamardOrder(n)) {
    for (const r of leafOptions(n)) if (best === null || r.cost < best.cost) best = r;
    for (let d = 2; d * d <= n; d++) {
      if (n % d !== 0) continue;
      const e = n / d;
      if (!isHadamardOrder(d) || !isHadamardOrder(e)) continue;
      const a = bestRecipe(d);
      if (a === null) continue;
      const b = bestRecipe(e);
      if (b === null) continue;
      const cost = a.cost + b.cost;
      if (best === null || cost < best.cost) {
        best = { cost, factors: [...a.factors, ...b.factors] };
      }
    }
  }
  if (best !== null) best = { cost: best.cost, factors: canonical(best.factors) };
  recipes.set(n, best);
  return best;
}

/** Merges Sylvester blocks into one (first) and sorts the Paley blocks by order. */
function canonical(factors: HadamardFactor[]): HadamardFactor[] {
  let k = 0;
  const rest: HadamardFactor[] = [];
  for (const f of factors) {
    if (f.kind === "sylvester") k += f.k;
    else rest.push(f);
  }
  rest.sort((a, b) => a.n - b.n || a.kind.localeCompare(b.kind));
  return k > 0 ? [{ kind: "sylvester", n: 2 ** k, k }, ...rest] : rest;
}

function describeFactor(f: HadamardFactor): string {
  if (f.kind === "sylvester") return `Sylvester(${f.n})`;
  const q = f.k === 1 ? `${f.q}` : `${f.p}^${f.k}`;
  return `${f.kind === "paley1" ? "Paley I" : "Paley II"}(q = ${q})`;
}

function checkOrder(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new RangeError(
      `Cannot ${what} as 'n' must be a positive integer: current value is ${n}`,
    );
  }
}

/**
 * The recipe for a Hadamard matrix of order n, without building it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hadamardConstruction } from "./hadamard.ts";
 * assert(hadamardConstruction(11008)?.description === "Sylvester(32) ⊗ Paley I(q = 7^3)");
 * assert(hadamardConstruction(13696) === null);
 * ```
 * @param n The order.
 * @returns The construction, or null when n is not reachable by Sylvester,
 * Paley I/II and Kronecker products.
 */
export function hadamardConstruction(n: number): HadamardConstruction | null {
  checkOrder(n, "construct a Hadamard matrix");
  const r = bestRecipe(n);
  if (r === null) return null;
  const description = r.factors.length === 0 ? "[1]" : r.factors.map(describeFactor).join(" ⊗ ");
  return { n, factors: r.factors, description };
}

/**
 * Nearest constructible orders below and above n (multiples of 4, or 1, 2).
 *
 * @param n The requested order.
 * @returns `[below, above]`; `below` is null when none exists.
 */
export function nearestHadamardOrders(n: number): [number | null, number] {
  let below: number | null = null;
  for (let m = Math.min(n - 1, Math.floor((n - 1) / 4) * 4); m >= 1; m -= m > 4 ? 4 : 1) {
    if (isHadamardOrder(m) && bestRecipe(m) !== null) {
      below = m;
      break;
    }
  }
  let above = Math.max(4, Math.ceil((n + 1) / 4) * 4);
  while (bestRecipe(above) === null) above += 4;
  return [below, above];
}

/**
 * The construction of order n, or a RangeError naming n and the nearest
 * supported orders.
 *
 * @param n The order.
 * @returns The construction.
 */
export function requireHadamardConstruction(n: number): HadamardConstruction {
  const c = hadamardConstruction(n);
  if (c !== null) return c;
  const [below, above] = nearestHadamardOrders(n);
  const near = below === null ? `${above}` : `${below} and ${above}`;
  const why = isHadamardOrder(n)
    ? `no Sylvester, Paley I/II or Kronecker-product construction reaches ${n} = ${factorString(n)}`
    : `Hadamard matrices exist only for orders 1, 2 and multiples of 4`;
  throw new RangeError(
    `Cannot construct a Hadamard matrix of order n = ${n}: ${why}; nearest supported orders: ${near}`,
  );
}

function factorString(n: number): string {
  const parts: string[] = [];
  let r = n;
  for (let d = 2; d * d <= r; d++) {
    let e = 0;
    while (r % d === 0) {
      r /= d;
      e++;
    }
    if (e > 0) parts.push(e === 1 ? `${d}` : `${d}^${e}`);
  }
  if (r > 1) parts.push(`${r}`);
  return parts.join("·");
}

/**
 * Lists the multiples of 4 up to `limit` that are constructible and their recipes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hadamardOrders } from "./hadamard.ts";
 * const orders = hadamardOrders(100).map((c) => c.n);
 * assert(orders.includes(12) && orders.includes(92) === false);
 * ```
 * @param limit Largest order to consider.
 * @returns Constructions in increasing order.
 */
export function hadamardOrders(limit: number): HadamardConstruction[] {
  checkOrder(limit, "list Hadamard orders");
  const out: HadamardConstruction[] = [];
  for (let n = 4; n <= limit; n += 4) {
    const c = hadamardConstruction(n);
    if (c !== null) out.push(c);
  }
  return out;
}

/** Entry (i, j) of a Sylvester matrix in natural order. */
function sylvesterEntry(i: number, j: number): number {
  let x = i & j, parity = 0;
  while (x !== 0) {
    parity ^= 1;
    x &= x - 1;
  }
  return parity === 0 ? 1 : -1;
}

/**
 * A dense Paley/Sylvester block of a construction (±1, row-major).
 *
 * @param f The factor.
 * @returns Its n×n matrix.
 */
export function hadamardFactorMatrix(f: HadamardFactor): Int8Array {
  const n = f.n;
  const h = new Int8Array(n * n);
  for (let i = 0; i < n; i++) factorRow(f, i, h.subarray(i * n, (i + 1) * n));
  return h;
}

interface JacobsthalTables {
  /** χ of every field element. */
  chi: Int8Array;
  /** χ(−j mod q) twice over, so that a row of a prime field is one slice (k = 1 only). */
  reversed: Int8Array;
  /** Base-p digits of every element, [q, k] (k > 1 only). */
  digits: Int32Array;
  p: number;
  k: number;
}

const jacobsthalCache = new Map<number, JacobsthalTables>();

/** Writes row a of the Jacobsthal matrix, out[b] = χ(a − b) for b in [0, q). */
function jacobsthalRow(q: number, a: number, out: Int8Array): void {
  let t = jacobsthalCache.get(q);
  if (t === undefined) {
    const field = galoisField(q);
    const chi = new Int8Array(q);
    for (let e = 0; e < q; e++) chi[e] = field.chi(e);
    const digits = new Int32Array(field.k > 1 ? q * field.k : 0);
    if (field.k > 1) {
      for (let e = 0; e < q; e++) {
        for (let i = 0, r = e; i < field.k; i++, r = Math.floor(r / field.p)) {
          digits[e * field.k + i] = r % field.p;
        }
      }
    }
    const reversed = new Int8Array(field.k === 1 ? 2 * q : 0);
    if (field.k === 1) {
      for (let j = 0; j < 2 * q; j++) reversed[j] = chi[(2 * q - j) % q]!;
    }
    t = { chi, reversed, digits, p: field.p, k: field.k };
    jacobsthalCache.set(q, t);
  }
  const { chi, reversed, digits, p, k } = t;
  if (k === 1) {
    // χ(a − b) = reversed[b − a mod q]: row a is a cyclic shift of row 0.
    out.set(reversed.subarray(q - a, 2 * q - a));
    return;
  }
  // a − b digit by digit (the additive group of GF(p^k) is (Z_p)^k).
  for (let b = 0; b < q; b++) {
    let e = 0;
    for (let i = k - 1; i >= 0; i--) {
      const d = digits[a * k + i]! - digits[b * k + i]!;
      e = e * p + (d < 0 ? d + p : d);
    }
    out[b] = chi[e]!;
  }
}

/** Writes row i of a factor into `out` (length f.n). */
function factorRow(f: HadamardFactor, i: number, out: Int8Array): void {
  const n = f.n;
  if (f.kind === "sylvester") {
    for (let j = 0; j < n; j++) out[j] = sylvesterEntry(i, j);
    return;
  }
  if (f.kind === "paley1") {
    // H = I + S, S = [[0, 1ᵀ], [−1, Q]], Q[a, b] = χ(a − b) (skew since q ≡ 3 mod 4).
    if (i === 0) {
      out.fill(1);
      return;
    }
    const a = i - 1;
    out[0] = -1;
    jacobsthalRow(f.q, a, out.subarray(1));
    out[a + 1] = 1;
    return;
  }
  // Paley II: C = [[0, 1ᵀ], [1, Q]] symmetric (q ≡ 1 mod 4); an entry c of C becomes the
  // 2×2 block c·[[1, −1], [−1, −1]], and the zero diagonal becomes [[1, 1], [1, −1]].
  const bi = i >> 1, s = i & 1;
  const jac = new Int8Array(f.q);
  if (bi > 0) jacobsthalRow(f.q, bi - 1, jac);
  for (let bj = 0; bj < n / 2; bj++) {
    let c: number;
    if (bi === 0 && bj === 0) c = 0;
    else if (bi === 0 || bj === 0) c = 1;
    else c = jac[bj - 1]!;
    if (c === 0) {
      out[2 * bj] = 1;
      out[2 * bj + 1] = s === 0 ? 1 : -1;
    } else {
      out[2 * bj] = s === 0 ? c : -c;
      out[2 * bj + 1] = -c;
    }
  }
}

/**
 * Row i of the Hadamard matrix of order n, without building the matrix (a
 * Kronecker row is the Kronecker product of the factors' rows).
 *
 * @param n The order (must be constructible).
 * @param i The row index in [0, n).
 * @returns The row, ±1.
 */
export function hadamardRow(n: number, i: number): Int8Array {
  const c = requireHadamardConstruction(n);
  if (!Number.isSafeInteger(i) || i < 0 || i >= n) {
    throw new RangeError(
      `Cannot take a Hadamard row as 'i' must be in [0, ${n}): current value is ${i}`,
    );
  }
  let row = new Int8Array([1]);
  let rem = n;
  let idx = i;
  for (const f of c.factors) {
    rem /= f.n;
    const fi = Math.floor(idx / rem);
    idx -= fi * rem;
    const fr = new Int8Array(f.n);
    factorRow(f, fi, fr);
    const next = new Int8Array(row.length * f.n);
    for (let a = 0; a < row.length; a++) {
      const v = row[a]!;
      for (let b = 0; b < f.n; b++) next[a * f.n + b] = v * fr[b]!;
    }
    row = next;
  }
  return row;
}

/**
 * Builds the dense Hadamard matrix of order n (n² bytes) and its recipe.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hadamard } from "./hadamard.ts";
 * const { matrix, construction } = hadamard(12);
 * assert(construction.description === "Paley I(q = 11)");
 * let dot = 0;
 * for (let j = 0; j < 12; j++) dot += matrix[j]! * matrix[12 + j]!;
 * assert(dot === 0);
 * ```
 * @param n The order: 1, 2 or a constructible multiple of 4.
 * @returns The matrix and how it was built.
 * @throws {RangeError} naming n and the nearest supported orders when n is not constructible.
 */
export function hadamard(n: number): HadamardMatrix {
  const construction = requireHadamardConstruction(n);
  let h = new Int8Array([1]);
  let m = 1;
  for (const f of construction.factors) {
    const b = hadamardFactorMatrix(f);
    const mb = f.n, mm = m * mb;
    const next = new Int8Array(mm * mm);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < m; j++) {
        const v = h[i * m + j]!;
        for (let r = 0; r < mb; r++) {
          const dst = (i * mb + r) * mm + j * mb;
          const src = r * mb;
          if (v === 1) next.set(b.subarray(src, src + mb), dst);
          else for (let c = 0; c < mb; c++) next[dst + c] = -b[src + c]!;
        }
      }
    }
    h = next;
    m = mm;
  }
  return { n, matrix: h, construction };
}
