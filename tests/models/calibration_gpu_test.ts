import assert from "node:assert/strict";
import { testGpu } from "../kernels/_gpu.ts";
import { loadModel } from "../../models/causal_lm.ts";
import { llamaCalibrationRunner } from "../../models/calibration_gpu.ts";
import { compressModel } from "../../pipeline/compress_model.ts";
import { hessian } from "../../hessian/hessian.ts";
import type { Hessian } from "../../hessian/hessian.ts";
import type { Tensor } from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";
import { fixtureDir } from "./_hf_fixtures.ts";

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
  lm: Awaited<ReturnType<typeof loadModel>>,
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
    const runner = llamaCalibrationRunner(gpu, lm.model, seqs, { chunkTokens: 40 });
    try {
      let xs = seqs.map((s) => lm.embed(s));
      for (let b = 0; b < lm.blocks.length; b++) {
        const weights = { ...lm.blocks[b]!.linears };
        const host = hostHessians(lm, b, xs, weights);
        const names = ["wq", "wk", "wv", "wo", "w1", "w3", "w2"];
        const dev = await runner.hessians(b, weights, names);
        assert.equal(dev.get("wq"), dev.get("wv"), "q, k, v share one Hessian");
        for (const n of names) {
          const d = relDiff(dev.get(n)!, host.get(n)!);
          assert(d < 1e-5, `${name} block ${b} ${n}: relative difference ${d}`);
          assert.equal(dev.get(n)!.count, 3 * 20 + 2 * 13);
        }
        await runner.propagate(b, weights);
        xs = xs.map((x) => lm.blocks[b]!.forward(x, weights)!);
      }
      const head = await runner.headHessian();
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

Deno.test("compressModel with the GPU runner gives the CPU path's GPTQ codes and layer errors", async () => {
  if (!(await testGpu())) return;
  const lm = await loadModel(fixtureDir("qwen3"));
  const seqs = sequences(16, 40, 400, 3);
  for (const bits of [4, 8]) {
    const recipe = { stages: [{ kind: "gptq", bits, groupSize: 32 } as const] };
    const cpu = await compressModel(lm, seqs, recipe, { backend: "cpu" });
    const gpu = await compressModel(lm, seqs, recipe, { backend: "webgpu" });
    assert.equal(cpu.device, null);
    assert.notEqual(gpu.device, null);
    assert(gpu.phases.calibration > 0 && gpu.phases.compress > 0);
    let same = 0, total = 0, logRatio = 0;
    for (const [name, c] of cpu.modules) {
      const g = gpu.modules.get(name)!;
      const rel = Math.abs(g.layerError - c.layerError) / c.layerError;
      assert(rel < 0.05, `${bits} bits, ${name}: layer error ${g.layerError} vs ${c.layerError}`);
      logRatio += Math.log(g.layerError / c.layerError) / cpu.modules.size;
      // Codes: dequantized values also differ where a group's grid was fitted on updated weights.
      const cc = c.quantized!.codes as Uint8Array, gc = g.quantized!.codes as Uint8Array;
      cc.forEach((v, i) => {
        total++;
        if (v === gc[i]) same++;
      });
    }
    assert(same / total >= 0.999, `${bits} bits: ${same} of ${total} codes agree`);
    assert(Math.abs(logRatio) < 0.005, `${bits} bits: geometric mean ratio ${Math.exp(logRatio)}`);
  }
});

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
