import assert from "node:assert/strict";
import { qsgdCompress, qsgdDequantize, qsgdQuantize } from "../../quantizers/qsgd.ts";
import { prng } from "../../core/prng.ts";

Deno.test("qsgdQuantize keeps levels in [−s, s] and one scale per block, and is seeded", () => {
  const rng = prng(1);
  const x = Float32Array.from({ length: 100 }, () => rng.normal());
  for (const bits of [2, 3, 4, 8]) {
    const q = qsgdQuantize(x, { bits, blockSize: 32, seed: 7 });
    const s = 2 ** (bits - 1) - 1;
    assert.equal(q.scales.length, 4);
    assert.ok(q.levels.every((l) => Math.abs(l) <= s));
    assert.deepStrictEqual(q, qsgdQuantize(x, { bits, blockSize: 32, seed: 7 }));
    // Each entry is rounded to one of its two neighbouring levels.
    const y = qsgdDequantize(q);
    y.forEach((v, i) => {
      const scale = q.scales[Math.floor(i / 32)]!;
      assert.ok(Math.abs(v - x[i]!) <= scale / s + 1e-6);
      assert.ok(v === 0 || Math.sign(v) === Math.sign(x[i]!));
    });
  }
  assert.notDeepStrictEqual(
    qsgdQuantize(x, { seed: 1 }).levels,
    qsgdQuantize(x, { seed: 2 }).levels,
  );
});

Deno.test("qsgdCompress is unbiased: the mean over seeds approaches x, for both norms", () => {
  const rng = prng(2);
  const x = Float32Array.from({ length: 64 }, () => rng.normal());
  for (const norm of ["max", "l2"] as const) {
    const trials = 3000;
    const mean = new Float64Array(x.length);
    for (let s = 0; s < trials; s++) {
      qsgdCompress(x, { bits: 2, blockSize: 16, norm, seed: s }).forEach((v, i) =>
        mean[i]! += v / trials
      );
    }
    // One draw deviates from x by at most one level width (the scale for 2 bits).
    const q = qsgdQuantize(x, { bits: 2, blockSize: 16, norm });
    mean.forEach((m, i) => {
      const width = q.scales[Math.floor(i / 16)]!;
      assert.ok(Math.abs(m - x[i]!) < (5 * width / 2) / Math.sqrt(trials), `${norm} entry ${i}`);
    });
  }
});

Deno.test("qsgdCompress reproduces block maxima and zeros exactly and validates its options", () => {
  const x = new Float32Array([0, 2, -1, 0.5, 0, 0, 0, 0]);
  const y = qsgdCompress(x, { bits: 4, blockSize: 4, seed: 3 });
  assert.equal(y[1], 2);
  assert.deepStrictEqual(Array.from(y.subarray(4)), [0, 0, 0, 0]);
  assert.equal(y[0], 0);
  assert.throws(
    () => qsgdCompress(x, { bits: 1 }),
    (e: Error) => e instanceof RangeError && e.message.includes("'bits'"),
  );
  assert.throws(
    () => qsgdCompress(x, { blockSize: 0 }),
    (e: Error) => e instanceof RangeError && e.message.includes("'blockSize'"),
  );
});
