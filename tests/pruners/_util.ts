/**
 * Test helpers for the pruner tests: error assertions and correlated
 * synthetic calibration inputs with outlier channels.
 *
 * @module
 */

import assert from "node:assert/strict";
import { prng } from "../../core/prng.ts";

/** Asserts that `fn` throws an instance of `cls` whose message contains `includes`. */
export function assertThrowsWith(
  fn: () => unknown,
  cls: new (...args: never[]) => Error,
  includes: string,
): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e}`);
    assert.ok(
      (e as Error).message.includes(includes),
      `message "${(e as Error).message}" lacks "${includes}"`,
    );
    return true;
  });
}

/** Asserts that the promise rejects with an instance of `cls` whose message contains `includes`. */
export async function assertRejectsWith(
  p: () => Promise<unknown>,
  cls: new (...args: never[]) => Error,
  includes: string,
): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e}`);
    assert.ok(
      (e as Error).message.includes(includes),
      `message "${(e as Error).message}" lacks "${includes}"`,
    );
    return true;
  });
}

/**
 * Correlated inputs X [tokens, cols] mimicking LLM activations: a low-rank
 * shared part plus independent noise, with a few outlier channels scaled up.
 */
export function correlatedInputs(
  tokens: number,
  cols: number,
  seed: number,
  options: { rank?: number; outliers?: number; outlierScale?: number } = {},
): Float64Array {
  const { rank = 4, outliers = 3, outlierScale = 20 } = options;
  const rng = prng(seed);
  const mix = new Float64Array(rank * cols);
  for (let i = 0; i < mix.length; i++) mix[i] = rng.normal();
  const scale = new Float64Array(cols).fill(1);
  for (let k = 0; k < outliers; k++) scale[rng.int(cols)] = outlierScale;
  const x = new Float64Array(tokens * cols);
  const z = new Float64Array(rank);
  for (let t = 0; t < tokens; t++) {
    for (let k = 0; k < rank; k++) z[k] = rng.normal();
    for (let c = 0; c < cols; c++) {
      let v = 0.5 * rng.normal();
      for (let k = 0; k < rank; k++) v += z[k]! * mix[k * cols + c]!;
      x[t * cols + c] = v * scale[c]!;
    }
  }
  return x;
}

/** Gaussian weights [rows, cols] as f32. */
export function randomWeight(rows: number, cols: number, seed: number): Float32Array {
  const rng = prng(seed);
  const w = new Float32Array(rows * cols);
  for (let i = 0; i < w.length; i++) w[i] = rng.normal();
  return w;
}
