import assert from "node:assert/strict";
import { assertClose } from "../_helpers.ts";
import { parseMethodId } from "../../examples/demo/methods.ts";
import { loadModel } from "../../models/causal_lm.ts";
import { loadTokenizer } from "../../models/tokenizer.ts";
import { compressModel } from "../../pipeline/compress_model.ts";
import { calibrationWindows, encodeDocs } from "../../examples/datasets.ts";
import { measureLayerErrors } from "../../cli/_layer_errors.ts";
import { compressRun } from "../../cli/_compress_run.ts";
import type { CompressedLinear } from "../../pipeline/compress_linear.ts";
import { testGpu } from "../kernels/_gpu.ts";

const QWEN3 = new URL("../fixtures/hf/models/qwen3", import.meta.url).pathname;

async function fixture() {
  const lm = await loadModel(QWEN3);
  const tok = await loadTokenizer(QWEN3);
  const text = Array.from({ length: 30 }, (_, i) => `Story ${i}: the cat sat on the mat.`);
  return { lm, windows: calibrationWindows(encodeDocs(tok, text), 3, 24, 0) };
}

Deno.test("measured layer errors equal the ones GPTQ's pipeline computes from its own Hessians", async () => {
  const { lm, windows } = await fixture();
  const res = await compressModel(lm, windows, parseMethodId("gptq-w3-g32").recipe);
  const blanked = new Map(
    [...res.modules].map(([name, m]) => [name, { ...m, layerError: NaN }]),
  );
  const measured = measureLayerErrors(lm, windows, blanked);
  assert.deepEqual([...measured.keys()], [...res.modules.keys()]);
  const pipeline = [...res.modules.values()].map((m) => m.layerError);
  assert.ok(pipeline.every((e) => e > 0 && Number.isFinite(e)));
  assertClose([...measured.values()].map((m) => m.layerError), pipeline, { rtol: 1e-9 });
  // Nothing to measure: the map comes back as it was.
  assert.deepEqual(measureLayerErrors(lm, windows, res.modules), new Map(res.modules));
});

Deno.test("compressRun() measures the layer errors of data-free stages and resumes from whole blocks", async () => {
  const { lm, windows } = await fixture();
  const recipe = parseMethodId("rtn-w4-g32").recipe;
  const saved: number[] = [];
  const full = await compressRun(lm, windows, recipe, {
    backend: "cpu",
    onBlockDone: (b, modules) => void saved.push(b * 100 + modules.length),
  });
  assert.deepEqual(saved, [7, 107, 207]);
  assert.ok([...full.modules.values()].every((m) => m.layerError > 0 && m.layerError < 0.1));
  const firstBlock = new Map([...full.modules].slice(0, 7));
  const resumed = await compressRun(lm, windows, recipe, { completed: firstBlock });
  assert.equal(resumed.resumed, 7);
  assert.deepEqual(
    [...resumed.modules.values()].map((m) => m.layerError),
    [...full.modules.values()].map((m) => m.layerError),
  );
  assert.deepEqual(full.notes, []);
});

Deno.test("compressRun's backend reaches the GPTQ and SparseGPT solvers", async () => {
  const { lm, windows } = await fixture();
  const solvedOnGpu = (m: CompressedLinear) =>
    "gpuSeconds" in ((m.quantized as { stats?: object } | undefined)?.stats ?? {});
  const cpu = await compressRun(lm, windows, parseMethodId("gptq-w4-g32").recipe, {
    backend: "cpu",
  });
  assert.ok([...cpu.modules.values()].every((m) => m.stages.length === 0 || !solvedOnGpu(m)));
  if (await testGpu()) {
    const gpu = await compressRun(lm, windows, parseMethodId("gptq-w4-g32").recipe, {
      backend: "webgpu",
    });
    assert.ok([...gpu.modules.values()].every((m) => m.stages.length === 0 || solvedOnGpu(m)));
  }
  const sparse = await compressRun(lm, windows, parseMethodId("sparsegpt-50").recipe, {
    backend: "cpu",
  });
  assert.deepEqual(sparse.notes, []);
  assert.ok([...sparse.modules.values()].every((m) => m.density === 0.5));
});

Deno.test("compressRun() with keepModules false hands every block to onBlockDone and keeps none", async () => {
  const { lm, windows } = await fixture();
  const recipe = parseMethodId("gptq-w4-g32").recipe;
  const handed = new Map<string, CompressedLinear>();
  const run = await compressRun(lm, windows, recipe, {
    backend: "cpu",
    keepModules: false,
    onBlockDone: (_, modules) => void modules.forEach((m) => handed.set(m.name, m)),
  });
  assert.equal([...run.modules.keys()].filter((n) => n.startsWith("layers.")).length, 0);
  assert.equal(handed.size, 7 * lm.blocks.length);
  const kept = await compressRun(lm, windows, recipe, { backend: "cpu" });
  for (const [name, m] of handed) {
    assert.deepEqual(m.weight.data, kept.modules.get(name)!.weight.data, name);
  }
  assert.equal(run.bitsPerWeight, kept.bitsPerWeight);
});
