import assert from "node:assert/strict";
import { tensor } from "../../core/tensor.ts";
import { fitGrid, gridQuantize } from "../../quantizers/grid.ts";
import { rtn } from "../../quantizers/rtn.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { randomWeight } from "./_correlated.ts";

Deno.test("rtn() is the fitted grid's nearest codes, as a QuantizedWeight", async () => {
  const w = randomWeight(12, 50, 1);
  for (
    const opts of [{ bits: 4 }, { bits: 3, groupSize: 16, symmetric: true }, { bits: 2, mse: true }]
  ) {
    const q = await rtn(w, opts);
    const grid = fitGrid(w, opts);
    assert.equal(q.kind, "uniform");
    assert.deepEqual(q.shape, [12, 50]);
    assert.deepEqual(q.codes, gridQuantize(w, grid));
    assert.deepEqual(q.scales, grid.scales);
    assert.deepEqual(q.gIdx, grid.gIdx);
    assert.equal(q.groupSize, opts.groupSize ?? -1);
  }
});

Deno.test("rtn() keeps every in-range weight within half a step", async () => {
  const w = randomWeight(8, 40, 2);
  const q = await rtn(w, { bits: 5, groupSize: 8 });
  const back = dequantize(q).data;
  for (let r = 0; r < 8; r++) {
    for (let c = 0; c < 40; c++) {
      const s = q.scales[r * 5 + q.gIdx[c]!]!;
      assert.ok(Math.abs(back[r * 40 + c]! - w.data[r * 40 + c]!) <= s / 2 * (1 + 1e-6));
    }
  }
});

Deno.test("16-bit rtn() stores Uint16 codes and is near lossless", async () => {
  const w = randomWeight(4, 30, 3);
  const q = await rtn(w, { bits: 16 });
  assert.ok(q.codes instanceof Uint16Array);
  const back = dequantize(q).data;
  for (let i = 0; i < back.length; i++) assert.ok(Math.abs(back[i]! - w.data[i]!) < 1e-6);
});

Deno.test("dequantize() rejects unknown formats and mismatched shapes", async () => {
  // deno-lint-ignore no-explicit-any
  assert.throws(() => dequantize({ kind: "mystery" } as any), TypeError);
  const q = await rtn(tensor("f32", [2, 2], new Float32Array([1, 2, 3, 4])), { bits: 4 });
  assert.throws(() => dequantize({ ...q, shape: [2, 3] }), RangeError);
});
