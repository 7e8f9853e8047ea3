/**
 * Seeded pseudo-random numbers: every random choice in the library takes a
 * `seed` or a {@linkcode Prng}. Web-standard only.
 *
 * The generator is xoshiro128** (Blackman and Vigna), seeded through
 * splitmix32 so that nearby seeds give unrelated streams.
 *
 * @module
 */

/** A seeded generator of uniform and normal variates. */
export interface Prng {
  /** A uniform 32-bit unsigned integer. */
  nextU32(): number;
  /** A uniform float in [0, 1) with 53 random bits. */
  uniform(): number;
  /** A standard normal variate (Box–Muller, both halves used). */
  normal(): number;
  /** A uniform integer in [0, n). */
  int(n: number): number;
}

function splitmix32(state: number): () => number {
  let s = state >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/**
 * Creates a seeded generator.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { prng } from "./prng.ts";
 * const a = prng(42), b = prng(42);
 * assert(a.normal() === b.normal());
 * ```
 * @param seed Any integer (taken modulo 2^32).
 * @returns A fresh generator; the same seed gives the same stream.
 */
export function prng(seed = 0): Prng {
  if (!Number.isFinite(seed)) {
    throw new RangeError(
      `Cannot seed a generator as 'seed' must be finite: current value is ${seed}`,
    );
  }
  const init = splitmix32(Math.trunc(seed) >>> 0);
  let s0 = init(), s1 = init(), s2 = init(), s3 = init();
  if ((s0 | s1 | s2 | s3) === 0) s0 = 1;
  let spare: number | null = null;
  const nextU32 = (): number => {
    const result = Math.imul(rotl(Math.imul(s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (s1 << 9) >>> 0;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 = (s2 ^ t) >>> 0;
    s3 = rotl(s3 >>> 0, 11);
    s0 >>>= 0;
    s1 >>>= 0;
    return result;
  };
  const uniform = (): number => {
    const hi = nextU32() >>> 5; // 27 bits
    const lo = nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  };
  const normal = (): number => {
    if (spare !== null) {
      const v = spare;
      spare = null;
      return v;
    }
    let u = uniform();
    while (u === 0) u = uniform();
    const v = uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  };
  const int = (n: number): number => {
    if (!Number.isSafeInteger(n) || n <= 0) {
      throw new RangeError(
        `Cannot draw an integer as 'n' must be a positive integer: current value is ${n}`,
      );
    }
    return Math.floor(uniform() * n);
  };
  return { nextU32, uniform, normal, int };
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/**
 * Resolves a `seed`/`prng` option pair into a generator.
 *
 * @param options `prng` wins over `seed`; `seed` defaults to 0.
 * @returns The generator to use.
 */
export function resolvePrng(options: { seed?: number; prng?: Prng }): Prng {
  return options.prng ?? prng(options.seed ?? 0);
}

/**
 * Fills a new Float64Array with standard normal variates.
 *
 * @param n Element count.
 * @param rng The generator.
 * @returns The samples.
 */
export function randn(n: number, rng: Prng): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal();
  return out;
}

/**
 * A seeded Fisher–Yates permutation of `0..n-1`.
 *
 * @param n Length.
 * @param rng The generator.
 * @returns The permutation.
 */
export function permutation(n: number, rng: Prng): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}
