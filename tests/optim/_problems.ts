/**
 * Test-only: two small seeded training problems for the optimizers, with
 * hand-written gradients (computed in float64, returned in float32):
 * - {@linkcode leastSquares}: 256 parameters, min (1/512)·‖A·x − b‖²;
 * - {@linkcode mlp}: a 32 → 64 → 4 tanh MLP (2,372 parameters in four tensors,
 *   one of 2,048 entries) regressing a teacher MLP of the same shape.
 *
 * @module
 */

import { prng } from "../../core/prng.ts";

/** Named parameters in any numeric array. */
export type AnyParams = Readonly<Record<string, ArrayLike<number>>>;

/** A problem: initial parameters, the loss and its gradient. */
export interface Problem {
  /** Initial parameters (fresh on every read). */
  init(): Record<string, Float32Array>;
  /** The training loss at `params`. */
  loss(params: AnyParams): number;
  /** The gradient at `params`, rounded to float32. */
  grad(params: AnyParams): Record<string, Float32Array>;
}

/**
 * Least squares with 256 unknowns and 512 equations: A has N(0, 1) entries,
 * b = A·x* + 0.1·noise with x* ~ N(0, 0.1²); the loss is the mean squared
 * residual (about 3 at x = 0, where x starts, and 0.005 at the optimum).
 *
 * @param seed Seed of A, x* and the noise.
 * @returns The problem.
 */
export function leastSquares(seed = 1): Problem {
  const n = 512, p = 256;
  const rng = prng(seed);
  const A = Float64Array.from({ length: n * p }, () => rng.normal()); // [n, p]
  const xs = Float64Array.from({ length: p }, () => 0.1 * rng.normal());
  const b = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < p; j++) s += A[i * p + j]! * xs[j]!;
    b[i] = s + 0.1 * rng.normal();
  }
  const residual = (x: ArrayLike<number>): Float64Array => {
    const r = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      let s = -b[i]!;
      for (let j = 0; j < p; j++) s += A[i * p + j]! * x[j]!;
      r[i] = s;
    }
    return r;
  };
  return {
    init: () => ({ x: new Float32Array(p) }),
    loss: (params) => residual(params.x!).reduce((s, v) => s + v * v, 0) / n,
    grad(params) {
      const r = residual(params.x!);
      const g = new Float64Array(p);
      for (let i = 0; i < n; i++) {
        const ri = (2 * r[i]!) / n;
        for (let j = 0; j < p; j++) g[j]! += ri * A[i * p + j]!;
      }
      return { x: Float32Array.from(g) };
    },
  };
}

/** Sizes of {@linkcode mlp}. */
const IN = 32, HID = 64, OUT = 4, N = 256;

function randomMlp(rng: ReturnType<typeof prng>): Record<string, Float32Array> {
  return {
    w1: Float32Array.from({ length: IN * HID }, () => rng.normal() / Math.sqrt(IN)), // [IN, HID]
    b1: new Float32Array(HID),
    w2: Float32Array.from({ length: HID * OUT }, () => rng.normal() / Math.sqrt(HID)), // [HID, OUT]
    b2: new Float32Array(OUT),
  };
}

/** Hidden activations tanh(X·W1 + b1), [N, HID], and outputs H·W2 + b2, [N, OUT]. */
function forward(X: Float64Array, q: AnyParams): [Float64Array, Float64Array] {
  const w1 = q.w1!, b1 = q.b1!, w2 = q.w2!, b2 = q.b2!;
  const H = new Float64Array(N * HID), Y = new Float64Array(N * OUT);
  for (let i = 0; i < N; i++) {
    for (let h = 0; h < HID; h++) {
      let s = b1[h]!;
      for (let c = 0; c < IN; c++) s += X[i * IN + c]! * w1[c * HID + h]!;
      H[i * HID + h] = Math.tanh(s);
    }
    for (let o = 0; o < OUT; o++) {
      let s = b2[o]!;
      for (let h = 0; h < HID; h++) s += H[i * HID + h]! * w2[h * OUT + o]!;
      Y[i * OUT + o] = s;
    }
  }
  return [H, Y];
}

/**
 * A 32 → 64 → 4 tanh MLP (w1 [32, 64], b1 [64], w2 [64, 4], b2 [4]: 2,372
 * parameters) fit by mean squared error to a random teacher of the same
 * shape (biases 0.1·N(0, 1)) on 256 N(0, 1) inputs; the student starts from
 * its own random draw with zero biases.
 *
 * @param seed Seed of the data, the teacher and the student.
 * @returns The problem.
 */
export function mlp(seed = 1): Problem {
  const rng = prng(seed);
  const X = Float64Array.from({ length: N * IN }, () => rng.normal()); // [N, IN]
  const teacher = randomMlp(rng);
  teacher.b1 = teacher.b1!.map(() => 0.1 * rng.normal());
  teacher.b2 = teacher.b2!.map(() => 0.1 * rng.normal());
  const [, T] = forward(X, teacher);
  const student = randomMlp(rng);
  return {
    init: () => Object.fromEntries(Object.entries(student).map(([k, v]) => [k, v.slice()])),
    loss(params) {
      const [, Y] = forward(X, params);
      let s = 0;
      for (let i = 0; i < Y.length; i++) s += (Y[i]! - T[i]!) ** 2;
      return s / Y.length;
    },
    grad(params) {
      const [H, Y] = forward(X, params);
      const w2 = params.w2!;
      const gw1 = new Float64Array(IN * HID), gb1 = new Float64Array(HID);
      const gw2 = new Float64Array(HID * OUT), gb2 = new Float64Array(OUT);
      const dY = new Float64Array(OUT), dZ = new Float64Array(HID);
      for (let i = 0; i < N; i++) {
        for (let o = 0; o < OUT; o++) {
          dY[o] = (2 * (Y[i * OUT + o]! - T[i * OUT + o]!)) / (N * OUT);
          gb2[o]! += dY[o]!;
        }
        for (let h = 0; h < HID; h++) {
          const hv = H[i * HID + h]!;
          let dh = 0;
          for (let o = 0; o < OUT; o++) {
            gw2[h * OUT + o]! += hv * dY[o]!;
            dh += dY[o]! * w2[h * OUT + o]!;
          }
          dZ[h] = dh * (1 - hv * hv);
          gb1[h]! += dZ[h]!;
        }
        for (let c = 0; c < IN; c++) {
          const xv = X[i * IN + c]!;
          for (let h = 0; h < HID; h++) gw1[c * HID + h]! += xv * dZ[h]!;
        }
      }
      return {
        w1: Float32Array.from(gw1),
        b1: Float32Array.from(gb1),
        w2: Float32Array.from(gw2),
        b2: Float32Array.from(gb2),
      };
    },
  };
}
