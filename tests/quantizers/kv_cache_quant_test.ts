import assert from "node:assert/strict";
import {
  checkKvCacheQuant,
  fakeQuantizeKvCache,
  kvCacheBits,
  type KvCacheQuant,
} from "../../quantizers/kv_cache_quant.ts";
import { fakeQuantizeActivations } from "../../quantizers/activation_quant.ts";
import { roundHalfEven } from "../../core/uniform_grid.ts";

Deno.test("fakeQuantizeKvCache() asymmetric int4 matches a hand-computed grid per group", () => {
  // group 0: lo = −1, hi = 2, s = 3/15 = 0.2, z = round(5) = 5
  // group 1: all ≥ 0, lo = 0, hi = 3, s = 0.2, z = 0
  const x = new Float32Array([-1, 2, 0.5, 0.31, 0, 3, 1.05, 0.09]);
  const y = fakeQuantizeKvCache(x, 2, { format: "int4", asymmetric: true });
  const s = Math.fround(3 / 15);
  const want = [
    [-1, 5],
    [2, 5],
    [0.5, 5],
    [0.31, 5],
    [0, 0],
    [3, 0],
    [1.05, 0],
    [0.09, 0],
  ].map(([v, z]) => {
    const q = Math.min(15, Math.max(0, roundHalfEven(Math.fround(Math.fround(v!) / s)) + z!));
    return Math.fround(s * (q - z!));
  });
  assert.deepEqual([...y], want);
  // every value within half a step of its input
  for (let i = 0; i < x.length; i++) assert(Math.abs(y[i]! - x[i]!) <= s / 2 + 1e-7);
  // 0.5/0.2 = 2.5 rounds to even (2): 0.4
  assert.equal(y[2], Math.fround(s * 2));
});

Deno.test("fakeQuantizeKvCache() clips the range by 'clipRatio' and saturates beyond it", () => {
  const x = new Float32Array([-2, 4, 1, 3.9]);
  const y = fakeQuantizeKvCache(x, 1, { format: "int4", asymmetric: true, clipRatio: 0.75 });
  // lo = −1.5, hi = 3, s = 0.3, z = 5: 4 saturates at 15 → 3, −2 at 0 → −1.5
  const s = Math.fround(Math.fround(3 - Math.fround(-1.5)) / 15);
  assert.equal(y[0], Math.fround(s * -5));
  assert.equal(y[1], Math.fround(s * 10));
  assert.equal(y[3], Math.fround(s * 10));
  // int8: 255 steps, a zero group stays zero
  const z = fakeQuantizeKvCache(new Float32Array(8), 2, { format: "int8", asymmetric: true });
  assert.deepEqual([...z], new Array(8).fill(0));
});

Deno.test("fakeQuantizeKvCache() symmetric grids are the activation formats with one group per row", () => {
  const x = Float32Array.from({ length: 6 * 32 }, (_, i) => Math.sin(i * 1.7) * (1 + (i % 5)));
  for (const format of ["int4", "int8", "fp8", "mxfp4", "nvfp4"] as const) {
    assert.deepEqual(
      fakeQuantizeKvCache(x, 6, { format }),
      fakeQuantizeActivations(x, 6, { format }),
      format,
    );
  }
});

Deno.test("checkKvCacheQuant() names a bad option", () => {
  const bad = (spec: unknown, re: RegExp) =>
    assert.throws(() => checkKvCacheQuant(spec as KvCacheQuant), re);
  bad({ format: "int3" }, /'format' must be one of int8, int4.*current value is int3/);
  bad({ format: "int4", asymmetric: "yes" }, /'asymmetric' must be a boolean/);
  bad({ format: "fp8", asymmetric: true }, /'asymmetric' needs format int8 or int4/);
  bad({ format: "int4", asymmetric: true, clipRatio: 1.5 }, /'clipRatio' must be .*1\.5/);
  bad({ format: "int4", asymmetric: true, clipRatio: 0 }, /'clipRatio' must be/);
  bad({ format: "int4", clipRatio: 0.9 }, /'clipRatio' 0\.9 needs 'asymmetric'/);
  assert.throws(
    () => fakeQuantizeKvCache(new Float32Array(5), 2, { format: "int4", asymmetric: true }),
    /'rows' must divide the 5 values/,
  );
});

Deno.test("kvCacheBits() counts a float32 scale per group and the zero point", () => {
  assert.equal(kvCacheBits({ format: "int4" }, 32), 5);
  assert.equal(kvCacheBits({ format: "int4", asymmetric: true }, 32), 4 + 36 / 32);
  assert.equal(kvCacheBits({ format: "int8", asymmetric: true }, 64), 8 + 40 / 64);
  assert.equal(kvCacheBits({ format: "mxfp4" }, 64), 4.25);
});
