import assert from "node:assert/strict";
import { tensor } from "../../core/tensor.ts";
import { prng, randn } from "../../core/prng.ts";
import { hessian } from "../../hessian/hessian.ts";
import { evaluateLayerError, layerError } from "../../hessian/layer_error.ts";
import { testGpu } from "../kernels/_gpu.ts";
import { assertClose } from "../_helpers.ts";

Deno.test("layerError() equals ‖(W − Ŵ)X‖² / ‖WX‖² computed from the inputs themselves", () => {
  const tokens = 30, cols = 7, rows = 5;
  const x = tensor("f64", [tokens, cols], randn(tokens * cols, prng(1)));
  const w = tensor("f64", [rows, cols], randn(rows * cols, prng(2)));
  const a = tensor("f64", [rows, cols], w.data.map((v, i) => v + 0.1 * Math.sin(i)));
  let num = 0, den = 0;
  for (let t = 0; t < tokens; t++) {
    for (let r = 0; r < rows; r++) {
      let y = 0, yh = 0;
      for (let c = 0; c < cols; c++) {
        y += w.data[r * cols + c]! * x.data[t * cols + c]!;
        yh += a.data[r * cols + c]! * x.data[t * cols + c]!;
      }
      num += (y - yh) ** 2;
      den += y ** 2;
    }
  }
  assertClose(layerError(w, a, hessian(x)), num / den, { rtol: 1e-12, atol: 0 });
  assert.equal(layerError(w, w, hessian(x)), 0);
});

Deno.test("layerError() rejects mismatched shapes", () => {
  const h = hessian(tensor("f64", [3, 2], new Float64Array(6).fill(1)));
  const w = tensor("f64", [1, 2], new Float64Array([1, 2]));
  assert.throws(() => layerError(w, tensor("f64", [2, 1], new Float64Array(2)), h), /'approx'/);
  assert.throws(
    () =>
      layerError(
        tensor("f64", [1, 3], new Float64Array(3)),
        tensor("f64", [1, 3], new Float64Array(3)),
        h,
      ),
    /Hessian/,
  );
});

Deno.test("evaluateLayerError on the GPU equals the float64 CPU layerError to float32 accuracy", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(11);
  // Rows that span several tiles are exercised by a layer whose [D; W] exceeds one tile only at
  // real sizes; here: odd shapes, a wide layer and a tall one.
  for (const [rows, cols, tokens] of [[37, 53, 90], [8, 300, 500], [300, 24, 64]] as const) {
    const x = tensor(
      "f32",
      [tokens, cols],
      Float32Array.from({ length: tokens * cols }, () => rng.normal()),
    );
    const h = hessian(x);
    const w = tensor(
      "f32",
      [rows, cols],
      Float32Array.from({ length: rows * cols }, () => rng.normal()),
    );
    const a = tensor("f32", [rows, cols], w.data.map((v) => v + 0.05 * rng.normal()));
    const cpu = layerError(w, a, h);
    const dev = await evaluateLayerError(w, a, h, { backend: "webgpu" });
    assert(Math.abs(dev - cpu) / cpu < 1e-4, `[${rows}, ${cols}]: ${dev} vs ${cpu}`);
    assert.equal(await evaluateLayerError(w, a, h, { backend: "cpu" }), cpu);
  }
  const w = tensor("f32", [2, 3], new Float32Array(6).fill(1));
  await assert.rejects(
    () => evaluateLayerError(w, tensor("f32", [2, 2], new Float32Array(4)), hessian(w)),
    /differs from 'weight'/,
  );
});
