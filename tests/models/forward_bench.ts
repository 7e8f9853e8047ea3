/**
 * CPU forward-pass throughput of the Llama code on the real models (a window
 * of 256 tokens), and the pipeline's GPTQ compression of stories260K.
 * Timings are noisy on a shared machine.
 */
import { dataFile } from "../_helpers.ts";
import { loadLlama2c } from "../../models/llama2c.ts";
import { causalAttention, linearForward, llamaForward } from "../../models/forward.ts";
import { llamaCompressible } from "../../models/compressible.ts";
import { compressModel } from "../../pipeline/compress_model.ts";
import { tensor } from "../../core/tensor.ts";

const stories = dataFile("stories260K/stories260K.bin");
const llama5m = dataFile("llama5M/llama5M.bin");
const window = Array.from({ length: 256 }, (_, i) => (i * 37 + 1) % 512);

if (stories) {
  const model = await loadLlama2c(stories);
  Deno.bench("stories260K forward, 256 tokens", { group: "forward" }, () => {
    llamaForward(model, window);
  });
  const x = Float32Array.from({ length: 256 * 64 }, (_, i) => Math.sin(i));
  Deno.bench("stories260K w1 linear [256, 64] · [172, 64]ᵀ", { group: "parts" }, () => {
    linearForward(x, 256, model.layers[0]!.w1);
  });
  const kv = Float32Array.from({ length: 256 * 32 }, (_, i) => Math.cos(i));
  Deno.bench("stories260K attention, 256 tokens, 8 heads / 4 kv heads", { group: "parts" }, () => {
    causalAttention(x, kv, kv, 256, model.config);
  });
  const calib = Array.from({ length: 8 }, (_, s) => window.map((t) => (t + s * 11) % 512));
  Deno.bench("stories260K GPTQ 4-bit through the pipeline, 8×256 calibration tokens", {
    group: "pipeline",
    n: 3,
  }, async () => {
    await compressModel(llamaCompressible(model), calib, {
      stages: [{ kind: "gptq", bits: 4 }],
      overrides: [{ match: "output", stages: [] }],
    });
  });
  Deno.bench("stories260K RTN 4-bit through the pipeline (no calibration pass)", {
    group: "pipeline",
    baseline: true,
  }, async () => {
    await compressModel(llamaCompressible(model), calib, { stages: [{ kind: "rtn", bits: 4 }] });
  });
}
if (llama5m) {
  const model = await loadLlama2c(llama5m);
  Deno.bench("llama5M forward, 256 tokens", { group: "forward", n: 3 }, () => {
    llamaForward(model, window);
  });
}
// Keeps the module a bench file even without data.
Deno.bench("tensor() of 1k floats", { group: "noop" }, () => {
  tensor("f32", [1024]);
});
