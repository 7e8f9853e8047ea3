import assert from "node:assert/strict";
import {
  densityToK,
  randomKCompress,
  randomKSelect,
  sparseToDense,
  topKCompress,
  topKSelect,
} from "../../pruners/topk_compressor.ts";
import { prng } from "../../core/prng.ts";

/** Brute force: sort by (|x| descending, index ascending) and keep the first k. */
function bruteTopK(x: ArrayLike<number>, k: number, offset = 0): number[] {
  return Array.from(x, (v, i) => [Math.abs(v), i] as const)
    .sort((a, b) => b[0] - a[0] || a[1] - b[1])
    .slice(0, k)
    .map(([, i]) => i + offset)
    .sort((a, b) => a - b);
}

Deno.test("topKSelect keeps exactly the k largest magnitudes, as sorting does", () => {
  const rng = prng(1);
  for (let trial = 0; trial < 200; trial++) {
    const n = 1 + rng.int(200);
    // Few distinct values force ties, which break towards the lower index.
    const distinct = trial % 2 === 0 ? 1e9 : 1 + rng.int(6);
    const x = Float32Array.from({ length: n }, () => (rng.int(distinct) - distinct / 2) * 0.5);
    const k = rng.int(n + 1);
    const s = topKSelect(x, { k });
    assert.deepStrictEqual(Array.from(s.indices), bruteTopK(x, k));
    assert.deepStrictEqual(Array.from(s.values), Array.from(s.indices, (i) => x[i]!));
  }
});

Deno.test("topKSelect per block keeps the top k of every block, and density applies per block", () => {
  const rng = prng(2);
  const x = Float32Array.from({ length: 250 }, () => rng.normal());
  const s = topKSelect(x, { k: 3, blockSize: 64 });
  const expected = [0, 64, 128, 192].flatMap((b) => bruteTopK(x.subarray(b, b + 64), 3, b));
  assert.deepStrictEqual(Array.from(s.indices), expected);
  assert.equal(topKSelect(x, { density: 0.1, blockSize: 100 }).indices.length, 10 + 10 + 5);
  assert.equal(topKSelect(x).indices.length, 3); // default density 1%: ⌈2.5⌉ = 3
});

Deno.test("density keeps ⌈density·len⌉ per block, MicroAdam's reference rule, where rounding keeps fewer", () => {
  // [len, density, ⌈density·len⌉]; rounding would give 20, 2, 0 (then 1), 7.
  const cases = [[2048, 0.01, 21], [248, 0.01, 3], [4, 0.01, 1], [100, 0.07, 8], [600, 0.01, 6]];
  const rng = prng(6);
  for (const [len, density, k] of cases) {
    assert.equal(densityToK(len!, density!), k, `${density}·${len}`);
    const x = Float32Array.from({ length: len! }, () => rng.normal());
    assert.equal(topKSelect(x, { density: density! }).indices.length, k);
    assert.equal(randomKSelect(x, { density: density!, seed: 1 }).indices.length, k);
  }
  // Per block: 2,048 entries in blocks of 600 keep 6 + 6 + 6 + ⌈2.48⌉ = 21 (rounding: 20).
  const x = Float32Array.from({ length: 2048 }, () => rng.normal());
  const s = topKSelect(x, { density: 0.01, blockSize: 600 });
  const perBlock = [0, 1, 2, 3].map((b) =>
    s.indices.filter((i) => i >= b * 600 && i < (b + 1) * 600).length
  );
  assert.deepStrictEqual(perBlock, [6, 6, 6, 3]);
  assert.equal(densityToK(0, 0.5), 0);
  assert.throws(() => densityToK(10, 0), RangeError);
  assert.throws(() => densityToK(1.5, 0.5), RangeError);
});

Deno.test("topKCompress zeroes all but the kept entries and leaves its input alone", () => {
  const x = new Float32Array([1, -5, 3, -2, 4]);
  const y = topKCompress(x, { k: 2 });
  assert.deepStrictEqual(Array.from(y), [0, -5, 0, 0, 4]);
  assert.deepStrictEqual(Array.from(x), [1, -5, 3, -2, 4]);
  assert.throws(
    () => topKCompress(x, { k: 1, density: 0.5 }),
    (e: Error) => e instanceof TypeError && e.message.includes("'k'"),
  );
  assert.throws(
    () => topKCompress(x, { density: 2 }),
    (e: Error) => e instanceof RangeError && e.message.includes("'density'"),
  );
});

Deno.test("randomKSelect is seeded, picks k distinct indices per block and is uniform", () => {
  const x = Float32Array.from({ length: 40 }, (_, i) => i + 1);
  const a = randomKSelect(x, { k: 5, blockSize: 20, seed: 3 });
  assert.deepStrictEqual(a, randomKSelect(x, { k: 5, blockSize: 20, seed: 3 }));
  assert.notDeepStrictEqual(a.indices, randomKSelect(x, { k: 5, blockSize: 20, seed: 4 }).indices);
  assert.equal(new Set(a.indices).size, 10);
  assert.equal(a.indices.filter((i) => i < 20).length, 5);
  // Each index is chosen with probability k/n: check the counts over many seeds.
  const counts = new Float64Array(40);
  const trials = 2000;
  for (let s = 0; s < trials; s++) {
    for (const i of randomKSelect(x, { k: 4, seed: s }).indices) counts[i]!++;
  }
  const p = 4 / 40, sd = Math.sqrt(trials * p * (1 - p));
  for (const c of counts) assert.ok(Math.abs(c - trials * p) < 5 * sd, `count ${c}`);
});

Deno.test("unbiased random-k is unbiased: the mean of C(x) over seeds approaches x", () => {
  const rng = prng(5);
  const x = Float32Array.from({ length: 30 }, () => rng.normal());
  const mean = new Float64Array(30);
  const trials = 4000;
  for (let s = 0; s < trials; s++) {
    randomKCompress(x, { k: 6, seed: s, unbiased: true }).forEach((v, i) => mean[i]! += v / trials);
  }
  // Per-entry sd of one draw is |x|·sqrt(n/k − 1) = 2|x|.
  mean.forEach((m, i) =>
    assert.ok(Math.abs(m - x[i]!) < 5 * 2 * Math.abs(x[i]!) / Math.sqrt(trials))
  );
  const s = randomKSelect(x, { k: 6, seed: 1, unbiased: true });
  assert.deepStrictEqual(Array.from(sparseToDense(s)).filter((v) => v !== 0).length, 6);
});
