import assert from "node:assert/strict";
import {
  acquireGpu,
  cachedPipeline,
  GpuBatch,
  resolveBackend,
  uploadBuffer,
} from "../../kernels/backend.ts";
import { testGpu } from "./_gpu.ts";

Deno.test("resolveBackend() runs on the CPU for 'cpu' and rejects unknown backends", async () => {
  assert.equal(await resolveBackend("cpu", "test"), null);
  await assert.rejects(() => resolveBackend("cuda" as "cpu", "test"), RangeError);
});

Deno.test("resolveBackend() uses a software adapter only when asked for 'webgpu'", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const auto = await resolveBackend("auto", "test");
  assert.equal(auto === null, gpu.software);
  assert.equal(await resolveBackend("webgpu", "test"), gpu);
});

Deno.test("a batch runs many dispatches in one submission and reads back once", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const add = cachedPipeline(gpu, "test-add", () => `
struct P { v: f32, pad0: f32, pad1: f32, pad2: f32 }
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<uniform> p: P;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < arrayLength(&x)) { x[g.x] = x[g.x] * 2.0 + p.v; }
}`);
  assert.equal(cachedPipeline(gpu, "test-add", () => "unused"), add);
  const x = uploadBuffer(gpu, new Float32Array(100).fill(1));
  const batch = new GpuBatch(gpu);
  for (let i = 0; i < 20; i++) {
    batch.dispatch(add, [x, batch.uniform([{ f32: i }, { f32: 0 }, { f32: 0 }, { f32: 0 }])], [2]);
    if (i === 9) batch.phase("first");
  }
  const { data, gpuSeconds, phases } = await batch.submit([x]);
  // x ← 2x + i for i = 0..19, from 1.
  let expected = 1;
  for (let i = 0; i < 20; i++) expected = 2 * expected + i;
  assert.deepEqual(
    Array.from(new Float32Array(data[0]!)),
    new Array(100).fill(Math.fround(expected)),
  );
  if (gpu.timestamps) {
    assert.ok(gpuSeconds >= 0 && "first" in phases && "rest" in phases);
  }
  x.destroy();
});

Deno.test("a lost device fails the next batch with an error, and a fresh device can be acquired", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  gpu.device.destroy();
  await gpu.device.lost;
  assert.throws(() => new GpuBatch(gpu), /lost/);
  const fresh = await acquireGpu();
  assert.ok(fresh !== null && fresh.device !== gpu.device);
});

Deno.test("acquireGpu() reports whether f16 subnormals survive conversion, as f16 loads show", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  assert.equal(typeof gpu.f16Subnormals, "boolean");
  if (!gpu.f16) return;
  // An independent route: f16 storage values 2^−24 and 3·2^−24 converted with f32().
  const code = `enable f16;
@group(0) @binding(0) var<storage, read_write> h: array<f16, 2>;
@group(0) @binding(1) var<storage, read_write> y: array<f32, 2>;
@compute @workgroup_size(1)
fn main() { y[0] = f32(h[0]); y[1] = f32(h[1]); }
`;
  const pipeline = cachedPipeline(gpu, "test-f16-subnormals", () => code);
  const h = uploadBuffer(gpu, new Uint16Array([1, 3]));
  const y = uploadBuffer(gpu, new Float32Array(2));
  const batch = new GpuBatch(gpu);
  batch.dispatch(pipeline, [h, y], [1, 1]);
  const out = new Float32Array((await batch.submit([y])).data[0]!);
  h.destroy();
  y.destroy();
  assert.equal(out[0] === 2 ** -24 && out[1] === 3 * 2 ** -24, gpu.f16Subnormals);
});
