import assert from "node:assert/strict";
import { erf } from "mathjs";
import { prng, randn } from "../../core/prng.ts";
import { tensor } from "../../core/tensor.ts";
import { dequantizeNf4, nf4, nf4Levels } from "../../quantizers/nf4.ts";
import { assertClose } from "../_helpers.ts";

const Phi = (x: number) => 0.5 * (1 + erf(x / Math.SQRT2));

Deno.test("nf4Levels() are the normal quantiles of QLoRA's construction (checked with mathjs' erf)", () => {
  const v = nf4Levels();
  assert.equal(v.length, 16);
  const offset = (1 - 1 / 30 + 1 - 1 / 32) / 2;
  // Undo the normalization with the top quantile, then Φ must give the evenly spaced probabilities.
  let lo = 0, hi = 10;
  for (let i = 0; i < 200; i++) {
    const mid = (lo + hi) / 2;
    if (Phi(mid) < offset) lo = mid;
    else hi = mid;
  }
  const top = lo;
  for (let i = 0; i < 8; i++) {
    assertClose(Phi(v[15 - i]! * top), offset + ((0.5 - offset) * i) / 8, { atol: 1e-12 });
  }
  for (let i = 0; i < 7; i++) {
    assertClose(Phi(-v[i]! * top), offset + ((0.5 - offset) * i) / 7, { atol: 1e-12 });
  }
  assert.equal(v[7], 0);
  // Spot values published with QLoRA (bitsandbytes' float32 table, offset rounded to 0.9677083).
  assertClose(v[14]!, 0.7229568362236023, { atol: 1e-6 });
  assertClose(v[1]!, -0.6961928009986877, { atol: 1e-6 });
  assertClose(v[8]!, 0.07958029955625534, { atol: 1e-6 });
  assertClose(v[6]!, -0.09105003625154495, { atol: 1e-6 });
});

Deno.test("nf4() picks the nearest level of each absmax-scaled weight (brute force)", async () => {
  const rng = prng(1);
  const rows = 4, cols = 100;
  const w = tensor("f32", [rows, cols], Float32Array.from(randn(rows * cols, rng)));
  const before = w.data.slice();
  const q = await nf4(w, { blockSize: 32 });
  assert.deepEqual(w.data, before);
  assert.equal(q.bitsPerWeight, 4.5);
  assert.equal(q.absmax.length, rows * 4);
  const levels = nf4Levels();
  const back = dequantizeNf4(q);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < 4; b++) {
      const c0 = b * 32, c1 = Math.min(cols, c0 + 32);
      let m = 0;
      for (let c = c0; c < c1; c++) m = Math.max(m, Math.abs(w.data[r * cols + c]!));
      const s = q.absmax[r * 4 + b]!;
      assert.equal(s, Math.f16round(m));
      for (let c = c0; c < c1; c++) {
        const x = w.data[r * cols + c]! / s;
        let best = 0;
        for (let k = 1; k < 16; k++) {
          if (Math.abs(x - levels[k]!) < Math.abs(x - levels[best]!)) best = k;
        }
        assert.equal(q.codes[r * cols + c], best);
        assertClose(back.data[r * cols + c]!, s * levels[best]!, { rtol: 1e-6 });
      }
    }
  }
});

Deno.test("nf4() keeps zero blocks at zero and rejects bad block sizes", async () => {
  const q = await nf4(tensor("f32", [1, 8]), { blockSize: 4 });
  assert.ok(dequantizeNf4(q).data.every((v) => v === 0));
  await assert.rejects(() => nf4(tensor("f32", [1, 8]), { blockSize: 0 }), /'blockSize'/);
  await assert.rejects(
    () => nf4(tensor("f32", [1, 2], new Float32Array([1, NaN]))),
    RangeError,
  );
});
