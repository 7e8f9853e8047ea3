import assert from "node:assert/strict";
import { assertClose } from "../_helpers.ts";
import { testGpu } from "../kernels/_gpu.ts";
import { type CausalLM, loadModel } from "../../models/causal_lm.ts";
import { llamaSession, type SessionLinears } from "../../models/forward_gpu.ts";
import { writeCheckpoint } from "../../models/formats/write_checkpoint.ts";
import { LLAMA_LINEARS, llamaLinearShapes } from "../../models/model.ts";
import { generate } from "../../models/generate.ts";
import { llamaForward } from "../../models/forward.ts";
import { magnitudePrune } from "../../pruners/magnitude.ts";
import { rtn } from "../../quantizers/rtn.ts";
import { fixtureDir } from "./_hf_fixtures.ts";
import { f16Module, quantizedModules, type TestGrid, type TestModule } from "./formats/_grids.ts";

// The software adapter is slow: a few folders of the 3-block fixtures, short sequences.
const IDS = [1, 17, 200, 33, 4, 90, 91, 5, 400, 12, 7, 7, 300, 2];
const STREAM = Array.from({ length: 200 }, (_, i) => (i * 37 + (i >> 3)) % 448);
/** Float32 logits through qmatmul against the dense GEMM and the CPU: different summation orders. */
const LOGITS = { atol: 1e-4, rtol: 1e-4 };

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "llmc-packed-gpu-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The block linears a WebGPU session of the model holds. */
async function sessionLinears(lm: CausalLM): Promise<SessionLinears> {
  const session = await llamaSession(lm.model, { backend: "webgpu" });
  try {
    return session.linears;
  } finally {
    session.dispose();
  }
}

/**
 * Writes `modules` as a dense folder and as `format`, loads both, and checks
 * the packed folder on WebGPU against the packed folder on the CPU and the
 * dense folder on both; returns the packed folder and the dense one.
 */
async function checkFolder(
  tmp: string,
  label: string,
  lm: CausalLM,
  modules: Map<string, TestModule | { weight: TestModule["weight"]; mask: Uint8Array }>,
  options: Parameters<typeof writeCheckpoint>[3],
): Promise<{ packed: CausalLM; dense: CausalLM }> {
  await writeCheckpoint(lm.model, modules, `${tmp}/${label}-dense`, { format: "dense" });
  await writeCheckpoint(lm.model, modules, `${tmp}/${label}`, options);
  const [dense, packed] = [
    await loadModel(`${tmp}/${label}-dense`),
    await loadModel(`${tmp}/${label}`),
  ];
  const cpu = await packed.logits(IDS, { backend: "cpu" });
  assert.deepEqual(cpu, await dense.logits(IDS, { backend: "cpu" }), label);
  const gpu = await packed.logits(IDS, { backend: "webgpu" });
  assertClose(gpu, cpu, { ...LOGITS, message: `${label}: WebGPU against the CPU` });
  assertClose(gpu, await dense.logits(IDS, { backend: "webgpu" }), {
    ...LOGITS,
    message: `${label}: WebGPU against the dense folder's`,
  });
  // Perplexity batches several windows into one pass (the last one ragged).
  const options_ = { seqLen: 48, windowsPerPass: 3 };
  const ppl = await packed.perplexity(STREAM, { ...options_, backend: "webgpu" });
  const ref = await dense.perplexity(STREAM, { ...options_, backend: "cpu" });
  assert.equal(ppl.tokens, ref.tokens);
  const rel = Math.abs(ppl.perplexity / ref.perplexity - 1);
  assert.ok(rel < 1e-4, `${label}: perplexity ${ppl.perplexity} against ${ref.perplexity}`);
  return { packed, dense };
}

const CASES: [string, string, TestGrid, Parameters<typeof writeCheckpoint>[3]][] = [
  // fixture, label, grid, format
  ["llama", "gptq", { bits: 4, groupSize: 32, symmetric: false, actOrder: true }, {
    format: "gptq",
  }],
  ["qwen2", "gptq_v2", { bits: 3, groupSize: 16, symmetric: false, actOrder: false }, {
    format: "gptq",
    checkpointFormat: "gptq_v2",
  }],
  ["qwen3", "ct", { bits: 2, groupSize: 32, symmetric: true, actOrder: true }, {
    format: "compressed-tensors",
  }],
  ["llama3_rope", "ct8", { bits: 8, groupSize: -1, symmetric: true, actOrder: false }, {
    format: "compressed-tensors",
  }],
];

Deno.test("GPTQ v1, v2 and compressed-tensors folders run packed through qmatmul on WebGPU with the CPU's logits and the dense folder's perplexity", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  await withTemp(async (tmp) => {
    for (const [fixture, label, grid, options] of CASES) {
      const lm = await loadModel(fixtureDir(fixture));
      const modules = await quantizedModules(lm.model, () => grid);
      const { packed, dense } = await checkFolder(tmp, `${fixture}-${label}`, lm, modules, options);
      // Every block linear is held packed, in a fraction of the dense session's bytes.
      const p = await sessionLinears(packed), d = await sessionLinears(dense);
      const all = 7 * lm.config.nLayers;
      assert.deepEqual([p.packed, p.dense, d.packed, d.dense], [all, 0, 0, all], label);
      const params = Object.values(llamaLinearShapes(lm.config)).reduce(
        (n, [r, c]) => n + r * c,
        0,
      );
      assert.equal(d.bytes, 4 * params * lm.config.nLayers, label);
      assert.ok(p.bytes < d.bytes / 3, `${label}: ${p.bytes} packed bytes, ${d.bytes} dense`);
    }
  });
});

Deno.test("a folder mixing grids, widths qmatmul lacks, pruned, dense linears and a dense block runs each part on its own path on WebGPU", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  await withTemp(async (tmp) => {
    const lm = await loadModel(fixtureDir("llama"));
    const grid = { bits: 4, groupSize: 32, symmetric: false, actOrder: false };
    const modules: Map<string, TestModule | { weight: TestModule["weight"]; mask: Uint8Array }> =
      await quantizedModules(lm.model, () => grid);
    const layer = (l: number) => lm.model.layers[l]!;
    for (const l of [0, 2]) {
      // v on another grid: q/k/v run part by part.
      modules.set(
        `layers.${l}.wv`,
        f16Module(await rtn(layer(l).wv, { bits: 8, symmetric: true })),
      );
    }
    // Block 1 stays dense: it runs on the dense path.
    for (const key of ["wq", "wk", "wv", "wo", "w1", "w3", "w2"]) modules.delete(`layers.1.${key}`);
    // Pruned (sparse-bitmask, widened), 5 bits (no qmatmul width: widened) and dense linears.
    const pruned = await magnitudePrune(layer(0).w3, {
      structure: { kind: "unstructured", sparsity: 0.5 },
    });
    modules.set("layers.0.w3", { weight: pruned.weight, mask: pruned.mask.data });
    modules.set("layers.2.wo", f16Module(await rtn(layer(2).wo, { bits: 5, groupSize: 32 })));
    modules.delete("layers.2.w2");
    const { packed, dense } = await checkFolder(tmp, "mixed", lm, modules, {
      format: "compressed-tensors",
    });
    const p = await sessionLinears(packed), d = await sessionLinears(dense);
    // Block 0: all but w3; block 1: none; block 2: q, k, v, gate, up.
    assert.deepEqual([p.packed, p.dense], [11, 10]);
    assert.ok(p.bytes < d.bytes, `${p.bytes} packed bytes, ${d.bytes} dense`);
  });
});

Deno.test("generation from a GPTQ folder runs its stored linears packed, never widened, with the CPU's tokens", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  await withTemp(async (tmp) => {
    const lm = await loadModel(fixtureDir("qwen3"));
    const grid: TestGrid = { bits: 4, groupSize: 32, symmetric: false, actOrder: true };
    await writeCheckpoint(lm.model, await quantizedModules(lm.model, () => grid), `${tmp}/q`, {
      format: "gptq",
    });
    const packed = await loadModel(`${tmp}/q`);
    // Reading a block linear of this model (widening it) throws.
    const guarded = {
      ...packed.model,
      layers: packed.model.layers.map((layer) =>
        new Proxy(layer, {
          get(target, key, receiver) {
            if ((LLAMA_LINEARS as readonly PropertyKey[]).includes(key)) {
              throw new Error(`widened ${String(key)}`);
            }
            return Reflect.get(target, key, receiver);
          },
        })
      ),
    };
    const prompt = [1, 17, 200, 33];
    const onGpu = await generate(guarded, prompt, { maxNewTokens: 6, backend: "webgpu" });
    const onCpu = await generate(packed.model, prompt, { maxNewTokens: 6, backend: "cpu" });
    assert.deepEqual(onGpu.tokens, onCpu.tokens);
    // The dense path would have read them.
    await assert.rejects(
      () => generate(guarded, prompt, { maxNewTokens: 1, backend: "webgpu", linears: [] }),
      /widened/,
    );
  });
});

Deno.test("a GPTQ folder's packed linears multiply quantized activations on WebGPU as the CPU does", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  await withTemp(async (tmp) => {
    const lm = await loadModel(fixtureDir("llama"));
    const grid = { bits: 4, groupSize: 32, symmetric: false, actOrder: true };
    await writeCheckpoint(lm.model, await quantizedModules(lm.model, () => grid), `${tmp}/q`, {
      format: "gptq",
    });
    const packed = (await loadModel(`${tmp}/q`)).model;
    for (const spec of [{ format: "int8" }, { format: "nvfp4" }] as const) {
      const actQuant = Object.fromEntries(LLAMA_LINEARS.map((n) => [n, spec]));
      // Copy the lazy layers with their getters and stored linears (a spread would widen them).
      const layers = packed.layers.map((l) =>
        Object.defineProperties({ actQuant }, Object.getOwnPropertyDescriptors(l)) as typeof l
      );
      const model = { ...packed, layers };
      const cpuFloat = llamaForward(packed, IDS);
      const session = await llamaSession(model, { backend: "webgpu" });
      try {
        assert.equal(session.linears.packed, 7 * model.config.nLayers);
        const got = await session.forward(IDS);
        assertClose(got, llamaForward(model, IDS), { ...LOGITS, message: spec.format });
        assert.ok(got.some((v, i) => Math.abs(v - cpuFloat[i]!) > 1e-3), spec.format);
      } finally {
        session.dispose();
      }
    }
  });
});
