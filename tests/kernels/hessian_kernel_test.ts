import assert from "node:assert/strict";
import {
  encodeHessian,
  HESSIAN_SLICE_TOKENS,
  xtxGpu,
  xtxReference,
} from "../../kernels/hessian_kernel.ts";
import { GpuBatch, storageBuffer } from "../../kernels/backend.ts";
import { accumulateHessian, hessian } from "../../hessian/hessian.ts";
import { tensor } from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";
import { relError, testGpu } from "./_gpu.ts";

Deno.test("GPU XᵀX matches the float64 reference from f32 and f16 inputs, across token tiles", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(3);
  const tokens = 77, cols = 150;
  const data = Float32Array.from({ length: tokens * cols }, () => rng.normal());
  const x = tensor("f32", [tokens, cols], data);
  const ref = xtxReference(x);
  for (const maxTileBytes of [undefined, 16 * cols * 4]) {
    const { xtx } = await xtxGpu(gpu, x, maxTileBytes ? { maxTileBytes } : {});
    const err = relError(xtx, ref);
    assert.ok(err < 1e-5, `tiles of ${maxTileBytes ?? "all"} bytes: relative error ${err}`);
    for (let i = 0; i < cols; i++) assert.equal(xtx[i * cols + 3], xtx[3 * cols + i]);
  }
  if (gpu.f16) {
    const xh = tensor("f16", [tokens, cols], Float16Array.from(data));
    const { xtx } = await xtxGpu(gpu, xh, { maxTileBytes: 10 * cols * 2 });
    const err = relError(xtx, xtxReference(xh));
    assert.ok(err < 1e-5, `f16 inputs: relative error ${err}`);
  }
});

Deno.test("accumulateHessian() on the GPU continues a Hessian as addInputs() does on the CPU", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(4);
  const a = tensor("f32", [40, 33], Float32Array.from({ length: 40 * 33 }, () => rng.normal()));
  const b = tensor("f32", [25, 33], Float32Array.from({ length: 25 * 33 }, () => rng.normal()));
  const all = tensor("f32", [65, 33], Float32Array.from([...a.data, ...b.data]));
  const first = await accumulateHessian(a, { backend: "webgpu" });
  const h = await accumulateHessian(b, { previous: first, backend: "webgpu" });
  assert.equal(h.count, 65);
  assert.ok(relError(h.xtx, hessian(all).xtx) < 1e-5);
});

Deno.test("GPU XᵀX runs one product per slice of 1,024 tokens, and sliced it stays within float32 rounding of the float64 sum", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const tokens = 8 * HESSIAN_SLICE_TOKENS + 300, cols = 8;
  const rng = prng(5);
  // Nearly equal products make one long float32 sum drift (1.1e-5 relative on the host, summed
  // in order): each slice's sum stays short (3.6e-7).
  const data = Float32Array.from({ length: tokens * cols }, () => 7.3 + rng.normal() * 0.001);
  const x = storageBuffer(gpu, data.byteLength);
  gpu.device.queue.writeBuffer(x, 0, data);
  const out = storageBuffer(gpu, cols * cols * 4);
  const batch = new GpuBatch(gpu);
  encodeHessian(batch, x, tokens, cols, out, { inputs: "f32" }, 0);
  assert.equal(batch.dispatches, 9);
  const { data: read } = await batch.submit([out]);
  const lower = new Float32Array(read[0]!);
  const want = xtxReference(tensor("f32", [tokens, cols], data));
  for (let i = 0; i < cols; i++) {
    for (let j = 0; j <= i; j++) {
      const rel = Math.abs(lower[i * cols + j]! - want[i * cols + j]!) / want[i * cols + j]!;
      assert.ok(rel < 2e-6, `[${i}, ${j}]: ${lower[i * cols + j]} against ${want[i * cols + j]}`);
    }
  }
  x.destroy();
  out.destroy();
});
