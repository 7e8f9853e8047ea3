import assert from "node:assert/strict";
import {
  e2m1Code,
  e2m1Value,
  e4m3Code,
  e4m3Value,
  fp8Scale,
  MX_LAYOUTS,
  mxLayout,
  mxScaleCode,
  mxScaleValue,
  mxTensorScale,
} from "../../core/scaled_float.ts";

Deno.test("the MX layouts say 32 E2M1 per E8M0 scale (MXFP4) and 16 per E4M3 scale with a tensor scale (NVFP4)", () => {
  assert.deepEqual(
    [MX_LAYOUTS.mxfp4.blockSize, MX_LAYOUTS.mxfp4.scale, MX_LAYOUTS.mxfp4.tensorScale],
    [32, "e8m0", false],
  );
  assert.deepEqual(
    [MX_LAYOUTS.nvfp4.blockSize, MX_LAYOUTS.nvfp4.scale, MX_LAYOUTS.nvfp4.tensorScale],
    [16, "e4m3", true],
  );
  assert.throws(
    () => mxLayout("mxfp8" as "mxfp4"),
    /'format' must be "mxfp4" or "nvfp4": current value is mxfp8/,
  );
});

Deno.test("the MXFP4 block scale is 2^(⌊log₂ amax⌋ − 2) on hand-computed blocks", () => {
  // amax 5: ⌊log₂ 5⌋ = 2 → 2^0 (code 127); 4 → 2^0; 3.99 → 2^−1; 0.1 → 2^(−4 − 2); 6·2^10 → 2^10
  const cases: [number, number][] = [[5, 127], [4, 127], [3.99, 126], [0.1, 121], [6144, 137]];
  for (const [amax, code] of cases) {
    assert.equal(mxScaleCode("mxfp4", amax, 1), code, `amax ${amax}`);
  }
  assert.equal(mxScaleValue("mxfp4", 121, 1), 1 / 64);
  assert.equal(mxScaleCode("mxfp4", 0, 1), 0); // an all-zero block: 2^−127
  assert.equal(mxTensorScale("mxfp4", 123), 1);
  // amax/X lies in [4, 8): the largest element lands on 4 or 6 (or saturates to 6)
  assert.equal(e2m1Value(e2m1Code(5, 1), 1), 4);
  assert.equal(e2m1Value(e2m1Code(7.9, 1), 1), 6);
});

Deno.test("the NVFP4 scales are amax/(6·448) per tensor and E4M3(amax_block/6/s) per block", () => {
  const s = mxTensorScale("nvfp4", 2688); // 2688 = 6·448 → s = 1
  assert.equal(s, 1);
  assert.equal(mxScaleCode("nvfp4", 2688, s), 0x7e); // 448
  assert.equal(mxScaleCode("nvfp4", 6, s), 0x38); // 1 = 2^(7−7)
  assert.equal(mxScaleCode("nvfp4", 1.95, s), 0x2a); // 0.325 → 0.3125 (2^−2 · 1.25)
  assert.equal(mxScaleValue("nvfp4", 0x2a, s), 0.3125);
  const s2 = mxTensorScale("nvfp4", 1);
  assert.equal(s2, Math.fround(1 / 2688));
  assert.equal(mxScaleValue("nvfp4", mxScaleCode("nvfp4", 1, s2), s2), Math.fround(448 * s2));
  assert.equal(mxScaleCode("nvfp4", 3, 0), 0); // an all-zero tensor
  assert.equal(e2m1Code(1, 0), 0);
});

Deno.test("the FP8 scale is amax/448 and E4M3 codes round to nearest under it", () => {
  assert.equal(fp8Scale(448), 1);
  assert.equal(fp8Scale(1), Math.fround(1 / 448));
  assert.equal(e4m3Value(e4m3Code(3.3, 1), 1), 3.25);
  assert.equal(e4m3Value(e4m3Code(-500, 1), 1), -448);
  assert.equal(e4m3Code(2, 0), 0);
});
