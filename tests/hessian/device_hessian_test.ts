import assert from "node:assert/strict";
import { testGpu } from "../kernels/_gpu.ts";
import { randomTensor } from "./_random_tensor.ts";
import { prng } from "../../core/prng.ts";
import { tensor } from "../../core/tensor.ts";
import { hessian } from "../../hessian/hessian.ts";
import {
  hessianOnDevice,
  hostHessian,
  isDeviceHessian,
  wrapDeviceHessian,
} from "../../hessian/device_hessian.ts";
import { obsSolve } from "../../hessian/obs.ts";
import { evaluateLayerError, layerError } from "../../hessian/layer_error.ts";
import { gptq } from "../../quantizers/gptq.ts";
import { sparsegpt } from "../../pruners/sparsegpt.ts";
import { wanda } from "../../pruners/wanda.ts";
import { compressLinear } from "../../pipeline/compress_linear.ts";
import { encodeHessianFinish, hessianFinishReference } from "../../kernels/hessian_kernel.ts";
import { GpuBatch, storageBuffer, uploadBuffer } from "../../kernels/backend.ts";
import { encodeSubtract, subtractReference } from "../../kernels/subtract_kernel.ts";
import { dequantize } from "../../quantizers/dequantize.ts";

Deno.test("the Hessian finishing pass mirrors, scales and extracts the diagonal like its reference", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const cols of [1, 17, 40]) {
    const rng = prng(cols);
    const lower = Float32Array.from({ length: cols * cols }, () => rng.normal());
    const c = uploadBuffer(gpu, lower, "c");
    const d = storageBuffer(gpu, cols * 4, "d");
    const batch: GpuBatch = new GpuBatch(gpu);
    encodeHessianFinish(batch, c, cols, 1 / 7, d);
    const data: ArrayBuffer[] = (await batch.submit([c, d])).data;
    const ref = hessianFinishReference(lower, cols, 1 / 7);
    assert.deepEqual(new Float32Array(data[0]!), ref.xtx, `${cols}: matrix`);
    assert.deepEqual(new Float32Array(data[1]!), ref.diag, `${cols}: diagonal`);
    c.destroy();
    d.destroy();
  }
});

Deno.test("hessianOnDevice equals the host Hessian, and its host copy is read once", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const x = randomTensor(300, 24, 1);
  const h = await hessianOnDevice(gpu, x);
  assert(isDeviceHessian(h) && !isDeviceHessian(hessian(x)));
  assert.equal(h.count, 300);
  assert.equal(h.cols, 24);
  const a = await h.toHost(), ref = hessian(x);
  assert.equal(await h.toHost(), a, "the host copy is shared");
  assert.equal(await hostHessian(h), a);
  let num = 0, den = 0;
  for (let i = 0; i < ref.xtx.length; i++) {
    num += (a.xtx[i]! - ref.xtx[i]!) ** 2;
    den += ref.xtx[i]! ** 2;
  }
  assert(Math.sqrt(num / den) < 1e-6, `relative error ${Math.sqrt(num / den)}`);
  for (let i = 0; i < 24; i++) {
    assert.equal(h.diag[i], a.xtx[i * 24 + i]);
    for (let j = 0; j < i; j++) assert.equal(a.xtx[i * 24 + j], a.xtx[j * 24 + i]);
  }
  h.release();
  h.release(); // idempotent
  assert(h.released);
  assert.equal(await h.toHost(), a, "a host copy made before release stays valid");
  const other = await hessianOnDevice(gpu, x);
  other.release();
  await assert.rejects(() => other.toHost(), /released/);
  await assert.rejects(
    () => gptq(randomTensor(4, 24, 2), other, { bits: 4 }),
    /device Hessian was released/,
  );
  await assert.rejects(
    () => hessianOnDevice(gpu, tensor("f32", [2, 2], new Float32Array([1, NaN, 0, 0]))),
    /'x' must be finite: element 1 is NaN/,
  );
});

Deno.test("GPTQ and SparseGPT on a device Hessian give the host Hessian's results exactly", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const cols = 64;
  const x = randomTensor(400, cols, 3);
  const w = randomTensor(48, cols, 4, 0.1);
  const dev = await hessianOnDevice(gpu, x);
  // The same float32 values on the host: the GPU path packs them back to float32 exactly.
  const host = await dev.toHost();
  try {
    for (const backend of ["webgpu", "cpu"] as const) {
      for (const actOrder of [false, true]) {
        const opts = { bits: 4, groupSize: 16, actOrder, backend };
        const a = await gptq(w, dev, opts), b = await gptq(w, host, opts);
        assert.deepEqual(a.codes, b.codes, `${backend} actOrder ${actOrder}: codes`);
        assert.deepEqual(a.scales, b.scales);
        assert.deepEqual(a.zeros, b.zeros);
        assert.equal(a.stats.obsLoss, b.stats.obsLoss);
      }
      const sOpts = {
        structure: { kind: "nm", n: 2, m: 4 } as const,
        quantize: { bits: 4, groupSize: 16 },
        backend,
      };
      const s = await sparsegpt(w, dev, sOpts), t = await sparsegpt(w, host, sOpts);
      assert.deepEqual(s.weight.data, t.weight.data, `${backend}: sparsegpt weights`);
      assert.deepEqual(s.mask.data, t.mask.data);
    }
    // Wanda reads only the diagonal, which the device Hessian keeps on the host.
    const structure = { kind: "unstructured", sparsity: 0.5 } as const;
    const wa = await wanda(w, dev, { structure }), wb = await wanda(w, host, { structure });
    assert.deepEqual(wa.mask.data, wb.mask.data);
    // The layer error reads the device matrix in place.
    const approx = (await compressLinear(w, host, [{ kind: "rtn", bits: 3 }])).weight;
    const onDevice = await evaluateLayerError(w, approx, dev, { backend: "webgpu" });
    const onHost = await evaluateLayerError(w, approx, host, { backend: "webgpu" });
    const exact = layerError(w, approx, host);
    assert.equal(onDevice, onHost);
    assert(Math.abs(onDevice - exact) / exact < 1e-4, `${onDevice} vs ${exact}`);
    assert.equal(await evaluateLayerError(w, approx, dev, { backend: "cpu" }), exact);
    // A rotation reads the Hessian back; the result is the host path's.
    const stages = [{ kind: "rotate" } as const, { kind: "gptq", bits: 4, groupSize: 16 } as const];
    const ra = await compressLinear(w, dev, stages, { name: "l" });
    const rb = await compressLinear(w, host, stages, { name: "l" });
    assert.deepEqual(ra.weight.data, rb.weight.data);
  } finally {
    dev.release();
  }
});

Deno.test("a non-finite device Hessian is refused by the GPU solve", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const cols = 8;
  const m = new Float32Array(cols * cols);
  for (let i = 0; i < cols; i++) m[i * cols + i] = 1;
  m[3 * cols + 1] = m[1 * cols + 3] = NaN;
  const diag = new Float64Array(cols).fill(1);
  const h = wrapDeviceHessian(gpu, uploadBuffer(gpu, m, "h"), cols, 10, diag);
  try {
    await assert.rejects(
      () => gptq(randomTensor(4, cols, 5), h, { bits: 4, backend: "webgpu" }),
      /Hessian \(on the device\) holds a NaN or an infinity/,
    );
    await assert.rejects(
      () =>
        obsSolve(randomTensor(4, cols + 1, 5), h, {
          decider: { kind: "prune", structure: { kind: "unstructured", sparsity: 0.5 } },
        }),
      /the Hessian has 8 columns/,
    );
  } finally {
    h.release();
  }
  assert.throws(
    () => wrapDeviceHessian(gpu, storageBuffer(gpu, 16, "small"), cols, 1, diag),
    /buffer has 16 bytes/,
  );
});

Deno.test("the GPU solve measures the layer error in its own submission, with a device Hessian", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const cols = 48;
  const x = randomTensor(300, cols, 6);
  const w = randomTensor(40, cols, 7, 0.1);
  const dev = await hessianOnDevice(gpu, x);
  const host = await dev.toHost();
  try {
    const opts = { bits: 3, groupSize: 16, backend: "webgpu" as const, measureError: true };
    const q = await gptq(w, dev, opts);
    const exact = layerError(w, dequantize(q), host);
    const measured = q.stats!.layerError!;
    assert(Math.abs(measured - exact) / exact < 1e-5, `${measured} vs ${exact}`);
    const s = await sparsegpt(w, dev, {
      structure: { kind: "unstructured", sparsity: 0.5 },
      backend: "webgpu",
      measureError: true,
    });
    const sExact = layerError(w, s.weight, host);
    assert(Math.abs(s.stats.layerError! - sExact) / sExact < 1e-5);
    // Not measured: act-order (a permutation), a host Hessian, the CPU, or not asked.
    assert.equal((await gptq(w, dev, { ...opts, actOrder: true })).stats!.layerError, undefined);
    assert.equal((await gptq(w, host, opts)).stats!.layerError, undefined);
    assert.equal((await gptq(w, dev, { ...opts, backend: "cpu" })).stats!.layerError, undefined);
    assert.equal(
      (await gptq(w, dev, { ...opts, measureError: false })).stats!.layerError,
      undefined,
    );
    // compressLinear uses it for a lone GPTQ stage.
    const c = await compressLinear(w, dev, [{ kind: "gptq", bits: 3, groupSize: 16 }], {
      backend: "webgpu",
    });
    assert(Math.abs(c.layerError - layerError(w, c.weight, host)) / c.layerError < 1e-5);
  } finally {
    dev.release();
  }
});

Deno.test("encodeSubtract equals its reference and checks its lengths", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(9);
  const a = Float32Array.from({ length: 1000 }, () => rng.normal());
  const b = Float32Array.from({ length: 1000 }, () => rng.normal());
  const ab = uploadBuffer(gpu, a, "a"), bb = uploadBuffer(gpu, b, "b");
  const batch: GpuBatch = new GpuBatch(gpu);
  encodeSubtract(batch, ab, bb, 999);
  const data: ArrayBuffer[] = (await batch.submit([ab])).data;
  const ref = a.slice();
  subtractReference(ref.subarray(0, 999), b);
  assert.deepEqual(new Float32Array(data[0]!), ref);
  assert.throws(() => encodeSubtract(new GpuBatch(gpu), ab, bb, 1001), /Cannot subtract 1001/);
  ab.destroy();
  bb.destroy();
});
