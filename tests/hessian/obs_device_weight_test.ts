import assert from "node:assert/strict";
import { testGpu } from "../kernels/_gpu.ts";
import { randomTensor } from "./_random_tensor.ts";
import { tensor } from "../../core/tensor.ts";
import { hessianOnDevice } from "../../hessian/device_hessian.ts";
import { gptq } from "../../quantizers/gptq.ts";
import { sparsegpt } from "../../pruners/sparsegpt.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { compressLinear } from "../../pipeline/compress_linear.ts";
import { type Gpu, GpuBatch, uploadBuffer } from "../../kernels/backend.ts";
import {
  attachDeviceCopy,
  deviceCopyOf,
  type DeviceWeight,
  releaseDeviceCopy,
} from "../../kernels/device_copies.ts";

async function read(gpu: Gpu, buffer: GPUBuffer, offset: number, count: number) {
  const out = await new GpuBatch(gpu).submit([{ buffer, offset, size: count * 4 }]);
  return new Float32Array(out.data[0]!);
}

Deno.test("the GPU solve reads W from a registered device copy instead of the host array", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const cols = 48;
  const x = randomTensor(300, cols, 1);
  const w = randomTensor(40, cols, 2, 0.1);
  const other = randomTensor(40, cols, 9, 0.1);
  const dev = await hessianOnDevice(gpu, x);
  // The copy holds other values (at an offset into a larger buffer): the
  // solve must then give their result.
  const padded = new Float32Array(w.data.length + 3);
  padded.set(other.data, 3);
  const buffer = uploadBuffer(gpu, padded, "copy");
  const opts = { bits: 3, groupSize: 16, backend: "webgpu" as const };
  try {
    const expected = await gptq(other, dev, opts);
    const plain = await gptq(w, dev, opts);
    attachDeviceCopy(w.data, { gpu, buffer, offset: 12, owned: false });
    const got = await gptq(w, dev, opts);
    assert.deepEqual(got.codes, expected.codes);
    assert.deepEqual(got.scales, expected.scales);
    assert.notDeepEqual(plain.codes, expected.codes);
    // Only the exact array is a key: a copy of W's values is uploaded.
    const copy = tensor("f32", w.shape, Float32Array.from(w.data));
    assert.deepEqual((await gptq(copy, dev, opts)).codes, plain.codes);
  } finally {
    releaseDeviceCopy(w.data);
    buffer.destroy();
    dev.release();
  }
});

Deno.test("the GPU solve hands over Ŵ on the device, bit for bit the host result's", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const cols = 64;
  const x = randomTensor(400, cols, 3);
  const w = randomTensor(24, cols, 4, 0.1);
  const dev = await hessianOnDevice(gpu, x);
  const received: DeviceWeight[] = [];
  const onDeviceWeight = (d: DeviceWeight) => void received.push(d);
  try {
    const q = await gptq(w, dev, { bits: 4, groupSize: 32, backend: "webgpu", onDeviceWeight });
    assert.equal(received.length, 1);
    assert.deepEqual(
      await read(gpu, received[0]!.buffer, 0, w.data.length),
      dequantize(q).data,
    );
    const s = await sparsegpt(w, dev, {
      structure: { kind: "nm", n: 2, m: 4 },
      backend: "webgpu",
      onDeviceWeight,
    });
    assert.equal(received.length, 2);
    assert.deepEqual(await read(gpu, received[1]!.buffer, 0, w.data.length), s.weight.data);
    // Not handed over: a permutation (act-order), or the CPU.
    await gptq(w, dev, {
      bits: 4,
      groupSize: 32,
      backend: "webgpu",
      actOrder: true,
      onDeviceWeight,
    });
    await gptq(w, dev, { bits: 4, groupSize: 32, backend: "cpu", onDeviceWeight });
    assert.equal(received.length, 2);

    // compressLinear registers it as an owned copy of the result's weight.
    const c = await compressLinear(w, dev, [{ kind: "gptq", bits: 4, groupSize: 32 }], {
      backend: "webgpu",
      deviceWeight: true,
    });
    const copy = deviceCopyOf(c.weight.data, gpu);
    assert(copy !== null && copy.owned && copy.offset === 0);
    assert.deepEqual(await read(gpu, copy.buffer, 0, w.data.length), c.weight.data);
    releaseDeviceCopy(c.weight.data);
    assert.equal(deviceCopyOf(c.weight.data, gpu), null);
    // Two stages: the last solve's Ŵ is not the final weight, nothing is left.
    const two = await compressLinear(
      w,
      dev,
      [{ kind: "sparsegpt", structure: { kind: "nm", n: 2, m: 4 } }, {
        kind: "gptq",
        bits: 4,
        groupSize: 32,
      }],
      { backend: "webgpu", deviceWeight: true },
    );
    assert.equal(deviceCopyOf(two.weight.data, gpu), null);
    await assert.rejects(
      // deno-lint-ignore no-explicit-any
      () => compressLinear(w, dev, [], { deviceWeight: 1 as any }),
      /'deviceWeight' must be a boolean/,
    );
  } finally {
    for (const d of received) d.buffer.destroy();
    dev.release();
  }
});
