/**
 * Fast exact product with a Paley type I block (library-internal).
 *
 * The block of order q + 1 (q = p^k ≡ 3 mod 4) built by `hadamard.ts` is
 * H = I + S, S = [[0, 1ᵀ], [−1, Q]] with the Jacobsthal matrix
 * Q[a, b] = χ(a − b). With the field elements indexed by their base-p digits
 * (`galois.ts`), a − b is digit-wise subtraction mod p, so Q is a convolution
 * over the group (Z_p)^k and the k-dimensional size-p DFT diagonalizes it:
 * Q·x = IDFT(λ ⊙ DFT(x)), λ_u = Σ_b χ(b)·ω^{−u·b}, ω = e^{2πi/p}. The whole
 * block is one multiplier too: for y = (I + σS)·[x₀; x] (σ = −1 gives Hᵀ = I − S),
 *
 *   y₀ = x₀ + σ·Σx,   y[1:] = IDFT((1 + σλ) ⊙ DFT(x)) − σ·x₀,
 *
 * and the constant −σ·x₀ enters at the zero frequency. Real input keeps the
 * spectrum Hermitian, so the transform runs on q reals in a packed layout:
 * axes are transformed in order 0, 1, …, k − 1 (axis i has stride p^i); a
 * line whose earlier coordinates are all 0 is real (slot 0 = its sum, slot u
 * = Re X_u, slot u + h = Im X_u for u in [1, h], h = (p − 1)/2); any other
 * line is the real or imaginary half of a complex line, paired through its
 * lowest nonzero earlier coordinate c (Re at c ∈ [1, h], Im at c + h), and
 * gets a full complex DFT. The inverse runs the axes backwards. Each p-point
 * DFT folds x_j ± x_{p−j} first: about 4·k multiply-adds per element each
 * way, against q + 1 for the dense product.
 *
 * `kernels/paley_kernel.ts` runs the same algorithm on the GPU; this file is
 * its executable specification. Web-standard only.
 *
 * @see R. E. A. C. Paley, "On orthogonal matrices", J. Math. Phys. 12 (1933).
 * @module
 */

import { galoisField, primePower } from "./galois.ts";

/** The lines one axis pass transforms, as offsets into the q field entries. */
export interface PaleyAxis {
  /** Distance between consecutive entries of a line, p^j. */
  readonly stride: number;
  /** First entries of the real lines. */
  readonly real: Int32Array;
  /** First entries of the real halves of the complex lines. */
  readonly re: Int32Array;
  /** First entries of the matching imaginary halves. */
  readonly im: Int32Array;
}

/** Everything the fast Paley I transform of order q + 1 needs, computed once per q. */
export interface PaleyFastPlan {
  /** Field order q = p^k. */
  readonly q: number;
  /** Characteristic. */
  readonly p: number;
  /** Degree. */
  readonly k: number;
  /** (p − 1)/2. */
  readonly h: number;
  /** cos(2π·t/p), t in [0, p). */
  readonly cos: Float64Array;
  /** sin(2π·t/p), t in [0, p). */
  readonly sin: Float64Array;
  /** Axis passes, axis 0 first. */
  readonly axes: readonly PaleyAxis[];
  /** Packed positions of the real parts of the stored frequencies (0, the real DC, excluded). */
  readonly rePos: Int32Array;
  /** Packed positions of the matching imaginary parts. */
  readonly imPos: Int32Array;
  /**
   * Multipliers (1 + σ·λ_u)/q, [q, 2] (re, im), at the packed position of the real part of
   * each stored frequency u (and at 0 for u = 0), for σ = +1 (H).
   */
  readonly mul: Float64Array;
  /** The same for σ = −1 (Hᵀ). */
  readonly mulT: Float64Array;
}

/**
 * The line offsets of axis pass j (see the module docs).
 *
 * @param p Characteristic.
 * @param k Degree.
 * @param j Axis.
 * @returns The axis.
 */
export function paleyAxis(p: number, k: number, j: number): PaleyAxis {
  const h = (p - 1) / 2;
  const stride = p ** j, after = p ** (k - 1 - j);
  const real = new Int32Array(after);
  for (let r = 0; r < after; r++) real[r] = r * stride * p;
  const re: number[] = [], im: number[] = [];
  // Lowest nonzero earlier axis i: coordinates below i are 0, c_i ∈ [1, h], the
  // ones between i and j are free, and so are the ones after j.
  for (let i = 0; i < j; i++) {
    const mid = p ** (j - 1 - i), pi = p ** i;
    for (let t = 0; t < h * mid * after; t++) {
      const c = 1 + (t % h), m = Math.floor(t / h) % mid, hi = Math.floor(t / (h * mid));
      const b = c * pi + m * pi * p + hi * stride * p;
      re.push(b);
      im.push(b + h * pi);
    }
  }
  return { stride, real, re: Int32Array.from(re), im: Int32Array.from(im) };
}

const plans = new Map<number, PaleyFastPlan>();

/**
 * The plan of the fast transform by the Paley I block of order q + 1.
 *
 * @param q A prime power ≡ 3 (mod 4).
 * @returns The plan (cached per q).
 */
export function paleyFastPlan(q: number): PaleyFastPlan {
  const hit = plans.get(q);
  if (hit !== undefined) return hit;
  const pk = primePower(q);
  if (pk === null || q % 4 !== 3) {
    throw new RangeError(
      `Cannot plan a Paley I transform as 'q' must be a prime power ≡ 3 (mod 4): current value is ${q}`,
    );
  }
  const { p, k } = pk;
  const h = (p - 1) / 2;
  const cos = new Float64Array(p), sin = new Float64Array(p);
  for (let t = 0; t < p; t++) {
    cos[t] = Math.cos((2 * Math.PI * t) / p);
    sin[t] = Math.sin((2 * Math.PI * t) / p);
  }
  const axes: PaleyAxis[] = [];
  for (let j = 0; j < k; j++) axes.push(paleyAxis(p, k, j));
  // Packed position → stored frequency: the lowest nonzero coordinate c_i is
  // u_i (real part) or u_i + h (imaginary part); the others are u's digits.
  const field = galoisField(q);
  const chi = new Float64Array(q);
  for (let b = 0; b < q; b++) chi[b] = field.chi(b);
  const digits = (e: number): number[] => {
    const d: number[] = [];
    for (let i = 0; i < k; i++, e = Math.floor(e / p)) d.push(e % p);
    return d;
  };
  const bDigits = Array.from({ length: q }, (_, b) => digits(b));
  const rePos: number[] = [], imPos: number[] = [];
  const mul = new Float64Array(2 * q), mulT = new Float64Array(2 * q);
  mul[0] = mulT[0] = 1 / q; // λ_0 = Σχ = 0
  for (let pos = 1; pos < q; pos++) {
    const c = digits(pos);
    let i = 0;
    while (c[i] === 0) i++;
    if (c[i]! > h) continue;
    rePos.push(pos);
    imPos.push(pos + h * p ** i);
    // λ_u = Σ_b χ(b)·ω^{−u·b}, with u·b reduced mod p before the angle.
    let lr = 0, li = 0;
    for (let b = 1; b < q; b++) {
      const bd = bDigits[b]!;
      let dot = 0;
      for (let a = 0; a < k; a++) dot += c[a]! * bd[a]!;
      const t = dot % p;
      lr += chi[b]! * cos[t]!;
      li -= chi[b]! * sin[t]!;
    }
    mul[2 * pos] = (1 + lr) / q;
    mul[2 * pos + 1] = li / q;
    mulT[2 * pos] = (1 - lr) / q;
    mulT[2 * pos + 1] = -li / q;
  }
  const plan: PaleyFastPlan = {
    q,
    p,
    k,
    h,
    cos,
    sin,
    axes,
    rePos: Int32Array.from(rePos),
    imPos: Int32Array.from(imPos),
    mul,
    mulT,
  };
  plans.set(q, plan);
  return plan;
}

/**
 * Whether the fast transform beats the dense product for the Paley I block
 * of order q + 1: it needs k ≥ 2 (for a prime field the p-point DFT is as
 * dense as the block).
 *
 * @param q The field order.
 * @returns True for q = p^k ≡ 3 (mod 4) with k ≥ 2.
 */
export function paleyFastApplies(q: number): boolean {
  const pk = primePower(q);
  return pk !== null && pk.k >= 2 && q % 4 === 3;
}

/** Scratch of {@linkcode paleyInPlace}: 4 lines of p plus one block of q + 1. */
function scratchFor(plan: PaleyFastPlan): Float64Array {
  return new Float64Array(4 * plan.p + plan.q + 1);
}

/**
 * y = (I + σS)·x for every block of q + 1 entries of `x` seen as [·, q + 1, s]
 * (the block along the middle axis), in place: σ = +1 is H, σ = −1 (transpose) is Hᵀ.
 *
 * @param x Values; length a multiple of (q + 1)·s; overwritten.
 * @param plan From {@linkcode paleyFastPlan}.
 * @param s Stride of the block axis (1 for contiguous blocks).
 * @param transpose Apply Hᵀ.
 * @param scratch Optional scratch from a previous call with the same plan.
 */
export function paleyInPlace(
  x: Float64Array,
  plan: PaleyFastPlan,
  s = 1,
  transpose = false,
  scratch: Float64Array = scratchFor(plan),
): void {
  const m = plan.q + 1, span = m * s;
  if (x.length % span !== 0) {
    throw new RangeError(
      `Cannot apply a Paley block of order ${m} with stride ${s} to ${x.length} entries`,
    );
  }
  if (scratch.length < 4 * plan.p + m) scratch = scratchFor(plan);
  const block = scratch.subarray(4 * plan.p, 4 * plan.p + m);
  for (let base = 0; base < x.length; base += span) {
    for (let t = 0; t < s; t++) {
      if (s === 1) {
        paleyBlock(x, base, plan, transpose, scratch);
        continue;
      }
      for (let i = 0; i < m; i++) block[i] = x[base + t + i * s]!;
      paleyBlock(block, 0, plan, transpose, scratch);
      for (let i = 0; i < m; i++) x[base + t + i * s] = block[i]!;
    }
  }
}

/** One block [x₀, x_0 … x_{q−1}] at `at`, in place. */
function paleyBlock(
  x: Float64Array,
  at: number,
  plan: PaleyFastPlan,
  transpose: boolean,
  scratch: Float64Array,
): void {
  const { axes, rePos, imPos } = plan;
  const sigma = transpose ? -1 : 1;
  const mul = transpose ? plan.mulT : plan.mul;
  const x0 = x[at]!;
  const f = at + 1;
  for (const a of axes) {
    for (let r = 0; r < a.real.length; r++) forwardReal(x, f + a.real[r]!, a.stride, plan, scratch);
    for (let r = 0; r < a.re.length; r++) {
      complexLine(x, f + a.re[r]!, f + a.im[r]!, a.stride, plan, -1, scratch);
    }
  }
  const dc = x[f]!;
  x[at] = x0 + sigma * dc;
  x[f] = dc * mul[0]! - sigma * x0;
  for (let r = 0; r < rePos.length; r++) {
    const pr = rePos[r]!, pi = imPos[r]!;
    const a = x[f + pr]!, b = x[f + pi]!, mr = mul[2 * pr]!, mi = mul[2 * pr + 1]!;
    x[f + pr] = a * mr - b * mi;
    x[f + pi] = a * mi + b * mr;
  }
  for (let j = axes.length - 1; j >= 0; j--) {
    const a = axes[j]!;
    for (let r = 0; r < a.re.length; r++) {
      complexLine(x, f + a.re[r]!, f + a.im[r]!, a.stride, plan, 1, scratch);
    }
    for (let r = 0; r < a.real.length; r++) inverseReal(x, f + a.real[r]!, a.stride, plan, scratch);
  }
}

/** Real line → packed spectrum (slot 0 sum, slots u, u + h = Re, Im of X_u). */
function forwardReal(
  x: Float64Array,
  b: number,
  s: number,
  plan: PaleyFastPlan,
  t: Float64Array,
): void {
  const { p, h, cos, sin } = plan;
  const x0 = x[b]!;
  let dc = x0;
  // t[0..h) = x_j + x_{p−j}, t[h..2h) = x_j − x_{p−j}, j = 1..h.
  for (let j = 1; j <= h; j++) {
    const u = x[b + j * s]!, v = x[b + (p - j) * s]!;
    t[j - 1] = u + v;
    t[h + j - 1] = u - v;
    dc += u + v;
  }
  x[b] = dc;
  for (let u = 1; u <= h; u++) {
    let re = x0, im = 0;
    for (let j = 1, e = u; j <= h; j++, e = e + u >= p ? e + u - p : e + u) {
      re += t[j - 1]! * cos[e]!;
      im -= t[h + j - 1]! * sin[e]!;
    }
    x[b + u * s] = re;
    x[b + (u + h) * s] = im;
  }
}

/** Packed spectrum → real line (inverse of {@linkcode forwardReal} without the 1/p). */
function inverseReal(
  x: Float64Array,
  b: number,
  s: number,
  plan: PaleyFastPlan,
  t: Float64Array,
): void {
  const { p, h, cos, sin } = plan;
  const r0 = x[b]!;
  let sum = r0;
  for (let u = 1; u <= h; u++) {
    t[u - 1] = 2 * x[b + u * s]!;
    t[h + u - 1] = 2 * x[b + (u + h) * s]!;
    sum += t[u - 1]!;
  }
  x[b] = sum;
  for (let m = 1; m <= h; m++) {
    let c = r0, d = 0;
    for (let u = 1, e = m; u <= h; u++, e = e + m >= p ? e + m - p : e + m) {
      c += t[u - 1]! * cos[e]!;
      d += t[h + u - 1]! * sin[e]!;
    }
    x[b + m * s] = c - d;
    x[b + (p - m) * s] = c + d;
  }
}

/**
 * Complex p-point DFT of the line (re at `br`, im at `bi`), in place:
 * X_u = Σ_m z_m·ω^{dir·u·m} (dir = −1 forward, +1 inverse, no 1/p).
 */
function complexLine(
  x: Float64Array,
  br: number,
  bi: number,
  s: number,
  plan: PaleyFastPlan,
  dir: 1 | -1,
  t: Float64Array,
): void {
  const { p, h, cos, sin } = plan;
  const zr0 = x[br]!, zi0 = x[bi]!;
  let sr0 = zr0, si0 = zi0;
  // t: [sum re, sum im, diff re, diff im] × h.
  for (let j = 1; j <= h; j++) {
    const ar = x[br + j * s]!, ai = x[bi + j * s]!;
    const cr = x[br + (p - j) * s]!, ci = x[bi + (p - j) * s]!;
    t[j - 1] = ar + cr;
    t[h + j - 1] = ai + ci;
    t[2 * h + j - 1] = ar - cr;
    t[3 * h + j - 1] = ai - ci;
    sr0 += ar + cr;
    si0 += ai + ci;
  }
  x[br] = sr0;
  x[bi] = si0;
  for (let u = 1; u <= h; u++) {
    let ar = zr0, ai = zi0, cr = 0, ci = 0;
    for (let j = 1, e = u; j <= h; j++, e = e + u >= p ? e + u - p : e + u) {
      const c = cos[e]!, sn = sin[e]!;
      ar += t[j - 1]! * c;
      ai += t[h + j - 1]! * c;
      cr += t[2 * h + j - 1]! * sn;
      ci += t[3 * h + j - 1]! * sn;
    }
    // X_u = A + dir·i·B, X_{p−u} = A − dir·i·B, with A = Σ sums·cos, B = Σ diffs·sin.
    x[br + u * s] = ar - dir * ci;
    x[bi + u * s] = ai + dir * cr;
    x[br + (p - u) * s] = ar + dir * ci;
    x[bi + (p - u) * s] = ai - dir * cr;
  }
}
