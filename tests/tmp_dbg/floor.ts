// GPU floor per dependent dispatch, and host cost per dispatch, on this machine.
const adapter = await navigator.gpu.requestAdapter();
const device = await adapter!.requestDevice({ requiredFeatures: ["timestamp-query"] });
const code = (wg: number) => `@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@compute @workgroup_size(${wg}) fn main(@builtin(global_invocation_id) g: vec3u) { a[g.x] = a[g.x] * 0.5 + 1.0; }`;
const buf = device.createBuffer({ size: 4 << 20, usage: GPUBufferUsage.STORAGE });
const buf2 = device.createBuffer({ size: 4 << 20, usage: GPUBufferUsage.STORAGE });
const qs = device.createQuerySet({ type: "timestamp", count: 2 });
const res = device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
const rd = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
async function time(n: number, wgs: number, wg: number, alt: boolean): Promise<number> {
  const p = device.createComputePipeline({ layout: "auto", compute: { module: device.createShaderModule({ code: code(wg) }), entryPoint: "main" } });
  const bgs = [buf, buf2].map((b) => device.createBindGroup({ layout: p.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: b } }] }));
  let best = Infinity;
  for (let r = 0; r < 20; r++) {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass({ timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } });
    pass.setPipeline(p);
    for (let i = 0; i < n; i++) { pass.setBindGroup(0, bgs[alt ? i % 2 : 0]); pass.dispatchWorkgroups(wgs); }
    pass.end();
    enc.resolveQuerySet(qs, 0, 2, res, 0);
    enc.copyBufferToBuffer(res, 0, rd, 0, 16);
    device.queue.submit([enc.finish()]);
    await rd.mapAsync(GPUMapMode.READ);
    const t = new BigUint64Array(rd.getMappedRange().slice(0));
    rd.unmap();
    best = Math.min(best, Number(t[1] - t[0]) / 1e3);
  }
  return best;
}
for (const [wgs, wg] of [[1, 64], [132, 256], [512, 256], [2048, 256]]) {
  for (const alt of [false, true]) {
    const t1 = await time(1, wgs, wg, alt), t85 = await time(85, wgs, wg, alt), t340 = await time(340, wgs, wg, alt);
    console.log(`workgroups ${wgs}x${wg} ${alt ? "alternating buffers" : "same buffer"}: 1 dispatch ${t1.toFixed(2)} us, 85: ${t85.toFixed(1)} us, per dispatch ${((t340 - t85) / 255).toFixed(2)} us`);
  }
}
