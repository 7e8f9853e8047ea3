import assert from "node:assert/strict";
import { tensor } from "../../core/tensor.ts";
import { prng, randn } from "../../core/prng.ts";
import { hessian } from "../../hessian/hessian.ts";
import { layerError } from "../../hessian/layer_error.ts";
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
