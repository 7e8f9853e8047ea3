import assert from "node:assert/strict";
import { tensor } from "../../core/tensor.ts";
import {
  pack24,
  packBitmask,
  packSparse,
  unpack24,
  unpack24Mask,
  unpackBitmask,
  unpackSparse,
} from "../../pruners/mask_storage.ts";
import { magnitudePrune } from "../../pruners/magnitude.ts";
import { assertThrowsWith, randomWeight } from "./_util.ts";

Deno.test("packBitmask() stores element i in bit i & 7 of byte i >>> 3 and round-trips", () => {
  const m = tensor("bool", [1, 10], new Uint8Array([1, 0, 1, 1, 0, 0, 0, 0, 0, 1]));
  const p = packBitmask(m);
  assert.deepEqual([...p.bits], [0b1101, 0b10]);
  assert.deepEqual(unpackBitmask(p), m);
  for (const [rows, cols] of [[3, 7], [16, 16], [1, 1]]) {
    const data = new Uint8Array(rows! * cols!).map((_, i) => (i * 7 + 3) % 5 < 2 ? 1 : 0);
    const mask = tensor("bool", [rows!, cols!], data);
    const packed = packBitmask(mask);
    assert.equal(packed.bits.length, Math.ceil(rows! * cols! / 8));
    assert.deepEqual(unpackBitmask(packed), mask);
  }
});

Deno.test("packSparse() round-trips a 50% pruned layer in about 9/16 of the dense bytes", async () => {
  const rows = 32, cols = 64;
  const res = await magnitudePrune(tensor("f32", [rows, cols], randomWeight(rows, cols, 4)), {
    structure: { kind: "unstructured", sparsity: 0.5 },
  });
  const p = packSparse(res.weight, res.mask);
  assert.deepEqual(unpackSparse(p), res.weight);
  const bytes = p.values.byteLength + p.mask.bits.byteLength;
  assert.equal(bytes, (rows * cols / 2) * 4 + rows * cols / 8);
  assert.ok(bytes / res.weight.data.byteLength <= 9 / 16);
});

Deno.test("pack24() stores two 2-bit indices per group of 4 and round-trips a 2:4 pruned layer", async () => {
  const w = tensor("f32", [1, 8], new Float32Array([0, 5, 0, -1, 7, 0, 0, 0]));
  const p = pack24(w);
  // group 0 keeps 1 and 3; group 1 keeps 0 and the first free position 1
  assert.equal(p.indices[0], (1 | (3 << 2)) | ((0 | (1 << 2)) << 4));
  assert.deepEqual([...p.values], [5, -1, 7, 0]);
  assert.deepEqual(unpack24(p), w);

  const rows = 16, cols = 32;
  const res = await magnitudePrune(tensor("f32", [rows, cols], randomWeight(rows, cols, 5)), {
    structure: { kind: "nm", n: 2, m: 4 },
  });
  const q = pack24(res.weight, res.mask);
  assert.deepEqual(unpack24(q), res.weight);
  assert.deepEqual(unpack24Mask(q), res.mask);
  assert.equal(q.values.byteLength + q.indices.byteLength, rows * cols * 2 + rows * cols / 8);
  // an odd number of groups leaves the last byte's high nibble unused
  const odd = tensor("f32", [1, 4], new Float32Array([0, 0, 3, 4]));
  assert.deepEqual(unpack24(pack24(odd)), odd);
});

Deno.test("pack24() rejects groups with more than two kept weights and columns not a multiple of 4", () => {
  const w = tensor("f32", [2, 4], new Float32Array([1, 0, 0, 0, 1, 2, 3, 0]));
  assertThrowsWith(() => pack24(w), RangeError, "row 1, columns 0–3 keep more than 2");
  assertThrowsWith(() => pack24(tensor("f32", [1, 6])), RangeError, "not a multiple of 4");
  const mask = tensor("bool", [2, 4], new Uint8Array([1, 1, 1, 0, 1, 1, 0, 0]));
  assertThrowsWith(
    () => pack24(w, mask),
    RangeError,
    "row 0, columns 0–3 keep more than 2 positions",
  );
  const p = pack24(tensor("f32", [1, 4], new Float32Array([1, 2, 0, 0])));
  assertThrowsWith(
    () => unpack24({ ...p, indices: new Uint8Array([0b0101]) }),
    RangeError,
    "need i0 < i1",
  );
});
