import assert from "node:assert/strict";
import { dequantizeMinMaxBlocks, quantizeMinMaxBlocks } from "../../core/_minmax_blocks.ts";
import { packBits } from "../../core/bitpack.ts";
import { prng } from "../../core/prng.ts";
import { assertClose } from "../_helpers.ts";

Deno.test("min–max block codes are round-to-nearest on each block's grid, in packBits' layout", () => {
  const rng = prng(1);
  for (const bits of [1, 3, 4, 5, 8]) {
    const x = Float32Array.from({ length: 101 }, () => rng.normal());
    const blockSize = 16, top = 2 ** bits - 1;
    const q = quantizeMinMaxBlocks(x, bits, blockSize);
    // Oracle: the grid δ + u·j of each block, nearest point by brute force.
    const codes: number[] = [], expected: number[] = [];
    for (let s = 0; s < x.length; s += blockSize) {
      const block = Array.from(x.subarray(s, s + blockSize));
      const d = Math.fround(Math.min(...block)), u = (Math.fround(Math.max(...block)) - d) / top;
      for (const v of block) {
        let best = 0;
        for (let j = 1; j <= top; j++) {
          if (Math.abs(d + u * j - v) < Math.abs(d + u * best - v)) best = j;
        }
        codes.push(best);
        expected.push(d + u * best);
      }
    }
    assert.deepStrictEqual(q.codes, packBits(codes, bits));
    assertClose(dequantizeMinMaxBlocks(q), expected, { atol: 1e-6, rtol: 1e-6 });
  }
  // A constant block decodes exactly.
  assert.deepStrictEqual(
    Array.from(dequantizeMinMaxBlocks(quantizeMinMaxBlocks([2, 2, 2], 4, 8))),
    [2, 2, 2],
  );
});
