import assert from "node:assert/strict";
import { prng } from "../../core/prng.ts";
import { type Tensor, tensor } from "../../core/tensor.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { rotated } from "../../quantizers/rotated.ts";
import { rtn } from "../../quantizers/rtn.ts";
import { higgs } from "../../quantizers/higgs.ts";
import { dequantizeNf4, nf4 } from "../../quantizers/nf4.ts";
import { assertClose } from "../_helpers.ts";
import { mse, studentT3 } from "./_heavy_tailed.ts";

/** Student-t rows (3 degrees of freedom), or Gaussian rows with a few large outlier columns. */
function weights(kind: "student" | "outliers", rows: number, cols: number): Tensor<"f32"> {
  const rng = prng(kind === "student" ? 1 : 2);
  const d = new Float32Array(rows * cols);
  for (let i = 0; i < d.length; i++) {
    if (kind === "outliers") d[i] = rng.normal();
    else d[i] = studentT3(rng);
  }
  if (kind === "outliers") {
    for (const c of [3, 77, 200, 401]) for (let r = 0; r < rows; r++) d[r * cols + c]! *= 25;
  }
  return tensor("f32", [rows, cols], d);
}

Deno.test("a random Hadamard rotation before per-channel RTN reduces the 4- and 3-bit error of heavy-tailed and outlier weights", async () => {
  for (const kind of ["student", "outliers"] as const) {
    for (const cols of [512, 344]) {
      const w = weights(kind, 32, cols);
      for (const bits of [4, 3]) {
        const plain = mse(dequantize(await rtn(w, { bits })).data, w.data);
        const rot = await rotated((x) => rtn(x, { bits }), { seed: 3 })(w);
        const eRot = mse(rot.weight.data, w.data);
        assert.ok(
          eRot < 0.7 * plain,
          `${kind}, ${cols} columns, ${bits} bits: ${eRot} vs ${plain}`,
        );
      }
    }
  }
});

Deno.test("rotated() with an exact quantizer gives the weight back, also through the fallback", async () => {
  for (
    const [cols, fallback] of [[1536, "none"], [428, "kronecker"], [428, "blockDiagonal"]] as const
  ) {
    const w = weights("student", 4, cols);
    const out = await rotated((x) => Promise.resolve(x), { seed: 1, fallback })(w);
    assert.equal(out.rotation.n, cols);
    assertClose(out.weight.data, w.data, { atol: 1e-4 });
    // The quantizer saw the rotated weight, not the original.
    assert.ok(mse((out.rotated as Tensor).data as Float32Array, w.data) > 0.1);
  }
  await assert.rejects(() => rotated((x) => Promise.resolve(x))(weights("student", 2, 428)), /428/);
});

Deno.test("rotated() reads back NF4 and HIGGS results too", async () => {
  const w = weights("outliers", 8, 512);
  const viaNf4 = await rotated((x) => nf4(x, { blockSize: 64 }), { seed: 2 })(w);
  const plainNf4 = mse(dequantizeNf4(await nf4(w, { blockSize: 64 })).data, w.data);
  assert.ok(mse(viaNf4.weight.data, w.data) < plainNf4);
  const viaHiggs = await rotated((x) => higgs(x, { bits: 4, groupSize: 64 }), { seed: 2 })(w);
  assert.ok(mse(viaHiggs.weight.data, w.data) < plainNf4);
});
