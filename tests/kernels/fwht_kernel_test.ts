import assert from "node:assert/strict";
import { fwhtGpu, fwhtReference } from "../../kernels/fwht_kernel.ts";
import { fwhtPlan } from "../../core/fwht.ts";
import { tensor } from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";
import { relError, testGpu } from "./_gpu.ts";

Deno.test("GPU Hadamard transform equals core/fwht for powers of two and 2^k·m orders", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(5);
  for (const n of [4, 64, 1024, 12, 24, 688, 1376]) {
    const rows = 7;
    const x = tensor("f32", [rows, n], Float32Array.from({ length: rows * n }, () => rng.normal()));
    for (const opts of [{ normalize: true }, { transpose: true }]) {
      const { y } = await fwhtGpu(gpu, x, opts);
      const ref = fwhtReference(x, opts);
      const err = relError(y.data, ref.data);
      assert.ok(
        err < 1e-5,
        `n = ${n} (${fwhtPlan(n).description}), ${JSON.stringify(opts)}: error ${err}`,
      );
    }
  }
});

Deno.test("GPU Hadamard transform splits rows into tiles without changing the result", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(6);
  const x = tensor("f32", [10, 24], Float32Array.from({ length: 240 }, () => rng.normal()));
  const whole = await fwhtGpu(gpu, x, { normalize: true });
  const tiled = await fwhtGpu(gpu, x, { normalize: true, maxTileRows: 3 });
  assert.deepEqual(tiled.y.data, whole.y.data);
});
