const adapter = await navigator.gpu.requestAdapter();
const device = await adapter!.requestDevice();
const code = `@group(0) @binding(0) var<storage, read_write> a: array<f32>;
struct U { n: u32 }
@group(0) @binding(1) var<uniform> u: U;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) { if (g.x < u.n) { a[g.x] += 1.0; } }`;
const mod = device.createShaderModule({ code });
const bglDyn = device.createBindGroupLayout({ entries: [
  { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: "storage" } },
  { binding: 1, visibility: GPUShaderStage.COMPUTE, buffer: { type: "uniform", hasDynamicOffset: true } },
]});
const bgl = device.createBindGroupLayout({ entries: [
  { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: "storage" } },
  { binding: 1, visibility: GPUShaderStage.COMPUTE, buffer: { type: "uniform" } },
]});
const pipes = Array.from({ length: 10 }, () => device.createComputePipeline({ layout: device.createPipelineLayout({ bindGroupLayouts: [bglDyn] }), compute: { module: mod, entryPoint: "main" } }));
const pipesS = Array.from({ length: 10 }, () => device.createComputePipeline({ layout: device.createPipelineLayout({ bindGroupLayouts: [bgl] }), compute: { module: mod, entryPoint: "main" } }));
const buf = device.createBuffer({ size: 4096, usage: GPUBufferUsage.STORAGE });
const ub = device.createBuffer({ size: 4096, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
device.queue.writeBuffer(ub, 0, new Uint32Array([1]));
const bgD = device.createBindGroup({ layout: bglDyn, entries: [{ binding: 0, resource: { buffer: buf } }, { binding: 1, resource: { buffer: ub, size: 16 } }] });
const bgS = device.createBindGroup({ layout: bgl, entries: [{ binding: 0, resource: { buffer: buf } }, { binding: 1, resource: { buffer: ub, size: 16 } }] });
const N = 85, REP = 400;
function run(label: string, body: (p: GPUComputePassEncoder, i: number) => void, submit = true) {
  for (let w = 0; w < 2; w++) {
    const t = performance.now();
    for (let r = 0; r < REP; r++) {
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass();
      for (let i = 0; i < N; i++) body(pass, i);
      pass.end();
      const cb = enc.finish();
      if (submit) device.queue.submit([cb]);
    }
    const dt = (performance.now() - t) / REP;
    if (w === 1) console.log(label, (dt * 1000).toFixed(1), "us/step", (dt * 1000 / N).toFixed(2), "us/dispatch");
  }
}
const offs = [0], offsU = new Uint32Array([0]);
run("dyn offsets array", (p, i) => { p.setPipeline(pipes[i % 10]); p.setBindGroup(0, bgD, offs); p.dispatchWorkgroups(1); });
run("dyn offsets u32", (p, i) => { p.setPipeline(pipes[i % 10]); p.setBindGroup(0, bgD, offsU, 0, 1); p.dispatchWorkgroups(1); });
run("static bg", (p, i) => { p.setPipeline(pipesS[i % 10]); p.setBindGroup(0, bgS); p.dispatchWorkgroups(1); });
run("static bg []", (p, i) => { p.setPipeline(pipesS[i % 10]); p.setBindGroup(0, bgS, []); p.dispatchWorkgroups(1); });
run("static no submit", (p, i) => { p.setPipeline(pipesS[i % 10]); p.setBindGroup(0, bgS); p.dispatchWorkgroups(1); }, false);
run("dispatch only (same pipe/bg)", (p, i) => { if (i === 0) { p.setPipeline(pipesS[0]); p.setBindGroup(0, bgS); } p.dispatchWorkgroups(1); }, false);
run("setPipeline only", (p, i) => { p.setPipeline(pipesS[i % 10]); }, false);
run("setBindGroup only", (p, i) => { p.setBindGroup(0, bgS); }, false);
run("empty", (p, i) => {}, false);
await device.queue.onSubmittedWorkDone();
