import assert from "node:assert/strict";
import { convert } from "../../core/convert.ts";
import { tensor } from "../../core/tensor.ts";
import { checkWeight } from "../../pruners/_common.ts";

Deno.test("checkWeight() names the first non-finite weight and its position in every float dtype", () => {
  const rows = 3, cols = 7;
  for (const dtype of ["f32", "f64", "f16", "bf16"] as const) {
    const values = Float64Array.from({ length: rows * cols }, (_, i) => Math.sin(i) * 100);
    const ok = convert(tensor("f64", [rows, cols], values), dtype);
    assert.deepEqual(checkWeight(ok, "test"), { rows, cols });
    for (
      const [bad, text] of [[NaN, "NaN"], [Infinity, "Infinity"], [-Infinity, "-Infinity"]] as const
    ) {
      const v = values.slice();
      v[16] = bad;
      v[20] = NaN;
      const t = convert(tensor("f64", [rows, cols], v), dtype);
      assert.throws(() => checkWeight(t, "test"), {
        name: "TypeError",
        message: `Cannot test as 'weight' holds ${text} at [2, 2]`,
      }, dtype);
    }
  }
  // float32 overflows to Infinity in float16 / bfloat16, never in float64.
  const big = tensor("f64", [1, 2], new Float64Array([1, 1e39]));
  assert.deepEqual(checkWeight(big, "test"), { rows: 1, cols: 2 });
  assert.throws(() => checkWeight(convert(big, "f16"), "test"), /holds Infinity at \[0, 1\]/);
});
