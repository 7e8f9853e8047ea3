import assert from "node:assert/strict";
import { assertClose } from "../_helpers.ts";
import { parseMethodId } from "../../examples/demo/methods.ts";
import { loadModel } from "../../models/causal_lm.ts";
import { loadTokenizer } from "../../models/tokenizer.ts";
import { compressModel } from "../../pipeline/compress_model.ts";
import type { Recipe } from "../../pipeline/recipe.ts";
import { calibrationWindows, encodeDocs } from "../../examples/datasets.ts";
import { measureLayerErrors } from "../../cli/_layer_errors.ts";
import { compressRun, withBackend } from "../../cli/_compress_run.ts";

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

Deno.test("withBackend() gives every GPTQ stage the backend and says where SparseGPT does not get it", async () => {
  const recipe: Recipe = {
    stages: [{ kind: "gptq", bits: 4 }],
    overrides: [
      { match: "*.w2", stages: [{ kind: "rotate" }, { kind: "gptq", bits: 8 }] },
      { match: "output", stages: [] },
    ],
  };
  assert.deepEqual(withBackend(recipe, "cpu"), {
    stages: [{ kind: "gptq", bits: 4, backend: "cpu" }],
    overrides: [
      { match: "*.w2", stages: [{ kind: "rotate" }, { kind: "gptq", bits: 8, backend: "cpu" }] },
      { match: "output", stages: [] },
    ],
  });
  assert.deepEqual(recipe.stages, [{ kind: "gptq", bits: 4 }]);
  const { lm, windows } = await fixture();
  const sparse = await compressRun(lm, windows, parseMethodId("sparsegpt-50").recipe, {
    backend: "cpu",
  });
  assert.equal(sparse.notes.length, 1);
  assert.match(sparse.notes[0]!, /--backend cpu reaches GPTQ only/);
  assert.ok([...sparse.modules.values()].every((m) => m.density === 0.5));
});
