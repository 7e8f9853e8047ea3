import assert from "node:assert/strict";
import { prng } from "../../core/prng.ts";
import { GpuBatch, storageBuffer, uploadBuffer } from "../../kernels/backend.ts";
import { encodeRowDot, rowDotReference } from "../../kernels/row_dot_kernel.ts";
import { testGpu } from "./_gpu.ts";

Deno.test("row dot products match their CPU reference", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(5);
  const [rows, cols] = [70, 333];
  const a = Float32Array.from({ length: rows * cols }, () => rng.normal());
  const b = Float32Array.from({ length: rows * cols }, () => rng.normal());
  const [ba, bb, s] = [uploadBuffer(gpu, a), uploadBuffer(gpu, b), storageBuffer(gpu, rows * 4)];
  const batch = new GpuBatch(gpu);
  encodeRowDot(batch, s, ba, bb, rows, cols);
  const { data } = await batch.submit([s]);
  const got = new Float32Array(data[0]!), want = rowDotReference(a, b, rows, cols);
  for (let r = 0; r < rows; r++) assert(Math.abs(got[r]! - want[r]!) < 1e-4 * Math.sqrt(cols));
  for (const buf of [ba, bb, s]) buf.destroy();
});
