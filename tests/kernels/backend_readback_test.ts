import assert from "node:assert/strict";
import {
  cachedPipeline,
  clearReadbackPool,
  GpuBatch,
  readbackPoolSize,
  uploadBuffer,
} from "../../kernels/backend.ts";
import { testGpu } from "./_gpu.ts";

Deno.test("GpuBatch.submit() reads back whole buffers, and ranges into given views or promised ones", async () => {
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
  // Two ranges into the halves of one array (tiles of a result).
  const halves = new Uint8Array(64);
  const split = new GpuBatch(gpu);
  const both = await split.submit([
    { buffer: buf, offset: 32, size: 32, into: halves.subarray(32) },
    { buffer: buf, offset: 0, size: 32, into: Promise.resolve(halves.subarray(0, 32)) },
  ]);
  assert.equal(both.data[0], halves.buffer);
  assert.equal(both.data[1], halves.buffer);
  assert.deepEqual(new Uint32Array(halves.buffer), x.subarray(0, 16));
  // A target whose size is not the range's is refused.
  const wrong = new GpuBatch(gpu);
  await assert.rejects(
    () => wrong.submit([{ buffer: buf, offset: 0, size: 16, into: new Uint8Array(32) }]),
    RangeError,
  );
  buf.destroy();
});

Deno.test("GpuBatch.submit() reuses its read-back buffers across submissions without growing the pool", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  clearReadbackPool(gpu);
  const x = Uint32Array.from({ length: 1 << 16 }, (_, i) => (i * 2246822519) >>> 0);
  const buf = uploadBuffer(gpu, x);
  const read = async (offset: number, size: number) =>
    (await new GpuBatch(gpu).submit([{ buffer: buf, offset, size }])).data[0]!;
  assert.deepEqual(new Uint32Array(await read(0, x.byteLength)), x);
  const after = readbackPoolSize(gpu);
  assert.ok(after.buffers >= 1 && after.bytes >= x.byteLength, JSON.stringify(after));
  // Later reads, the same size and smaller ones (into the same pooled
  // buffer), see this submission's bytes, never a previous one's.
  for (let rep = 0; rep < 3; rep++) {
    const offset = 4 * 1024 * (rep + 1), size = x.byteLength - offset - 4 * rep;
    const got = new Uint32Array(await read(offset, size));
    assert.deepEqual(got, x.subarray(offset / 4, (offset + size) / 4));
    assert.deepEqual(readbackPoolSize(gpu), after);
  }
  clearReadbackPool(gpu);
  assert.deepEqual(readbackPoolSize(gpu), { buffers: 0, bytes: 0 });
  buf.destroy();
});

Deno.test("dispatches of a pipeline with dynamic uniform offsets share bind groups and see their own uniforms", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const wgsl = () => `
struct P { i: u32, v: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> add: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(1) fn main() { out[p.i] = p.v + add[0]; }`;
  // More dispatches than one uniform arena holds (1024 slots).
  const count = 1100;
  for (const dynamicUniforms of [true, false]) {
    const pipe = cachedPipeline(gpu, "test-dynamic-uniforms", wgsl, { dynamicUniforms });
    const add = uploadBuffer(gpu, new Uint32Array([7]));
    const out = uploadBuffer(gpu, new Uint32Array(count));
    const batch: GpuBatch = new GpuBatch(gpu);
    for (let i = 0; i < count; i++) {
      batch.dispatch(pipe, [batch.uniform([{ u32: i }, { u32: 3 * i }]), add, out], [1]);
    }
    assert.equal(batch.bindGroups, dynamicUniforms ? 2 : count);
    const { data } = await batch.submit([out]);
    assert.deepEqual(
      new Uint32Array(data[0]!),
      Uint32Array.from({ length: count }, (_, i) => 3 * i + 7),
    );
    add.destroy();
    out.destroy();
  }
});
