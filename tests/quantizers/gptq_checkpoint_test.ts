import assert from "node:assert/strict";
import { fromGptqCheckpoint, toGptqCheckpoint } from "../../quantizers/gptq_checkpoint.ts";
import type { QuantizedWeight } from "../../quantizers/quantized_weight.ts";
import { randomQuantized as sharedRandomQuantized } from "./_random_quantized.ts";

/** A random quantized weight whose zero points a version-1 checkpoint can hold (≥ 1). */
function randomQuantized(
  rows: number,
  cols: number,
  bits: number,
  groupSize: number,
  seed: number,
  actOrder = false,
): QuantizedWeight {
  const q = sharedRandomQuantized(
    rows,
    cols,
    bits,
    groupSize,
    seed,
    actOrder ? "actOrder" : "regular",
  );
  return { ...q, zeros: q.zeros.map((z) => Math.max(1, z)) };
}

Deno.test("toGptqCheckpoint() and fromGptqCheckpoint() round-trip 2/3/4/8 bits, v1 and v2", () => {
  let seed = 1;
  for (const bits of [2, 3, 4, 8]) {
    for (const [rows, cols, groupSize] of [[8, 64, 32], [5, 70, 32], [7, 40, -1]] as const) {
      for (const version of [1, 2] as const) {
        for (const actOrder of [false, true]) {
          const q = randomQuantized(rows, cols, bits, groupSize, seed++, actOrder);
          const ckpt = toGptqCheckpoint(q, { version });
          const groups = groupSize === -1 ? 1 : Math.ceil(cols / groupSize);
          assert.deepEqual(ckpt.qweight.shape, [Math.ceil((cols * bits) / 32), rows]);
          assert.deepEqual(ckpt.qzeros.shape, [groups, Math.ceil((rows * bits) / 32)]);
          assert.deepEqual(ckpt.scales.shape, [groups, rows]);
          const back = fromGptqCheckpoint(ckpt, { bits, groupSize, version });
          assert.deepEqual(Array.from(back.codes), Array.from(q.codes));
          assert.deepEqual(Array.from(back.zeros), Array.from(q.zeros));
          assert.deepEqual(Array.from(back.gIdx), Array.from(q.gIdx));
          const f16 = Float16Array.from(q.scales);
          assert.deepEqual(Array.from(back.scales), Array.from(f16));
        }
      }
    }
  }
});

Deno.test("toGptqCheckpoint() stores zero − 1 in version 1 and the zero itself in version 2", () => {
  const q = randomQuantized(8, 32, 4, -1, 3);
  const v1 = toGptqCheckpoint(q, { version: 1 });
  const v2 = toGptqCheckpoint(q, { version: 2 });
  // 8 outputs × 4 bits = one word per group row; output n at bits 4n.
  for (let n = 0; n < 8; n++) {
    assert.equal((v1.qzeros.data[0]! >>> (4 * n)) & 15, q.zeros[n]! - 1);
    assert.equal((v2.qzeros.data[0]! >>> (4 * n)) & 15, q.zeros[n]!);
  }
  // qweight column n, word w: codes k = 8w..8w+7 of output n.
  for (let n = 0; n < 8; n++) {
    for (let w = 0; w < 4; w++) {
      for (let j = 0; j < 8; j++) {
        assert.equal((v1.qweight.data[w * 8 + n]! >>> (4 * j)) & 15, q.codes[n * 32 + 8 * w + j]);
      }
    }
  }
});

Deno.test("toGptqCheckpoint() refuses what the format cannot hold", () => {
  const q = randomQuantized(4, 16, 4, -1, 4);
  assert.throws(() => toGptqCheckpoint({ ...q, bits: 5 }), /2, 3, 4 or 8-bit/);
  const zeroAtZero = { ...q, zeros: new Float32Array(4) };
  assert.throws(() => toGptqCheckpoint(zeroAtZero, { version: 1 }), /write version 2/);
  assert.doesNotThrow(() => toGptqCheckpoint(zeroAtZero, { version: 2 }));
  const fractional = { ...q, zeros: new Float32Array(4).fill(2.5) };
  assert.throws(() => toGptqCheckpoint(fractional), /integers in \[0, 15\]/);
  // deno-lint-ignore no-explicit-any
  assert.throws(() => toGptqCheckpoint(q, { version: 3 as any }), /'version' must be 1 or 2/);
});

Deno.test("fromGptqCheckpoint() names the tensor whose shape is wrong", () => {
  const ckpt = toGptqCheckpoint(randomQuantized(4, 16, 4, 8, 6), { version: 2 });
  const bad = { ...ckpt, qweight: { ...ckpt.qweight, shape: [3, 4] } };
  assert.throws(
    () => fromGptqCheckpoint(bad, { bits: 4, groupSize: 8, version: 2 }),
    /'qweight' must be \[2, 4\]/,
  );
  const badIdx = { ...ckpt, g_idx: { ...ckpt.g_idx, data: new Int32Array(16).fill(9) } };
  assert.throws(
    () => fromGptqCheckpoint(badIdx, { bits: 4, groupSize: 8, version: 2 }),
    /'g_idx'\[0\] = 9/,
  );
});
