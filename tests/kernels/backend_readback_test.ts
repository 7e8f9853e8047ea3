import assert from "node:assert/strict";
import { GpuBatch, uploadBuffer } from "../../kernels/backend.ts";
import { testGpu } from "./_gpu.ts";

Deno.test("GpuBatch.submit() reads back whole buffers, and ranges into given arrays or promised ones", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  // More than one 8 MiB chunk of the chunked copy, and a last partial one.
  const count = (9 << 20) / 4 + 5;
  const x = Uint32Array.from({ length: count }, (_, i) => (i * 2654435761) >>> 0);
  const buf = uploadBuffer(gpu, x);
  const into = new Uint8Array(x.byteLength);
  const promised = Promise.resolve(new Uint8Array(40));
  const batch = new GpuBatch(gpu);
  const { data } = await batch.submit([
    buf,
    { buffer: buf, offset: 0, size: x.byteLength, into },
    { buffer: buf, offset: 80, size: 40, into: promised },
    { buffer: buf, offset: 4, size: 6 },
  ]);
  assert.deepEqual(new Uint32Array(data[0]!), x);
  assert.equal(data[1], into.buffer);
  assert.deepEqual(new Uint32Array(data[1]!), x);
  assert.equal(data[2], (await promised).buffer);
  assert.deepEqual(new Uint32Array(data[2]!), x.subarray(20, 30));
  assert.deepEqual(new Uint8Array(data[3]!), new Uint8Array(x.buffer, 4, 6));
  // A target that is not a whole buffer of the range's size is refused.
  const wrong = new GpuBatch(gpu);
  await assert.rejects(
    () => wrong.submit([{ buffer: buf, offset: 0, size: 16, into: new Uint8Array(32) }]),
    RangeError,
  );
  buf.destroy();
});
