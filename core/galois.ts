/**
 * Finite fields GF(p^k) for the Paley constructions of Hadamard matrices.
 * Web-standard only.
 *
 * An element is an integer in `[0, q)` whose base-p digits are the
 * coefficients of a polynomial of degree < k over GF(p), lowest degree first
 * (for k = 1 the element is just the residue). Multiplication is modulo a
 * monic polynomial of degree k found by search: the first one (in the order of
 * its integer encoding) for which `x` has multiplicative order `q − 1`. Such a
 * polynomial is primitive and therefore irreducible, and `x` generates the
 * multiplicative group, which gives the log/antilog tables used for
 * multiplication and for the quadratic character.
 *
 * @module
 */

/** The finite field GF(q), q = p^k, with elements encoded as integers in [0, q). */
export interface GaloisField {
  /** The characteristic (a prime). */
  readonly p: number;
  /** The degree of the extension. */
  readonly k: number;
  /** The order q = p^k. */
  readonly q: number;
  /** Monic modulus of degree k, coefficients lowest degree first (length k + 1). */
  readonly modulus: readonly number[];
  /** `exp[i]` = g^i for the generator g = x, i in [0, q − 1). */
  readonly exp: Int32Array;
  /** `log[a]` = i with g^i = a, for a ≠ 0 (`log[0]` = −1). */
  readonly log: Int32Array;
  /** a + b. */
  add(a: number, b: number): number;
  /** a − b. */
  sub(a: number, b: number): number;
  /** −a. */
  neg(a: number): number;
  /** a · b. */
  mul(a: number, b: number): number;
  /** a⁻¹ for a ≠ 0. */
  inv(a: number): number;
  /** Quadratic character: 0 at 0, 1 on nonzero squares, −1 otherwise (q odd). */
  chi(a: number): -1 | 0 | 1;
}

/**
 * Splits q into p^k when q is a prime power.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { primePower } from "./galois.ts";
 * assert(primePower(343)?.p === 7 && primePower(343)?.k === 3);
 * assert(primePower(12) === null);
 * ```
 * @param q An integer ≥ 2.
 * @returns `{ p, k }`, or null when q is not a prime power.
 */
export function primePower(q: number): { p: number; k: number } | null {
  if (!Number.isSafeInteger(q) || q < 2) return null;
  let p = 0;
  for (let d = 2; d * d <= q; d++) {
    if (q % d === 0) {
      p = d;
      break;
    }
  }
  if (p === 0) return { p: q, k: 1 };
  let r = q, k = 0;
  while (r % p === 0) {
    r /= p;
    k++;
  }
  return r === 1 ? { p, k } : null;
}

const cache = new Map<number, GaloisField>();

/**
 * Builds GF(q) for a prime power q (cached per q).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { galoisField } from "./galois.ts";
 * const f = galoisField(9);
 * const a = 5, b = 7;
 * assert(f.mul(f.add(a, b), 1) === f.add(b, a));
 * assert(f.mul(a, f.inv(a)) === 1);
 * ```
 * @param q The field order; must be a prime power ≤ 2^24.
 * @returns The field.
 */
export function galoisField(q: number): GaloisField {
  const hit = cache.get(q);
  if (hit) return hit;
  const pk = primePower(q);
  if (pk === null || q > 1 << 24) {
    throw new RangeError(
      `Cannot build GF(q) as 'q' must be a prime power ≤ 2^24: current value is ${q}`,
    );
  }
  const field = buildField(pk.p, pk.k);
  cache.set(q, field);
  return field;
}

function buildField(p: number, k: number): GaloisField {
  const q = p ** k;
  const { modulus, exp } = findPrimitive(p, k);
  const log = new Int32Array(q).fill(-1);
  for (let i = 0; i < q - 1; i++) log[exp[i]!] = i;
  const digitOp = (a: number, b: number, sign: 1 | -1): number => {
    if (k === 1) return (((a + sign * b) % p) + p) % p;
    let r = 0, scale = 1;
    for (let i = 0; i < k; i++) {
      const da = a % p, db = b % p;
      r += ((((da + sign * db) % p) + p) % p) * scale;
      a = (a - da) / p;
      b = (b - db) / p;
      scale *= p;
    }
    return r;
  };
  const add = (a: number, b: number): number => digitOp(a, b, 1);
  const sub = (a: number, b: number): number => digitOp(a, b, -1);
  const mul = (a: number, b: number): number => {
    if (a === 0 || b === 0) return 0;
    return exp[(log[a]! + log[b]!) % (q - 1)]!;
  };
  const inv = (a: number): number => {
    if (a === 0) throw new RangeError("Cannot invert 0 in a finite field");
    return exp[(q - 1 - log[a]!) % (q - 1)]!;
  };
  const chi = (a: number): -1 | 0 | 1 => (a === 0 ? 0 : log[a]! % 2 === 0 ? 1 : -1);
  return {
    p,
    k,
    q,
    modulus,
    exp,
    log,
    add,
    sub,
    neg: (a) => sub(0, a),
    mul,
    inv,
    chi,
  };
}

/**
 * Searches monic polynomials f of degree k over GF(p) until x has order
 * p^k − 1 modulo f; then f is primitive (hence irreducible): if f were
 * reducible the ring GF(p)[x]/f would have fewer than p^k − 1 units.
 */
function findPrimitive(p: number, k: number): { modulus: number[]; exp: Int32Array } {
  const q = p ** k;
  const exp = new Int32Array(q - 1);
  const digits = new Int32Array(k);
  // Candidates: the k low coefficients c_0..c_{k-1} encoded as an integer; c_0 ≠ 0.
  for (let code = 1; code < q; code++) {
    if (code % p === 0) continue;
    const low: number[] = [];
    for (let i = 0, c = code; i < k; i++, c = Math.floor(c / p)) low.push(c % p);
    // Powers of x: start at 1, multiply by x (shift, then reduce x^k = −Σ c_i x^i).
    digits.fill(0);
    digits[0] = 1;
    let order = 0;
    for (let step = 0; step < q - 1; step++) {
      let value = 0;
      for (let i = k - 1; i >= 0; i--) value = value * p + digits[i]!;
      if (step > 0 && value === 1) break;
      exp[step] = value;
      order = step + 1;
      const top = digits[k - 1]!;
      for (let i = k - 1; i > 0; i--) digits[i] = digits[i - 1]!;
      digits[0] = 0;
      if (top !== 0) {
        for (let i = 0; i < k; i++) digits[i] = (((digits[i]! - top * low[i]!) % p) + p) % p;
      }
    }
    if (order !== q - 1) continue;
    // The last power must return to 1 (x^(q−1) = 1), which holds when all q − 1 values were distinct.
    let value = 0;
    for (let i = k - 1; i >= 0; i--) value = value * p + digits[i]!;
    if (value !== 1) continue;
    return { modulus: [...low, 1], exp };
  }
  throw new Error(`No primitive polynomial of degree ${k} over GF(${p}) found (unreachable)`);
}
