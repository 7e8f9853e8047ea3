import assert from "node:assert/strict";
import { tensor } from "../../core/tensor.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { mxQuantize, packMx, unpackMx } from "../../quantizers/mx.ts";
import { randomWeight } from "./_correlated.ts";

Deno.test("mxQuantize() MXFP4 rounds a hand-computed block of 32 under the scale 2^(⌊log₂ amax⌋ − 2)", async () => {
  // amax 20: ⌊log₂ 20⌋ = 4 → X = 4; w/X = 5 → tie 4|6 → 4 (16); 0.9/4 = 0.225 → 0;
  // −7/4 = −1.75 → tie 1.5|2 → −2 (−8); 13/4 = 3.25 → 3 (12); the rest 1/4 → 0 (tie 0|0.5 → 0)
  const row = new Float32Array(32).fill(1);
  row.set([20, 0.9, -7, 13]);
  const q = await mxQuantize(tensor("f32", [1, 32], row), { format: "mxfp4" });
  assert.deepEqual([...q.scales], [127 + 2]);
  assert.equal(q.tensorScale, 1);
  const back = dequantize(q).data;
  assert.deepEqual([...back.slice(0, 5)], [16, 0, -8, 12, 0]);
});

Deno.test("mxQuantize() NVFP4 uses the tensor scale amax/(6·448) and E4M3 block scales of amax/6/s", async () => {
  // Tensor amax 2688 → s = 1. Block 0 (amax 2688): scale 448, 1000/448 = 2.23 → 2 (896).
  // Block 1 (amax 3): scale E4M3(0.5) = 0.5, 1.3/0.5 = 2.6 → 3 (1.5), −0.2/0.5 = −0.4 → −0.5 (−0.25).
  const row = new Float32Array(32);
  row.set([2688, 1000], 0);
  row.set([3, 1.3, -0.2], 16);
  const q = await mxQuantize(tensor("f32", [1, 32], row), { format: "nvfp4" });
  assert.equal(q.tensorScale, 1);
  assert.deepEqual([...q.scales], [0x7e, 0x30]);
  const back = dequantize(q).data;
  assert.deepEqual([...back.slice(0, 2)], [2688, 896]);
  assert.deepEqual([...back.slice(16, 19)], [3, 1.5, -0.25]);
});

Deno.test("mxQuantize() scales a short last block on its own elements and zero blocks to zero", async () => {
  const w = tensor(
    "f32",
    [2, 40],
    Float32Array.from({ length: 80 }, (_, i) => (i % 40 < 32 ? 0 : i)),
  );
  for (const format of ["mxfp4", "nvfp4"] as const) {
    const q = await mxQuantize(w, { format });
    const back = dequantize(q).data;
    assert.equal(q.scales.length, format === "mxfp4" ? 4 : 6);
    for (let i = 0; i < 80; i++) {
      if (i % 40 < 32) assert.equal(back[i], 0);
      else assert.ok(Math.abs(back[i]! - i) <= 0.25 * i, `${format} ${i}: ${back[i]}`);
    }
  }
});

Deno.test("mxQuantize() lands every value on the format's grid with a relative error under 1/4 per block amax", async () => {
  const w = randomWeight(16, 96, 3);
  for (const format of ["mxfp4", "nvfp4"] as const) {
    const back = dequantize(await mxQuantize(w, { format })).data;
    const bs = format === "mxfp4" ? 32 : 16;
    for (let r = 0; r < 16; r++) {
      for (let b = 0; b < 96 / bs; b++) {
        let amax = 0;
        for (let c = b * bs; c < b * bs + bs; c++) {
          amax = Math.max(amax, Math.abs(w.data[r * 96 + c]!));
        }
        for (let c = b * bs; c < b * bs + bs; c++) {
          const i = r * 96 + c;
          assert.ok(Math.abs(back[i]! - w.data[i]!) <= amax / 4, `${format} [${r}, ${c}]`);
        }
      }
    }
  }
});

Deno.test("packMx() and unpackMx() round-trip codes, scales and the tensor scale at odd widths", async () => {
  for (const cols of [1, 7, 32, 33]) {
    const w = randomWeight(3, cols, cols);
    for (const format of ["mxfp4", "nvfp4"] as const) {
      const q = await mxQuantize(w, { format });
      const p = packMx(q);
      assert.equal(p.packed.length, 3 * Math.ceil(cols / 2));
      const u = unpackMx(p);
      assert.deepEqual(u.codes, q.codes);
      assert.deepEqual(u.scales, q.scales);
      assert.equal(u.tensorScale, q.tensorScale);
      assert.deepEqual(dequantize(u).data, dequantize(q).data);
    }
  }
  // the low nibble holds the even column
  const q = await mxQuantize(tensor("f32", [1, 2], new Float32Array([1, -6])), { format: "mxfp4" });
  assert.equal(packMx(q).packed[0], (q.codes[1]! << 4) | q.codes[0]!);
});

Deno.test("mxQuantize() names the option it refuses", async () => {
  const w = tensor("f32", [1, 2], new Float32Array([1, 2]));
  await assert.rejects(
    () => mxQuantize(w, { format: "fp4" as "mxfp4" }),
    /'format' must be "mxfp4" or "nvfp4": current value is fp4/,
  );
  await assert.rejects(
    () => mxQuantize(tensor("f32", [1, 2], new Float32Array([1, NaN])), { format: "nvfp4" }),
    /'weight' must be finite: element 1 is NaN/,
  );
  const p = packMx(await mxQuantize(w, { format: "mxfp4" }));
  assert.throws(() => unpackMx({ ...p, shape: [2, 2] }), /do not match the shape/);
});
