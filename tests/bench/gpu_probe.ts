/**
 * Platform probe for the GPU machine: what the WebGPU adapter offers and what
 * the plumbing costs, measured so that kernel work aims at real ceilings.
 *
 * - the adapter's features and main limits, and whether f16 subnormals survive
 *   `unpack2x16float` (`Gpu.f16Subnormals`);
 * - the host's cost per dispatch of encoding, finishing and submitting a
 *   replayed pass (1 binding, or 4 and a uniform at a dynamic offset);
 * - the per-dispatch floor: many tiny dispatches in one compute pass (GPU time
 *   from timestamp queries), writing one buffer (a barrier between
 *   dispatches) or a buffer each;
 * - a plain WGSL read kernel (vec4<u32> loads, summed) over weight-sized
 *   buffers that rotate through more than 200 MB, so L2 cannot serve them;
 * - a WGSL copy kernel of 256 MB;
 * - read-back of 180 MB (copy to a MAP_READ buffer, mapAsync, getMappedRange
 *   and the copy out, timed separately; whole and in 16 MB chunks);
 * - uploads of 485 MB (one writeBuffer, 16 MB writeBuffer chunks, and a
 *   buffer mapped at creation);
 * - what a map waits for: how long the `mapAsync` call itself takes after a
 *   long submission, and its promise after that (Deno polls the device
 *   waiting inside the call, then sleeps 10 ms).
 *
 * Run on the GPU machine: `deno run -A tests/bench/gpu_probe.ts [floor] [host] [fma] [read]
 * [readback] [upload] [map]` (all sections when none is named; `--small` for a quick
 * check on a software adapter).
 *
 * @module
 */

import { acquireGpu, GpuBatch, storageBuffer } from "../../kernels/backend.ts";

const gpu = await acquireGpu();
if (!gpu) {
  console.log("no WebGPU adapter: nothing to probe");
  Deno.exit(0);
}
const device = gpu.device;
const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
console.log(`adapter: ${gpu.description}`);
console.log(`adapter features: ${[...(adapter?.features ?? [])].sort().join(", ")}`);
console.log(`f16 subnormals kept by unpack2x16float: ${gpu.f16Subnormals}`);
console.log(
  `limits: workgroup storage ${gpu.limits.maxComputeWorkgroupStorageSize}, invocations ${gpu.limits.maxComputeInvocationsPerWorkgroup}, binding ${gpu.limits.maxStorageBufferBindingSize}, buffer ${gpu.limits.maxBufferSize}`,
);

const small = Deno.args.includes("--small"); // a quick check on a software adapter
const MB = small ? 1e4 : 1e6;
const ms = (t0: number) => performance.now() - t0;

function pipeline(code: string): GPUComputePipeline {
  return device.createComputePipeline({
    layout: "auto",
    compute: { module: device.createShaderModule({ code }), entryPoint: "main" },
  });
}

/** GPU seconds per dispatch of `calls` dispatches recorded by `record`, median of 3. */
async function perCall(
  calls: number,
  record: (b: GpuBatch, i: number) => void,
): Promise<number> {
  const out: number[] = [];
  for (let rep = 0; rep < 4; rep++) {
    const b = new GpuBatch(gpu!);
    for (let i = 0; i < calls; i++) record(b, i);
    const { gpuSeconds } = await b.submit();
    if (rep > 0) out.push(gpuSeconds / calls);
  }
  out.sort((a, b) => a - b);
  return out[1]!;
}

// Sections to run: all, or those named (floor, host, fma, read, readback, upload, map).
const named = Deno.args.filter((a) => !a.startsWith("--"));
const want = (section: string) => named.length === 0 || named.includes(section);

// 1. Dispatch floor.
if (want("floor")) {
  const code = `@group(0) @binding(0) var<storage, read_write> y: array<u32>;
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x == 0u) { y[0] = y[0] + 1u; }
}`;
  for (const [wg, groups] of [[64, 1], [1024, 128], [256, 1024]] as const) {
    const p = pipeline(code.replace("WG", String(wg)));
    const bufs = Array.from({ length: 64 }, () => storageBuffer(gpu, 256));
    const shared = await perCall(small ? 20 : 2000, (b) => b.dispatch(p, [bufs[0]!], [groups]));
    const apart = await perCall(
      small ? 20 : 2000,
      (b, i) => b.dispatch(p, [bufs[i % 64]!], [groups]),
    );
    console.log(
      `dispatch floor, ${groups} workgroups of ${wg}: one output ${
        (shared * 1e6).toFixed(2)
      } us/dispatch, an output each ${(apart * 1e6).toFixed(2)} us/dispatch`,
    );
    for (const buf of bufs) buf.destroy();
  }
}

// 1a. Host cost of encoding and submitting recorded dispatches (as a decode step replays them):
// `calls` dispatches of a tiny kernel with 1 or 5 bindings (the last a uniform at a dynamic
// offset), bind groups created once, replayed into a fresh encoder each time; host µs per dispatch
// for the pass (setPipeline/setBindGroup/dispatch and end), finish, and submit, the median of 20.
if (want("host")) {
  const one = pipeline(`@group(0) @binding(0) var<storage, read_write> y: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x == 0u) { y[0] = y[0] + 1u; }
}`);
  const fiveLayout = device.createBindGroupLayout({
    entries: [
      ...[0, 1, 2, 3].map((binding) => ({
        binding,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: binding === 0 ? "storage" : "read-only-storage" } as GPUBufferBindingLayout,
      })),
      {
        binding: 4,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: "uniform", hasDynamicOffset: true } as GPUBufferBindingLayout,
      },
    ],
  });
  const five = device.createComputePipeline({
    layout: device.createPipelineLayout({ bindGroupLayouts: [fiveLayout] }),
    compute: {
      module: device.createShaderModule({
        code: `struct P { n: u32 }
@group(0) @binding(0) var<storage, read_write> y: array<u32>;
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read> c: array<u32>;
@group(0) @binding(4) var<uniform> p: P;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x == 0u) { y[0] = y[0] + a[0] + b[0] + c[0] + p.n; }
}`,
      }),
      entryPoint: "main",
    },
  });
  const calls = Number(Deno.env.get("CALLS") ?? (small ? 50 : 150));
  const bufs = Array.from({ length: 16 }, () => storageBuffer(gpu, 256));
  const uniforms = device.createBuffer({
    size: 256 * calls,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  const configs = [
    ["1 binding", one, null, false],
    ["5 bindings", five, fiveLayout, false],
    ["1 binding, one bind group set once", one, null, true],
  ] as const;
  for (const [name, p, groups, once] of configs) {
    const cmds = Array.from({ length: once ? 1 : calls }, (_, i) => ({
      bg: device.createBindGroup({
        layout: groups ?? p.getBindGroupLayout(0),
        entries: groups === null ? [{ binding: 0, resource: { buffer: bufs[i % 16]! } }] : [
          ...[0, 1, 2, 3].map((binding) => ({
            binding,
            resource: { buffer: bufs[(i + binding) % 16]! },
          })),
          { binding: 4, resource: { buffer: uniforms, offset: 0, size: 16 } },
        ],
      }),
      offsets: groups === null ? [] : [256 * i],
    }));
    const tPass: number[] = [], tFinish: number[] = [], tSubmit: number[] = [];
    for (let rep = 0; rep < 24; rep++) {
      let t = performance.now();
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(p);
      if (once) {
        pass.setBindGroup(0, cmds[0]!.bg);
        for (let i = 0; i < calls; i++) pass.dispatchWorkgroups(1);
      } else {
        for (const c of cmds) {
          pass.setBindGroup(0, c.bg, c.offsets);
          pass.dispatchWorkgroups(1);
        }
      }
      pass.end();
      const t1 = performance.now();
      const cb = enc.finish();
      const t2 = performance.now();
      device.queue.submit([cb]);
      const t3 = performance.now();
      if (rep >= 4) {
        tPass.push(t1 - t);
        tFinish.push(t2 - t1);
        tSubmit.push(t3 - t2);
      }
      if (rep % 4 === 3) await device.queue.onSubmittedWorkDone();
      t = performance.now();
    }
    await device.queue.onSubmittedWorkDone();
    const med = (a: number[]) => a.sort((x, y) => x - y)[a.length >> 1]! * 1e3 / calls;
    console.log(
      `host per dispatch, ${calls} dispatches, ${name}: pass ${med(tPass).toFixed(2)} µs, finish ${
        med(tFinish).toFixed(2)
      } µs, submit ${med(tSubmit).toFixed(2)} µs`,
    );
  }
  for (const b of bufs) b.destroy();
  uniforms.destroy();
}

// 1b. Arithmetic peak: independent FMA chains per thread (loop unrolled 8×), f32 and (with
// shader-f16) packed vec2/vec4<f16>. Every lane feeds the result (a lane left unused is dead code
// the compiler drops: an earlier version counted such lanes and reported twice the f16 rate).
if (want("fma")) {
  const chains = 8, iters = small ? 16 : 4096, groups = small ? 4 : 132 * 64, wg = 256;
  for (const type of gpu.f16 ? ["f32", "vec2<f16>", "vec4<f16>"] : ["f32"]) {
    const lanes = type === "f32" ? 1 : type === "vec2<f16>" ? 2 : 4;
    const zero = type === "f32" ? "0.0" : `${type}(0.0)`;
    const p = pipeline(`${type === "f32" ? "" : "enable f16;\n"}
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(${wg}) fn main(@builtin(global_invocation_id) g: vec3u) {
  let s = ${type}(${type === "f32" ? "f32(g.x) * 1e-9" : "f16(g.x & 7u) * 0.001"});
  let m = ${type}(${type === "f32" ? "0.999999" : "0.999"});
${Array.from({ length: chains }, (_, c) => `  var a${c} = s + ${type}(${c + 1}.0);`).join("\n")}
  for (var i = 0u; i < ${iters / 8}u; i++) {
${
      Array.from({ length: 8 }, () =>
        Array.from({ length: chains }, (_, c) => `    a${c} = fma(a${c}, m, s);`).join("\n")).join(
          "\n",
        )
    }
  }
  var t = ${zero};
${Array.from({ length: chains }, (_, c) => `  t += a${c};`).join("\n")}
  if (${
      type === "f32" ? "t" : lanes === 2 ? "f32(t.x + t.y)" : "f32(t.x + t.y + t.z + t.w)"
    } == 12345.0) { y[0] = 1.0; }
}`);
    const y = storageBuffer(gpu, 16);
    // The first type runs ~1 s more first: the GPU leaves its idle clocks.
    for (let w = 0; w < (type === "f32" && !small ? 4 : 0); w++) {
      await perCall(20, (b) => b.dispatch(p, [y], [groups]));
    }
    const t = await perCall(small ? 2 : 20, (b) => b.dispatch(p, [y], [groups]));
    const flops = 2 * chains * iters * groups * wg * lanes;
    console.log(
      `FMA peak ${type}: ${(t * 1e3).toFixed(3)} ms, ${(flops / t / 1e12).toFixed(1)} TFLOP/s`,
    );
    y.destroy();
  }
}

// 2. Plain read bandwidth over rotating buffers, and a copy kernel.
if (want("read")) {
  const read = (wg: number, per: number) =>
    `@group(0) @binding(0) var<storage, read> x: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;
struct P { n: u32 }
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(${wg}) fn main(@builtin(global_invocation_id) g: vec3u,
    @builtin(num_workgroups) nw: vec3u) {
  let stride = nw.x * ${wg}u;
  var acc = vec4<u32>(0u);
  var i = g.x;
  for (; i + ${per - 1}u * stride < p.n; i += ${per}u * stride) {
${Array.from({ length: per }, (_, u) => `    let v${u} = x[i + ${u}u * stride];`).join("\n")}
${Array.from({ length: per }, (_, u) => `    acc ^= v${u};`).join("\n")}
  }
  for (; i < p.n; i += stride) { acc ^= x[i]; }
  if (acc.x == 0x12345678u && acc.y == 7u) { y[g.x] = acc.z; }
}`;
  const sizes = [8.4, 22.5, 33.5, 90.2, 268.4];
  for (const size of sizes) {
    const bytes = Math.round(size * MB / 16) * 16;
    const copies = Math.max(2, Math.ceil(200 * MB / bytes) + 1);
    const bufs = Array.from({ length: copies }, () => storageBuffer(gpu, bytes));
    const y = storageBuffer(gpu, 4 * 1024 * 1024);
    const parts: string[] = [];
    for (
      const [wg, per, groups] of [[256, 4, 1056], [256, 4, 2112], [512, 2, 1056], [
        1024,
        4,
        264,
      ]] as const
    ) {
      const p = pipeline(read(wg, per));
      const u = device.createBuffer({
        size: 16,
        usage: GPUBufferUsage.UNIFORM,
        mappedAtCreation: true,
      });
      new Uint32Array(u.getMappedRange()).set([bytes / 16, 0, 0, 0]);
      u.unmap();
      const t = await perCall(
        copies * Math.max(1, Math.ceil(40 / copies)),
        (b, i) => b.dispatch(p, [bufs[i % copies]!, y, u], [groups]),
      );
      parts.push(
        `${wg}x${groups} u${per} ${(t * 1e6).toFixed(1)} us ${(bytes / t / 1e9).toFixed(0)} GB/s`,
      );
    }
    console.log(`read ${size} MB (${copies} rotating copies): ${parts.join("; ")}`);
    for (const buf of bufs) buf.destroy();
    y.destroy();
  }
  const copy = pipeline(`@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> y: array<vec4<f32>>;
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) g: vec3u,
    @builtin(num_workgroups) nw: vec3u) {
  let stride = nw.x * 256u;
  for (var i = g.x; i < arrayLength(&x); i += stride) { y[i] = x[i]; }
}`);
  const bytes = 256 * 1024 * (small ? 1 : 1024);
  const a = storageBuffer(gpu, bytes), b2 = storageBuffer(gpu, bytes);
  const t = await perCall(20, (b) => b.dispatch(copy, [a, b2], [2112]));
  console.log(
    `WGSL copy 256 MiB: ${(t * 1e3).toFixed(3)} ms, ${
      (2 * bytes / t / 1e9).toFixed(0)
    } GB/s (read + write)`,
  );
  a.destroy();
  b2.destroy();
}

// 3. Read-back of 180 MB.
if (want("readback")) {
  const bytes = (small ? 64 : 11008) * 4096 * 4;
  const src = storageBuffer(gpu, bytes);
  for (const chunk of [bytes, 16 * 1024 * 1024, 64 * 1024 * 1024].map((c) => Math.min(c, bytes))) {
    const staging = device.createBuffer({
      size: Math.min(chunk, bytes),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const out = new Float32Array(bytes / 4);
    let tCopy = 0, tMap = 0, tRange = 0, tOut = 0;
    const t0 = performance.now();
    for (let off = 0; off < bytes; off += chunk) {
      const len = Math.min(chunk, bytes - off);
      let t = performance.now();
      const enc = device.createCommandEncoder();
      enc.copyBufferToBuffer(src, off, staging, 0, len);
      device.queue.submit([enc.finish()]);
      await device.queue.onSubmittedWorkDone();
      tCopy += ms(t);
      t = performance.now();
      await staging.mapAsync(GPUMapMode.READ, 0, len);
      tMap += ms(t);
      t = performance.now();
      const range = staging.getMappedRange(0, len);
      tRange += ms(t);
      t = performance.now();
      out.set(new Float32Array(range), off / 4);
      tOut += ms(t);
      staging.unmap();
    }
    console.log(
      `read-back ${(bytes / MB).toFixed(0)} MB in ${(chunk / MB).toFixed(0)} MB chunks: ${
        ms(t0).toFixed(1)
      } ms (${(bytes / ms(t0) / 1e3).toFixed(2)} GB/s): copy+wait ${tCopy.toFixed(1)}, mapAsync ${
        tMap.toFixed(1)
      }, getMappedRange ${tRange.toFixed(1)}, copy out ${tOut.toFixed(1)} ms`,
    );
    staging.destroy();
  }
  src.destroy();
}

// 4. Uploads of 485 MB.
if (want("upload")) {
  const n = small ? 1024 : 11008;
  const bytes = n * n * 4;
  const data = new Float32Array(n * n).fill(1.5);
  const dst = storageBuffer(gpu, bytes);
  let t = performance.now();
  device.queue.writeBuffer(dst, 0, data);
  await device.queue.onSubmittedWorkDone();
  console.log(`upload ${(bytes / MB).toFixed(0)} MB, one writeBuffer: ${ms(t).toFixed(1)} ms`);
  t = performance.now();
  const chunk = 16 * 1024 * 1024;
  for (let off = 0; off < bytes; off += chunk) {
    device.queue.writeBuffer(dst, off, data.buffer, off, Math.min(chunk, bytes - off));
  }
  await device.queue.onSubmittedWorkDone();
  console.log(`upload, 16 MiB writeBuffer chunks: ${ms(t).toFixed(1)} ms`);
  t = performance.now();
  const m = device.createBuffer({
    size: bytes,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
    mappedAtCreation: true,
  });
  new Float32Array(m.getMappedRange()).set(data);
  m.unmap();
  await device.queue.onSubmittedWorkDone();
  console.log(`upload, mappedAtCreation + set + unmap: ${ms(t).toFixed(1)} ms`);
  t = performance.now();
  const s = device.createBuffer({
    size: chunk,
    usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC,
  });
  for (let off = 0; off < bytes; off += chunk) {
    const len = Math.min(chunk, bytes - off);
    await s.mapAsync(GPUMapMode.WRITE, 0, len);
    new Float32Array(s.getMappedRange(0, len)).set(data.subarray(off / 4, (off + len) / 4));
    s.unmap();
    const enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(s, 0, dst, off, len);
    device.queue.submit([enc.finish()]);
  }
  await device.queue.onSubmittedWorkDone();
  console.log(`upload, MAP_WRITE staging 16 MiB chunks: ${ms(t).toFixed(1)} ms`);
  m.destroy();
  dst.destroy();
  s.destroy();
  // Host-side reference: one memcpy of the same bytes.
  const copy = new Float32Array(n * n);
  t = performance.now();
  copy.set(data);
  console.log(`host memcpy of the same bytes: ${ms(t).toFixed(1)} ms`);
}

// 7. What a map waits for: a long submission, then mapAsync on a small buffer it copies into.
if (want("map")) {
  // 32,768 workgroups of 64 threads (within one dimension's 65,535).
  const n = small ? 1 << 12 : 1 << 21;
  const a = storageBuffer(gpu, n * 4, "probe:map");
  const spin = pipeline(`@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  var v = a[g.x];
  for (var i = 0u; i < ${small ? 256 : 4096}u; i++) { v = fma(v, 1.0001, 0.5); }
  a[g.x] = v;
}`);
  const group = device.createBindGroup({
    layout: spin.getBindGroupLayout(0),
    entries: [{ binding: 0, resource: { buffer: a } }],
  });
  const read = device.createBuffer({
    size: 16,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  for (let rep = 0; rep < 3; rep++) {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(spin);
    pass.setBindGroup(0, group);
    for (let i = 0; i < 8; i++) pass.dispatchWorkgroups(n / 64);
    pass.end();
    enc.copyBufferToBuffer(a, 0, read, 0, 16);
    let t = performance.now();
    device.queue.submit([enc.finish()]);
    const submitMs = ms(t);
    t = performance.now();
    const mapped = read.mapAsync(GPUMapMode.READ);
    const callMs = ms(t);
    t = performance.now();
    await mapped;
    read.unmap();
    console.log(
      `map: submit ${submitMs.toFixed(2)} ms, the mapAsync call returned after ${
        callMs.toFixed(2)
      } ms, its promise ${ms(t).toFixed(2)} ms later`,
    );
  }
  a.destroy();
  read.destroy();
}
