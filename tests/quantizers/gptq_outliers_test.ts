import assert from "node:assert/strict";
import { assertClose } from "../_helpers.ts";
import { prng } from "../../core/prng.ts";
import { tensor } from "../../core/tensor.ts";
import { hessian } from "../../hessian/hessian.ts";
import { layerError } from "../../hessian/layer_error.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { gptq } from "../../quantizers/gptq.ts";
import { gptqOutliers, largestInputColumns } from "../../quantizers/gptq_outliers.ts";

function layer(seed: number, rows = 16, cols = 32, tokens = 256) {
  const rng = prng(seed);
  const w = tensor(
    "f32",
    [rows, cols],
    Float32Array.from({ length: rows * cols }, () => rng.normal()),
  );
  // columns 3 and 17 carry outlier activations
  const x = Float32Array.from({ length: tokens * cols }, (_, i) => {
    const c = i % cols;
    return (c === 3 || c === 17 ? 30 : 1) * rng.normal();
  });
  return { w, h: hessian(tensor("f32", [tokens, cols], x)) };
}

Deno.test("gptqOutliers() without kept columns is GPTQ per channel", async () => {
  const { w, h } = layer(1);
  const a = await gptqOutliers(w, h, { bits: 4, columns: [] });
  const b = dequantize(await gptq(w, h, { bits: 4, backend: "cpu" }));
  assertClose(a.weight.data, b.data as Float32Array, { atol: 1e-6, rtol: 1e-6 });
  assert.equal(a.bitsPerWeight, 4 + 20 / 32);
});

Deno.test("largestInputColumns() picks the outlier inputs and gptqOutliers() lowers the error with them at 8 bits", async () => {
  const { w, h } = layer(2);
  const cols = largestInputColumns(h, 2);
  assert.deepEqual([...cols], [3, 17]);
  const kept = await gptqOutliers(w, h, { bits: 3, columns: cols });
  const none = await gptqOutliers(w, h, { bits: 3, columns: [] });
  assert(layerError(w, kept.weight, h) < layerError(w, none.weight, h));
  assert.equal(kept.bitsPerWeight, (30 * 3 + 2 * 8 + 16 + 3 + 16 + 8) / 32);
});

Deno.test("gptqOutliers() names bad options", async () => {
  const { w, h } = layer(3);
  await assert.rejects(() => gptqOutliers(w, h, { bits: 1, columns: [] }), /'bits' must be/);
  await assert.rejects(
    () => gptqOutliers(w, h, { bits: 4, columns: [0], outlierBits: 2 }),
    /'outlierBits' must be an integer in \[4, 16\]/,
  );
  await assert.rejects(() => gptqOutliers(w, h, { bits: 4, columns: [0, 0] }), /distinct/);
  assert.throws(() => largestInputColumns(h, 99), /'count' must be an integer in \[0, 32\]/);
});
