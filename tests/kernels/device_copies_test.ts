import assert from "node:assert/strict";
import { testGpu } from "./_gpu.ts";
import { GpuBatch, storageBuffer, uploadBuffer } from "../../kernels/backend.ts";
import {
  attachDeviceCopy,
  deviceCopyOf,
  releaseDeviceCopy,
  takeDeviceCopy,
} from "../../kernels/device_copies.ts";
import { encodeSubtract } from "../../kernels/subtract_kernel.ts";
import { tensor } from "../../core/tensor.ts";
import { lazyTensor } from "../../core/lazy_tensor.ts";

Deno.test("device copies are found by their host array, taken once, and released", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const values = Float32Array.from([1, 2, 3]);
  const buffer = uploadBuffer(gpu, new Float32Array(8), "b");
  try {
    assert.equal(deviceCopyOf(values, gpu), null);
    attachDeviceCopy(values, { gpu, buffer, offset: 8, owned: false });
    assert.equal(deviceCopyOf(values, gpu)?.offset, 8);
    // Another array with the same values is another key.
    assert.equal(deviceCopyOf(Float32Array.from(values), gpu), null);
    const taken = takeDeviceCopy(values, gpu);
    assert.equal(taken?.buffer, buffer);
    assert.equal(takeDeviceCopy(values, gpu), null);
    // Released views only forget (the buffer stays usable).
    attachDeviceCopy(values, { gpu, buffer, offset: 0, owned: false });
    releaseDeviceCopy(values);
    assert.equal(deviceCopyOf(values, gpu), null);
    releaseDeviceCopy(values); // nothing registered: no-op
    const read = await new GpuBatch(gpu).submit([buffer]);
    assert.equal(read.data[0]!.byteLength, 32);
    // Ranges are checked.
    assert.throws(
      () => attachDeviceCopy(values, { gpu, buffer, offset: 2, owned: false }),
      /multiple of 4/,
    );
    assert.throws(
      () => attachDeviceCopy(values, { gpu, buffer, offset: 24, owned: false }),
      /12 bytes at offset 24 of a buffer of 32 bytes/,
    );
  } finally {
    buffer.destroy();
  }
});

Deno.test("a tensor finds its array's device copy, and a lazy tensor's is found without filling it", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const buffer = uploadBuffer(gpu, new Float32Array(8), "b");
  try {
    const plain = tensor("f32", [3], Float32Array.from([1, 2, 3]));
    attachDeviceCopy(plain, { gpu, buffer, offset: 4, owned: false });
    assert.equal(deviceCopyOf(plain.data, gpu)?.offset, 4);
    releaseDeviceCopy(plain.data);
    assert.equal(deviceCopyOf(plain, gpu), null);
    let fills = 0;
    const lazy = lazyTensor("f32", [2, 3], (out) => void (fills++, out.fill(5)));
    attachDeviceCopy(lazy, { gpu, buffer, offset: 8, owned: false });
    assert.equal(deviceCopyOf(lazy, gpu)?.offset, 8);
    assert.throws(
      () => attachDeviceCopy(lazy, { gpu, buffer, offset: 12, owned: false }),
      /24 bytes at offset 12 of a buffer of 32 bytes/,
    );
    assert.equal(fills, 0);
    // Once filled, its values are the same key.
    assert.equal(deviceCopyOf(lazy.data, gpu)?.offset, 8);
    assert.equal(takeDeviceCopy(lazy, gpu)?.buffer, buffer);
    assert.equal(deviceCopyOf(lazy.data, gpu), null);
    assert.equal(fills, 1);
  } finally {
    buffer.destroy();
  }
});

Deno.test("GpuBatch.copy runs in order with the dispatches around it", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const a = uploadBuffer(gpu, Float32Array.from([10, 20, 30, 40]), "a");
  const c = uploadBuffer(gpu, Float32Array.from([1, 2, 3, 4]), "c");
  const b = storageBuffer(gpu, 24, "b");
  const d = storageBuffer(gpu, 16, "d");
  try {
    const batch = new GpuBatch(gpu);
    batch.copy(a, 4, b, 8, 12); // b[2..5) = a[1..4)
    encodeSubtract(batch, b, c, 4); // b[0..4) -= c: sees the copied values
    batch.copy(b, 0, d, 0, 16); // after the subtraction
    encodeSubtract(batch, d, c, 4);
    batch.phase("work");
    const out = await batch.submit([b, d]);
    assert.deepEqual([...new Float32Array(out.data[0]!)], [-1, -2, 17, 26, 40, 0]);
    assert.deepEqual([...new Float32Array(out.data[1]!)], [-2, -4, 14, 22]);
    // The passes the copies ended belong to the phase named after them.
    if (gpu.timestamps) assert.deepEqual(Object.keys(out.phases), ["work"]);
  } finally {
    for (const x of [a, b, c, d]) x.destroy();
  }
});
