import assert from "node:assert/strict";
import { testGpu } from "../kernels/_gpu.ts";
import { loadModel } from "../../models/causal_lm.ts";
import { syntheticModel } from "./_synthetic_model.ts";
import { llamaCompressible } from "../../models/compressible.ts";
import { quarot } from "../../models/quarot.ts";
import { withKvCacheQuant } from "../../models/with_kv_cache_quant.ts";
import { LLAMA_LINEARS, type LlamaModel } from "../../models/model.ts";
import type { ActivationQuant } from "../../quantizers/activation_quant.ts";
import type { CompressibleModel } from "../../pipeline/model.ts";
import {
  calibrationMemory,
  llamaCalibrationRunner,
  openLlamaCalibrationRunner,
} from "../../models/calibration_gpu.ts";
import { llamaDims } from "../../models/model.ts";
import { compressModel } from "../../pipeline/compress_model.ts";
import { hessian } from "../../hessian/hessian.ts";
import type { Hessian } from "../../hessian/hessian.ts";
import { hostHessian, isDeviceHessian } from "../../hessian/device_hessian.ts";
import type { Tensor } from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";
import { uploadBuffer } from "../../kernels/backend.ts";
import { attachDeviceCopy, deviceCopyOf } from "../../kernels/device_copies.ts";
import { fixtureDir } from "./_hf_fixtures.ts";
import { isFilled } from "../../core/lazy_tensor.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import type { QuantizedWeight } from "../../quantizers/quantized_weight.ts";

function sequences(count: number, T: number, vocab: number, seed: number): number[][] {
  const rng = prng(seed);
  return Array.from({ length: count }, () => Array.from({ length: T }, () => rng.int(vocab)));
}

function relDiff(a: Hessian, b: Hessian): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.xtx.length; i++) {
    num += (a.xtx[i]! - b.xtx[i]!) ** 2;
    den += b.xtx[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

/** Host Hessians of every linear of block b through the block's forward (the CPU path). */
function hostHessians(
  lm: Pick<CompressibleModel, "blocks">,
  b: number,
  xs: Tensor<"f32">[],
  weights: Record<string, Tensor<"f32">>,
): Map<string, Hessian> {
  const out = new Map<string, Hessian>();
  const inputs = new Map<string, Tensor<"f32">[]>();
  for (const x of xs) {
    lm.blocks[b]!.forward(x, weights, {
      onInput: (name, input) => inputs.set(name, [...(inputs.get(name) ?? []), input]),
    });
  }
  for (const [name, list] of inputs) {
    const cols = list[0]!.shape[1]!;
    const data = new Float32Array(list.reduce((n, t) => n + t.data.length, 0));
    let o = 0;
    for (const t of list) {
      data.set(t.data, o);
      o += t.data.length;
    }
    out.set(name, hessian({ dtype: "f32", shape: [data.length / cols, cols], data }));
  }
  return out;
}

Deno.test("the GPU calibration runner's Hessians and propagation equal the host path's", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const name of ["qwen3", "qwen2", "llama3_rope"]) {
    const lm = await loadModel(fixtureDir(name));
    // Two lengths, and chunks of 40 tokens: several chunks of one or two sequences.
    const seqs = [...sequences(3, 20, 400, 1), ...sequences(2, 13, 400, 2)];
    // qwen2 recomputes the MLP in propagation; the others reuse the down pass's SwiGLU output.
    const runner = llamaCalibrationRunner(gpu, lm.model, seqs, {
      chunkTokens: 40,
      cacheMlp: name !== "qwen2",
    });
    try {
      let xs = seqs.map((s) => lm.embed(s));
      for (let b = 0; b < lm.blocks.length; b++) {
        const weights = { ...lm.blocks[b]!.linears };
        const host = hostHessians(lm, b, xs, weights);
        const names = ["wq", "wk", "wv", "wo", "w1", "w3", "w2"];
        const before = runner.memory.current;
        const dev = await runner.hessians(b, weights, names);
        assert.equal(dev.get("wq"), dev.get("wv"), "q, k, v share one Hessian");
        for (const n of names) {
          const h = dev.get(n)!;
          assert(isDeviceHessian(h), `${n}: the runner's Hessians stay on the device`);
          const onHost = await h.toHost();
          const d = relDiff(onHost, host.get(n)!);
          assert(d < 1e-5, `${name} block ${b} ${n}: relative difference ${d}`);
          assert.equal(h.count, 3 * 20 + 2 * 13);
          // The host diagonal is the device matrix's, and the matrix is symmetric.
          for (let i = 0; i < h.cols; i++) {
            assert.equal(h.diag[i], onHost.xtx[i * h.cols + i]);
            for (let j = 0; j < i; j++) {
              assert.equal(onHost.xtx[i * h.cols + j], onHost.xtx[j * h.cols + i]);
            }
          }
        }
        // Four distinct Hessians (q/k/v, o, gate/up, down), freed on release.
        const distinct = new Set([...dev.values()].filter(isDeviceHessian));
        assert.equal(distinct.size, 4);
        // (Later blocks were uploaded ahead, during the previous propagation.)
        if (b === 0) assert(runner.memory.current > before);
        const held = runner.memory.current;
        for (const h of distinct) h.release();
        const sizes = [...distinct].reduce((n, h) => n + h.cols * h.cols * 4, 0);
        assert.equal(held - runner.memory.current, sizes);
        assert([...distinct].every((h) => h.released));
        await runner.propagate(b, weights);
        xs = xs.map((x) => lm.blocks[b]!.forward(x, weights)!);
      }
      const head = await hostHessian(await runner.headHessian());
      const hostHead = hessian({
        dtype: "f32",
        shape: [xs.reduce((n, x) => n + x.shape[0]!, 0), lm.config.dim],
        data: Float32Array.from(xs.flatMap((x) => Array.from(lm.head!.input(x).data))),
      });
      assert(relDiff(head, hostHead) < 1e-5, `${name} head`);
      assert(runner.memory.peak > 0);
    } finally {
      runner.dispose();
    }
  }
});

Deno.test("with quantized activations, QuaRot's Hadamards and a 4-bit KV cache the GPU runner's Hessians and propagation equal the host path's", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const base = syntheticModel({ hiddenDim: 48 }, 41, 0.35);
  const rotated = quarot(base, { seed: 2, onlineHadamard: true, qkHadamard: true });
  const act = (spec: ActivationQuant): LlamaModel => {
    const actQuant = Object.fromEntries(LLAMA_LINEARS.map((n) => [n, spec]));
    return { ...rotated, layers: rotated.layers.map((l) => ({ ...l, actQuant })) };
  };
  const kv = { format: "int4", asymmetric: true, clipRatio: 0.95 } as const;
  const models: [string, LlamaModel][] = [
    ["quarot-w16a4-kv4", withKvCacheQuant(act({ format: "int4" }), kv)],
    ["quik-a4-c3", act({ format: "int4", outliers: { columns: [0, 5, 17], format: "int8" } })],
  ];
  const seqs = [...sequences(3, 12, 40, 3), ...sequences(2, 7, 40, 4)];
  for (const [name, model] of models) {
    const lm = llamaCompressible(model);
    const floatLm = llamaCompressible(rotated);
    const runner = llamaCalibrationRunner(gpu, model, seqs, { chunkTokens: 24 });
    try {
      let xs = seqs.map((s) => lm.embed(s));
      for (let b = 0; b < lm.blocks.length; b++) {
        const weights = { ...lm.blocks[b]!.linears };
        const host = hostHessians(lm, b, xs, weights);
        const names = ["wq", "wk", "wv", "wo", "w1", "w3", "w2"];
        const dev = await runner.hessians(b, weights, names);
        for (const n of names) {
          const d = relDiff(await hostHessian(dev.get(n)!), host.get(n)!);
          assert(d < 1e-4, `${name} block ${b} ${n}: relative difference ${d}`);
        }
        for (const h of new Set(dev.values())) if (isDeviceHessian(h)) h.release();
        await runner.propagate(b, weights);
        xs = xs.map((x) => lm.blocks[b]!.forward(x, weights)!);
      }
      const head = await hostHessian(await runner.headHessian());
      const rows = xs.reduce((n, x) => n + x.shape[0]!, 0);
      const hostHead = (m: typeof lm, x: typeof xs) =>
        hessian({
          dtype: "f32",
          shape: [rows, model.config.dim],
          data: Float32Array.from(x.flatMap((t) => Array.from(m.head!.input(t).data))),
        });
      const want = hostHead(lm, xs);
      assert(relDiff(head, want) < 1e-4, `${name} head: ${relDiff(head, want)}`);
      // the quantization is applied: the rotated float model's head Hessian is farther away
      let ys = seqs.map((s) => floatLm.embed(s));
      for (const block of floatLm.blocks) {
        ys = ys.map((y) => block.forward(y, { ...block.linears })!);
      }
      const float = hostHead(floatLm, ys);
      assert(relDiff(head, float) > 1e-3, `${name}: the quantization changed nothing`);
    } finally {
      runner.dispose();
    }
  }
});

Deno.test("compressModel with the GPU runner gives the CPU path's GPTQ codes and layer errors", async () => {
  const gpuDevice = await testGpu();
  if (!gpuDevice) return;
  const lm = await loadModel(fixtureDir("qwen3"));
  const seqs = sequences(16, 40, 400, 3);
  for (const bits of [4, 8]) {
    const recipe = { stages: [{ kind: "gptq", bits, groupSize: 32 } as const] };
    const cpu = await compressModel(lm, seqs, recipe, { backend: "cpu" });
    // The GPU runner with the CPU's float64 solves, and with the GPU's solves
    // (which read the runner's device Hessians in place).
    for (const solveBackend of ["cpu", "webgpu"] as const) {
      const gpu = await compressModel(lm, seqs, recipe, { backend: "webgpu", solveBackend });
      // On a hardware adapter the Hessians come from the tiled kernel (another
      // summation order): one H100 run agreed on 98.3% of block 0's 4-bit
      // codes, with the layer errors within the same bounds.
      const floor = gpuDevice.software ? (solveBackend === "cpu" ? 0.999 : 0.995) : 0.98;
      compare(cpu, gpu, bits, floor);
    }
  }
});

Deno.test("the runner writes replaced linears in place: copied from a device copy or uploaded, the same bits", async () => {
  const gpuDevice = await testGpu();
  if (!gpuDevice) return;
  const gpu = gpuDevice;
  const lm = await loadModel(fixtureDir("qwen3"));
  const seqs = sequences(3, 20, 400, 5);
  const base = { ...lm.blocks[0]!.linears };
  // New q and w1 weights (as a solver would return them).
  const scaled = (t: Tensor<"f32">) => ({ ...t, data: t.data.map((v) => v * 0.75) });
  const wq = scaled(base.wq!), w1 = scaled(base.w1!);
  const replaced = { ...base, wq, w1 };
  const run = async (onDevice: boolean) => {
    const runner = llamaCalibrationRunner(gpu, lm.model, seqs);
    const copies: GPUBuffer[] = [];
    try {
      const first = await runner.hessians(0, base, ["wq"]);
      // The runner registers its copies of the block's linears for the solvers.
      const view = deviceCopyOf(base.wk!.data, gpu);
      assert(view !== null && !view.owned);
      for (const h of new Set(first.values())) if (isDeviceHessian(h)) h.release();
      if (onDevice) {
        for (const t of [wq, w1]) {
          const b = uploadBuffer(gpu, t.data, "new weight");
          copies.push(b);
          attachDeviceCopy(t.data, { gpu, buffer: b, offset: 0, owned: true });
        }
      }
      const hs = await runner.hessians(0, replaced, ["wo", "w2"]);
      const out = await Promise.all(["wo", "w2"].map((n) => hostHessian(hs.get(n)!)));
      for (const h of new Set(hs.values())) if (isDeviceHessian(h)) h.release();
      // The owned copies were taken; views of the new weights replace them,
      // and the old weights' views are gone.
      assert.equal(deviceCopyOf(wq.data, gpu)?.owned, false);
      assert.equal(deviceCopyOf(base.wq!.data, gpu), null);
      assert.notEqual(deviceCopyOf(base.wk!.data, gpu), null);
      return { out, timings: runner.timings };
    } finally {
      runner.dispose();
      // dispose forgets the views.
      assert.equal(deviceCopyOf(base.wk!.data, gpu), null);
    }
  };
  const copied = await run(true), uploaded = await run(false);
  assert.equal(copied.timings.linearsCopied, 2);
  assert.equal(copied.timings.linearsUploaded, undefined);
  assert.equal(uploaded.timings.linearsUploaded, 2);
  for (let i = 0; i < 2; i++) assert.deepEqual(copied.out[i]!.xtx, uploaded.out[i]!.xtx);
  // Against the host path with the new weights.
  const xs = seqs.map((s) => lm.embed(s));
  const host = hostHessians(lm, 0, xs, replaced);
  assert(relDiff(copied.out[0]!, host.get("wo")!) < 1e-5);
  assert(relDiff(copied.out[1]!, host.get("w2")!) < 1e-5);
});

Deno.test("compressModel hands the GPU solves' weights to the runner on the device", async () => {
  const gpuDevice = await testGpu();
  if (!gpuDevice) return;
  const lm = await loadModel(fixtureDir("qwen3"));
  const seqs = sequences(4, 24, 400, 6);
  const recipe = { stages: [{ kind: "gptq", bits: 4, groupSize: 32 } as const] };
  const blocks = lm.blocks.length;
  const onGpu = await compressModel(lm, seqs, recipe, {
    backend: "webgpu",
    solveBackend: "webgpu",
  });
  // Every linear of every block is copied on the device (the q/k/v group at
  // the o pass, o at the gate/up pass, gate/up at the down pass, down at the
  // propagation); none is uploaded again.
  assert.equal(onGpu.device!.timings.linearsCopied, 7 * blocks);
  assert.equal(onGpu.device!.timings.linearsUploaded, undefined);
  // Every block after the first was uploaded during the previous propagation.
  assert.equal(onGpu.device!.timings.blocksPrefetched, blocks - 1);
  const onCpu = await compressModel(lm, seqs, recipe, { backend: "webgpu", solveBackend: "cpu" });
  assert.equal(onCpu.device!.timings.linearsUploaded, 7 * blocks);
  // Nothing is left registered, and no Ŵ was dequantized on the host: each
  // is filled when first read, with its grid's values.
  for (const m of onGpu.modules.values()) {
    assert.equal(deviceCopyOf(m.weight, gpuDevice), null, m.name);
    if (m.name === "output") continue;
    assert.equal(isFilled(m.weight), false, m.name);
    assert.deepEqual(m.weight.data, dequantize(m.quantized as QuantizedWeight).data, m.name);
  }
  // A checkpoint read from disk block by block is read ahead by a worker
  // thread (widened there), to the same bits as the model held in memory.
  const fromDisk = await loadModel(fixtureDir("qwen3"), { read: "disk" });
  const again = await compressModel(fromDisk, seqs, recipe, {
    backend: "webgpu",
    solveBackend: "webgpu",
  });
  assert.equal(again.device!.timings.blocksPrefetched, blocks - 1);
  for (const [name, m] of onGpu.modules) {
    assert.deepEqual(again.modules.get(name)!.quantized?.codes, m.quantized?.codes, name);
    assert.equal(again.modules.get(name)!.layerError, m.layerError, name);
  }
});

function compare(
  cpu: Awaited<ReturnType<typeof compressModel>>,
  gpu: Awaited<ReturnType<typeof compressModel>>,
  bits: number,
  minAgreement: number,
): void {
  {
    assert.equal(cpu.device, null);
    assert.notEqual(gpu.device, null);
    assert(gpu.phases.calibration > 0 && gpu.phases.compress > 0);
    // Codes agree where both paths see the same inputs (block 0, up to the
    // float32 accumulation of the GPU's Hessians); later blocks' inputs come
    // from compressed blocks, where a code that one rounding flips (GPTQ's
    // error feedback amplifies a 1e-7 change of H into a few flipped codes of
    // a layer) changes every later activation: there only the layer errors
    // are compared.
    let same = 0, total = 0, logRatio = 0;
    for (const [name, c] of cpu.modules) {
      const g = gpu.modules.get(name)!;
      const rel = Math.abs(g.layerError - c.layerError) / c.layerError;
      assert(rel < 0.05, `${bits} bits, ${name}: layer error ${g.layerError} vs ${c.layerError}`);
      logRatio += Math.log(g.layerError / c.layerError) / cpu.modules.size;
      // Codes: dequantized values also differ where a group's grid was fitted on updated weights.
      if (!name.startsWith("layers.0.")) continue;
      const cc = c.quantized!.codes as Uint8Array, gc = g.quantized!.codes as Uint8Array;
      cc.forEach((v, i) => {
        total++;
        if (v === gc[i]) same++;
      });
    }
    assert(
      same / total >= minAgreement,
      `${bits} bits: ${same} of ${total} codes of block 0 agree`,
    );
    assert(Math.abs(logRatio) < 0.005, `${bits} bits: geometric mean ratio ${Math.exp(logRatio)}`);
  }
}

Deno.test("the GPU calibration runner refuses bad input by name", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const lm = await loadModel(fixtureDir("llama"));
  assert.throws(() => llamaCalibrationRunner(gpu, lm.model, []), /without a non-empty sequence/);
  assert.throws(() => llamaCalibrationRunner(gpu, lm.model, [[1, 448]]), /Token 448 at position 1/);
  assert.throws(
    () => llamaCalibrationRunner(gpu, lm.model, [[1, 2]], { chunkTokens: 0 }),
    /'chunkTokens' must be a positive integer/,
  );
  const runner = llamaCalibrationRunner(gpu, lm.model, [[1, 2, 3]]);
  await assert.rejects(() => runner.hessians(9, lm.blocks[0]!.linears, ["wq"]), /block 9/);
  await assert.rejects(() => runner.hessians(0, lm.blocks[0]!.linears, ["wz"]), /'wz'/);
  runner.dispose();
  await assert.rejects(() => runner.propagate(0, lm.blocks[0]!.linears), /disposed/);
});

Deno.test("a calibration run that does not fit the GPU memory is refused before it starts", async () => {
  const lm = await loadModel(fixtureDir("qwen3"));
  const { dim, hiddenDim } = lm.config;
  const { qDim } = llamaDims(lm.config);
  const seqs = sequences(3, 20, 400, 4);
  const need = calibrationMemory(lm.config, seqs);
  assert.equal(need.tokens, 60);
  assert.equal(need.mlpCache, 60 * hiddenDim * 4);
  assert.equal(need.activations, 60 * (2 * dim + qDim) * 4 + need.mlpCache);
  assert.equal(need.total, need.activations + need.scratch + need.transient);
  // Without the cache, one chunk's SwiGLU scratch (20 tokens) instead of every token's.
  const lean = calibrationMemory(lm.config, seqs, { cacheMlp: false, chunkTokens: 20 });
  const cached = calibrationMemory(lm.config, seqs, { chunkTokens: 20 });
  assert.equal(lean.mlpCache, 0);
  assert.equal(cached.total - lean.total, 40 * hiddenDim * 4);
  const gpu = await testGpu();
  if (!gpu) return;
  await assert.rejects(
    () => openLlamaCalibrationRunner(gpu, lm.model, seqs, { memoryBudget: need.total - 1 }),
    /needs about .* GiB of GPU memory, over the budget .*--calib-samples or --calib-len.*cacheMlp: false/,
  );
  await assert.rejects(
    () =>
      compressModel(lm, seqs, { stages: [{ kind: "gptq", bits: 4 }] }, {
        backend: "webgpu",
        gpuMemoryBytes: 1024,
      }),
    /over the budget/,
  );
  const runner = await openLlamaCalibrationRunner(gpu, lm.model, seqs, {
    memoryBudget: need.total,
  });
  try {
    // Everything the run keeps is allocated up front.
    assert.equal(runner.memory.current >= need.activations, true);
    const h = await runner.hessians(0, lm.blocks[0]!.linears, ["w2"]);
    assert.equal(h.get("w2")!.count, 60);
  } finally {
    runner.dispose();
  }
});
