import assert from "node:assert/strict";
import { tensor } from "../../core/tensor.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { fp8Quantize } from "../../quantizers/fp8_quantize.ts";
import { randomWeight } from "./_correlated.ts";

Deno.test("fp8Quantize() per channel scales each row by amax/448 and rounds to nearest E4M3", async () => {
  // Row 0: amax 448 → scale 1; 3.3 → 3.25, 0.0009 → 2^−10 (E4M3's smallest subnormal is 2^−9: → 0).
  // Row 1: amax 4.48 → scale fl32(0.01); 0.97 / 0.01 ≈ 97 → 96 (step 8 in [64, 128)) → 0.96.
  const w = tensor("f32", [2, 3], new Float32Array([448, 3.3, 0.0009, -4.48, 0.97, 0]));
  const q = await fp8Quantize(w, { granularity: "channel" });
  assert.deepEqual([...q.scales], [1, Math.fround(0.01)]);
  const back = dequantize(q).data;
  assert.deepEqual([...back.slice(0, 3)], [448, 3.25, 0]);
  assert.equal(back[3], Math.fround(-448 * Math.fround(0.01)));
  assert.equal(back[4], Math.fround(96 * Math.fround(0.01)));
});

Deno.test("fp8Quantize() per tensor uses one scale and keeps every row within half an E4M3 step", async () => {
  const w = randomWeight(8, 64, 5);
  const q = await fp8Quantize(w, { granularity: "tensor" });
  assert.equal(q.scales.length, 1);
  const back = dequantize(q).data;
  for (let i = 0; i < w.data.length; i++) {
    // E4M3 has 3 mantissa bits: relative error ≤ 2^−4 above the subnormals
    const v = w.data[i]!, s = q.scales[0]!;
    assert.ok(Math.abs(back[i]! - v) <= Math.max(Math.abs(v) / 16, s * 2 ** -10), `${i}`);
  }
  const c = await fp8Quantize(w);
  assert.equal(c.granularity, "channel");
  assert.equal(c.scales.length, 8);
});

Deno.test("fp8Quantize() names the option it refuses", async () => {
  const w = tensor("f32", [1, 2], new Float32Array([1, 2]));
  await assert.rejects(
    () => fp8Quantize(w, { granularity: "group" as "channel" }),
    /'granularity' must be "channel" or "tensor": current value is group/,
  );
});
