import assert from "node:assert/strict";
import {
  PACK_TILE,
  packedToGptqCheckpoint,
  packGptqCheckpoint,
  packWeights,
  unpackWeights,
} from "../../quantizers/pack.ts";
import { toGptqCheckpoint } from "../../quantizers/gptq_checkpoint.ts";
import type { QuantizedWeight } from "../../quantizers/quantized_weight.ts";
import { type Layout, randomQuantized } from "./_random_quantized.ts";

const CASES: [number, number, number, Layout, boolean][] = [
  // rows, cols, groupSize, layout, symmetric
  [8, 256, 128, "regular", false],
  [5, 200, 64, "actOrder", false], // shorter last group (200 = 3·64 + 8)
  [33, 70, -1, "regular", true],
  [7, 150, 32, "irregular", false],
];

/** Code of packed column j of row n, read bit by bit from the layout's documented formula. */
function codeAt(words: Uint32Array, bits: number, kp: number, n: number, j: number): number {
  const C = kp / 32, c = Math.floor(j / 32), i = j % 32;
  const base = ((Math.floor(n / 32) * C + c) * 32 + (n % 32)) * bits;
  let v = 0;
  for (let b = 0; b < bits; b++) {
    const s = i * bits + b;
    v |= ((words[base + (s >> 5)]! >>> (s & 31)) & 1) << b;
  }
  return v;
}

function assertSameQuantized(a: QuantizedWeight, b: QuantizedWeight): void {
  assert.deepEqual(a.shape, b.shape);
  assert.equal(a.bits, b.bits);
  assert.deepEqual(Array.from(a.codes), Array.from(b.codes));
  assert.deepEqual(Array.from(a.gIdx), Array.from(b.gIdx));
  assert.deepEqual(Array.from(a.scales), Array.from(b.scales));
  assert.deepEqual(Array.from(a.zeros), Array.from(b.zeros));
}

Deno.test("packWeights() places every code where the documented rowtile32 formula says", () => {
  let seed = 1;
  for (const bits of [2, 3, 4, 8]) {
    for (const [rows, cols, groupSize, layout, symmetric] of CASES) {
      const q = randomQuantized(rows, cols, bits, groupSize, seed++, layout, symmetric);
      const p = packWeights(q, { scaleType: "f32" });
      const groups = q.scales.length / rows;
      assert.equal(p.paddedRows % PACK_TILE, 0);
      assert(p.paddedRows >= rows && p.paddedRows - rows < PACK_TILE);
      assert.equal(p.groupStride % PACK_TILE, 0);
      assert.equal(p.paddedCols, groups * p.groupStride);
      assert.equal(p.words.length, (p.paddedRows / 32) * (p.paddedCols / 32) * 32 * bits);
      const colIdx = p.colIdx ?? Int32Array.from({ length: p.paddedCols }, (_, j) => j);
      const seen = new Set<number>();
      for (let j = 0; j < p.paddedCols; j++) {
        const k = colIdx[j]!;
        const g = Math.floor(j / p.groupStride);
        if (k >= 0) {
          assert.equal(q.gIdx[k], g, `column ${k} sits in its group`);
          seen.add(k);
        }
        for (let n = 0; n < p.paddedRows; n++) {
          const code = codeAt(p.words, bits, p.paddedCols, n, j);
          assert.equal(code, k >= 0 && n < rows ? q.codes[n * cols + k]! : 0);
        }
      }
      assert.equal(seen.size, cols, "every column appears once");
      for (let n = 0; n < rows; n++) {
        for (let g = 0; g < groups; g++) {
          assert.equal(p.scales[g * p.paddedRows + n], q.scales[n * groups + g]);
          const z = p.zeros ? p.zeros[g * p.paddedRows + n] : p.zero;
          assert.equal(z, q.zeros[n * groups + g]);
        }
      }
      assert.equal(p.zeros === null, symmetric, "a common zero point is stored once");
    }
  }
});

Deno.test("unpackWeights() inverts packWeights() for every width and group layout", () => {
  let seed = 50;
  for (const bits of [2, 3, 4, 8]) {
    for (const [rows, cols, groupSize, layout, symmetric] of CASES) {
      const q = randomQuantized(rows, cols, bits, groupSize, seed++, layout, symmetric);
      const back = unpackWeights(packWeights(q, { scaleType: "f32" }));
      assertSameQuantized(back, q);
      assert.equal(back.groupSize, q.groupSize);
      assert.equal(back.symmetric, q.symmetric);
      assert.deepEqual(back.perm && Array.from(back.perm), q.perm && Array.from(q.perm));
      // f16 storage returns the scales rounded to f16 and nothing else changes.
      const half = unpackWeights(packWeights(q));
      assert.deepEqual(Array.from(half.scales), Array.from(Float16Array.from(q.scales)));
      assert.deepEqual(Array.from(half.codes), Array.from(q.codes));
    }
  }
});

Deno.test("a regular layout whose groups fill whole chunks needs no column map", () => {
  const q = randomQuantized(40, 256, 4, 128, 3);
  assert.equal(packWeights(q).colIdx, null);
  assert.notEqual(packWeights(randomQuantized(40, 250, 4, 128, 3)).colIdx, null);
  assert.notEqual(packWeights(randomQuantized(40, 256, 4, 128, 3, "actOrder")).colIdx, null);
});

Deno.test("GPTQ checkpoints convert to and from the packed layout, v1 and v2", () => {
  let seed = 90;
  for (const bits of [2, 3, 4, 8]) {
    for (const [rows, cols, groupSize, layout] of CASES) {
      // Zero points ≥ 1 so version 1 can hold them.
      const q0 = randomQuantized(rows, cols, bits, groupSize, seed++, layout);
      const q = { ...q0, zeros: q0.zeros.map((z) => Math.max(1, z)) };
      for (const version of [1, 2] as const) {
        const ckpt = toGptqCheckpoint(q, { version });
        const p = packGptqCheckpoint(ckpt, { bits, groupSize, version, scaleType: "f32" });
        const back = unpackWeights(p);
        const expected = { ...q, scales: Float32Array.from(Float16Array.from(q.scales)) };
        assertSameQuantized(back, expected);
        const again = packedToGptqCheckpoint(p, { version });
        for (const name of ["qweight", "qzeros", "scales", "g_idx"] as const) {
          assert.deepEqual(again[name].shape, ckpt[name].shape);
          assert.deepEqual(Array.from(again[name].data), Array.from(ckpt[name].data), name);
        }
      }
    }
  }
});

Deno.test("packWeights() rejects unsupported widths, options and inconsistent weights", () => {
  const q = randomQuantized(4, 64, 4, 32, 7);
  assert.throws(() => packWeights({ ...q, bits: 5 }), RangeError);
  assert.throws(() => packWeights({ ...q, bits: 16 }), RangeError);
  assert.throws(
    // @ts-expect-error: a bad scale type
    () => packWeights(q, { scaleType: "bf16" }),
    RangeError,
  );
  assert.throws(() => packWeights({ ...q, gIdx: q.gIdx.map(() => 9) }), RangeError);
  assert.throws(() => packWeights({ ...q, codes: q.codes.subarray(1) }), RangeError);
  assert.throws(() => packWeights({ ...q, codes: q.codes.map(() => 16) }), RangeError);
  // @ts-expect-error: not a uniform weight
  assert.throws(() => packWeights({ ...q, kind: "aqlm" }), TypeError);
  // @ts-expect-error: not a packed weight
  assert.throws(() => unpackWeights(q), TypeError);
});
