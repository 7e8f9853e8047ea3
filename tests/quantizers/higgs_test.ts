import assert from "node:assert/strict";
import { prng } from "../../core/prng.ts";
import { type Tensor, tensor } from "../../core/tensor.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { dequantizeHiggs, higgs } from "../../quantizers/higgs.ts";
import { dequantizeNf4, nf4 } from "../../quantizers/nf4.ts";
import { rtn } from "../../quantizers/rtn.ts";
import { assertClose } from "../_helpers.ts";
import { mse, studentT3 } from "./_heavy_tailed.ts";

const ROWS = 64, COLS = 1024;

/** Gaussian weights, or Student-t with 3 degrees of freedom (heavy tails). */
function weights(kind: "gaussian" | "student", seed: number): Tensor<"f32"> {
  const rng = prng(seed);
  const d = new Float32Array(ROWS * COLS);
  for (let i = 0; i < d.length; i++) {
    if (kind === "gaussian") d[i] = rng.normal();
    else d[i] = studentT3(rng);
  }
  return tensor("f32", [ROWS, COLS], d);
}

Deno.test("HIGGS beats NF4 and RTN at the same bits per weight on Gaussian and heavy-tailed weights", async () => {
  for (const kind of ["gaussian", "student"] as const) {
    const w = weights(kind, kind === "gaussian" ? 1 : 2);
    // 4.25 bits per weight: 4-bit codes + one float16 scale per 64 weights.
    const h1 = await higgs(w, { bits: 4, groupSize: 64, p: 1 });
    const h2 = await higgs(w, { bits: 4, groupSize: 64, p: 2 });
    const n = await nf4(w, { blockSize: 64 });
    const r = await rtn(w, { bits: 4, groupSize: 64, symmetric: true });
    assert.equal(h1.bitsPerWeight, 4.25);
    assert.equal(n.bitsPerWeight, 4.25);
    const eH1 = mse(dequantizeHiggs(h1).data, w.data);
    const eH2 = mse(dequantizeHiggs(h2).data, w.data);
    const eN = mse(dequantizeNf4(n).data, w.data);
    const eR = mse(dequantize(r).data, w.data);
    for (const [name, e] of [["NF4", eN], ["symmetric RTN", eR]] as const) {
      assert.ok(eH1 < e, `${kind}: HIGGS p=1 ${eH1} vs ${name} ${e}`);
      assert.ok(eH2 < e, `${kind}: HIGGS p=2 ${eH2} vs ${name} ${e}`);
    }
    // Even asymmetric RTN, which spends 4 more bits per group on its zero point, loses to p = 2.
    const ra = await rtn(w, { bits: 4, groupSize: 64 });
    assert.ok(eH2 < mse(dequantize(ra).data, w.data), `${kind}: asymmetric RTN`);
    // 3.25 bits per weight.
    const h3 = await higgs(w, { bits: 3, groupSize: 64 });
    const r3 = await rtn(w, { bits: 3, groupSize: 64, symmetric: true });
    const r3a = await rtn(w, { bits: 3, groupSize: 64 });
    const eH3 = mse(dequantizeHiggs(h3).data, w.data);
    assert.ok(eH3 < mse(dequantize(r3).data, w.data), `${kind}: 3-bit`);
    assert.ok(eH3 < mse(dequantize(r3a).data, w.data), `${kind}: 3-bit asymmetric`);
  }
});

Deno.test("HIGGS error is the same in the rotated and the original basis, and scale refits only help", async () => {
  const w = weights("student", 3);
  for (const p of [1, 2] as const) {
    const q = await higgs(w, { bits: 3, groupSize: 128, p });
    const back = dequantizeHiggs(q);
    assert.deepEqual(back.shape, [ROWS, COLS]);
    assertClose(mse(back.data, w.data), q.stats.rotatedMse!, { rtol: 1e-4 });
    const rms = await higgs(w, { bits: 3, groupSize: 128, p, scaleSteps: 0 });
    assert.ok(q.stats.rotatedMse! <= rms.stats.rotatedMse!);
  }
});

Deno.test("higgs() is seeded, accepts Paley group sizes, stores float16 scales and leaves its input alone", async () => {
  const w = weights("gaussian", 4);
  const before = w.data.slice();
  const a = await higgs(w, { bits: 2, groupSize: 256, seed: 1 });
  const b = await higgs(w, { bits: 2, groupSize: 256, seed: 1 });
  const c = await higgs(w, { bits: 2, groupSize: 256, seed: 2 });
  assert.deepEqual(w.data, before);
  assert.deepEqual(a.codes, b.codes);
  assert.notDeepEqual(a.codes, c.codes);
  assert.ok(a.scales.every((s) => s === Math.f16round(s)));
  assert.equal(a.bitsPerWeight, 2 + 16 / 256);
  const w12 = tensor("f32", [2, 48], w.data.slice(0, 96));
  const q12 = await higgs(w12, { bits: 4, groupSize: 12 });
  assert.ok(mse(dequantizeHiggs(q12).data, w12.data) < 0.05);
});

Deno.test("higgs() rejects bad options with named errors", async () => {
  const w = weights("gaussian", 5);
  await assert.rejects(() => higgs(w, { bits: 0 }), /'bits'/);
  await assert.rejects(() => higgs(w, { bits: 5, p: 2 }), /'bits'/);
  await assert.rejects(() => higgs(w, { bits: 4, p: 3 as never }), /'p'/);
  await assert.rejects(() => higgs(w, { bits: 4, groupSize: 100 }), /'groupSize'/);
  const w92 = tensor("f32", [1, 184], new Float32Array(184).fill(1));
  await assert.rejects(() => higgs(w92, { bits: 4, groupSize: 92 }), /n = 92.*88 and 96/);
});
