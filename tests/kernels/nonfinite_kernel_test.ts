import assert from "node:assert/strict";
import { GpuBatch, storageBuffer, uploadBuffer } from "../../kernels/backend.ts";
import { encodeNonFiniteCheck } from "../../kernels/_nonfinite_kernel.ts";
import { firstNonFinite } from "../../core/_finite.ts";
import { prng } from "../../core/prng.ts";
import { testGpu } from "./_gpu.ts";

Deno.test("the GPU non-finite scan flags exactly the ranges that firstNonFinite() rejects", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(4);
  const len = 70_001; // more than one grid-stride pass of a small grid, odd length
  const cases: { name: string; at: number; value: number; count: number }[] = [
    { name: "all finite", at: -1, value: 0, count: len },
    { name: "NaN first", at: 0, value: NaN, count: len },
    { name: "+Infinity last", at: len - 1, value: Infinity, count: len },
    { name: "-Infinity inside", at: 40_000, value: -Infinity, count: len },
    { name: "NaN past the scanned count", at: 50_000, value: NaN, count: 50_000 },
    {
      name: "largest finite and subnormal values",
      at: 7,
      value: 3.4028234663852886e38,
      count: len,
    },
  ];
  for (const c of cases) {
    const x = Float32Array.from({ length: len }, () => rng.normal() * 1e3);
    x[3] = 1.4e-45;
    if (c.at >= 0) x[c.at] = c.value;
    const buf = uploadBuffer(gpu, x);
    const flags = storageBuffer(gpu, 12);
    const batch: GpuBatch = new GpuBatch(gpu);
    encodeNonFiniteCheck(batch, buf, c.count, flags, 2);
    const { data }: { data: ArrayBuffer[] } = await batch.submit([flags]);
    const words = new Uint32Array(data[0]!);
    const expected = firstNonFinite(x.subarray(0, c.count)) >= 0 ? 1 : 0;
    assert.deepEqual(Array.from(words), [0, 0, expected], c.name);
    buf.destroy();
    flags.destroy();
  }
});

Deno.test("the GPU non-finite scan rejects a count or slot outside its buffers", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const buf = storageBuffer(gpu, 16), flags = storageBuffer(gpu, 4);
  const batch = new GpuBatch(gpu);
  assert.throws(() => encodeNonFiniteCheck(batch, buf, 5, flags, 0), /'count' must be/);
  assert.throws(() => encodeNonFiniteCheck(batch, buf, 4, flags, 1), /'slot' must/);
  await batch.submit();
  buf.destroy();
  flags.destroy();
});
