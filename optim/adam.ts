/**
 * Adam, the uncompressed baseline, as an optax-style transform. Web-standard only.
 *
 * μ ← β1·μ + (1 − β1)·g, ν ← β2·ν + (1 − β2)·g², and the update is
 * −lr·μ̂/(√ν̂ + ε) with μ̂ = μ/(1 − β1^t), ν̂ = ν/(1 − β2^t). The state holds μ
 * and ν in float32: 8 bytes per parameter.
 *
 * @see Kingma and Ba, "Adam: A Method for Stochastic Optimization" (2015), Algorithm 1.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { adam } from "./adam.ts";
 * import { applyUpdates, type Params } from "../core/transform.ts";
 * const opt = adam({ learningRate: 0.1 });
 * let params: Params = { w: new Float32Array([1]) };
 * let state = opt.init(params);
 * for (let i = 0; i < 100; i++) { // minimize w²
 *   const [u, s] = opt.update({ w: params.w!.map((w) => 2 * w) }, state);
 *   params = applyUpdates(params, u);
 *   state = s;
 * }
 * assert(Math.abs(params.w![0]!) < 0.1);
 * ```
 *
 * @module
 */

import {
  type GradientTransform,
  type LearningRate,
  learningRateAt,
  type Params,
  type TransformState,
} from "../core/transform.ts";
import { checkAdamHyper } from "./_adam_hyper.ts";
import { checkSameNames } from "../core/_names.ts";

/** Options of {@linkcode adam}. */
export interface AdamOptions {
  /** Step size, or a schedule of the step count. */
  learningRate: LearningRate;
  /** Decay of the first moment. @default 0.9 */
  beta1?: number;
  /** Decay of the second moment. @default 0.999 */
  beta2?: number;
  /** Added to √ν̂. @default 1e-8 */
  eps?: number;
}

/** State of {@linkcode adam}. */
export interface AdamState extends TransformState {
  /** First moment μ per parameter. */
  readonly mu: Params;
  /** Second moment ν per parameter. */
  readonly nu: Params;
}

/**
 * The Adam optimizer.
 *
 * @param options Learning rate, β1, β2, ε.
 * @returns A transform whose updates are −lr·μ̂/(√ν̂ + ε).
 */
export function adam(options: AdamOptions): GradientTransform<AdamState> {
  const { learningRate, beta1 = 0.9, beta2 = 0.999, eps = 1e-8 } = options;
  checkAdamHyper(beta1, beta2, eps, "Adam");
  if (typeof learningRate === "number") learningRateAt(learningRate, 0);
  return {
    init(params: Params): AdamState {
      const mu: Record<string, Float32Array> = {}, nu: Record<string, Float32Array> = {};
      for (const [name, p] of Object.entries(params)) {
        mu[name] = new Float32Array(p.length);
        nu[name] = new Float32Array(p.length);
      }
      return { count: 0, mu, nu };
    },
    update(grads: Params, state: AdamState): [Params, AdamState] {
      checkSameNames(grads, state.mu, "Adam");
      const t = state.count + 1;
      const lr = learningRateAt(learningRate, state.count);
      const c1 = 1 - beta1 ** t, c2 = 1 - beta2 ** t;
      const updates: Record<string, Float32Array> = {};
      const mu: Record<string, Float32Array> = {}, nu: Record<string, Float32Array> = {};
      for (const [name, g] of Object.entries(grads)) {
        const m0 = state.mu[name], v0 = state.nu[name];
        if (m0 === undefined || v0 === undefined || m0.length !== g.length) {
          throw new TypeError(`Cannot step Adam: no state of ${g.length} elements for '${name}'`);
        }
        const m = new Float32Array(g.length), v = new Float32Array(g.length);
        const u = new Float32Array(g.length);
        for (let i = 0; i < g.length; i++) {
          const gi = g[i]!;
          m[i] = beta1 * m0[i]! + (1 - beta1) * gi;
          v[i] = beta2 * v0[i]! + (1 - beta2) * gi * gi;
          u[i] = (-lr * (m[i]! / c1)) / (Math.sqrt(v[i]! / c2) + eps);
        }
        mu[name] = m;
        nu[name] = v;
        updates[name] = u;
      }
      return [updates, { count: t, mu, nu }];
    },
  };
}
