/**
 * How closely the GPU calibration runner follows the CPU path on a real
 * model: llama5M (from the data root), GPTQ 4-bit g128 with the solver on
 * the CPU in both runs (so only the calibration passes differ), 32 windows of
 * 256 TinyStories tokens; prints each module's fraction of equal codes and
 * both layer errors, then both perplexities on 8,192 held-out tokens.
 *
 *     deno run -A tests/bench/calibration_agreement.ts [--backend=webgpu]
 *
 * Uses the file system (data root).
 *
 * @module
 */

import { dataFile } from "../_helpers.ts";
import { loadModel } from "../../models/causal_lm.ts";
import { withCompressedWeights } from "../../models/compressible.ts";
import { perplexity } from "../../models/perplexity.ts";
import { loadTokenizer } from "../../models/tokenizer.ts";
import { compressModel } from "../../pipeline/compress_model.ts";
import type { Stage } from "../../pipeline/recipe.ts";

const modelPath = dataFile("llama5M/llama5M.bin"), tokPath = dataFile("stories260K/tok512.bin");
const textPath = dataFile("text/tinystories_val_sample.txt");
if (!modelPath || !tokPath || !textPath) {
  console.log("skipped: llama5M, tok512 or the TinyStories sample is not under the data root");
  Deno.exit(0);
}
const lm = await loadModel(modelPath);
const tok = await loadTokenizer(tokPath);
const ids = tok.encode((await Deno.readTextFile(textPath)).slice(0, 400000), { bos: true });
const calibration = Array.from({ length: 32 }, (_, i) => ids.slice(i * 256, (i + 1) * 256));
const heldOut = ids.slice(40000, 40000 + 8192);
// The solver on the CPU in both runs (the stage passes `backend` on to gptq).
const stage = { kind: "gptq", bits: 4, groupSize: 128, backend: "cpu" } as unknown as Stage;
const recipe = { stages: [stage], overrides: [{ match: "output", stages: [] }] };
const backend = Deno.args.find((a) => a.startsWith("--backend="))?.slice(10) ?? "webgpu";
const cpu = await compressModel(lm, calibration, recipe, { backend: "cpu" });
const gpu = await compressModel(lm, calibration, recipe, { backend: backend as "webgpu" });
let same = 0, total = 0;
for (const [name, c] of cpu.modules) {
  const g = gpu.modules.get(name)!;
  if (!c.quantized || !g.quantized) continue;
  const cc = c.quantized.codes as Uint8Array, gc = g.quantized.codes as Uint8Array;
  let s = 0;
  cc.forEach((v, i) => (s += v === gc[i] ? 1 : 0));
  same += s;
  total += cc.length;
  console.log(
    `${name.padEnd(14)} codes equal ${(s / cc.length).toFixed(5)}  layer error ` +
      `cpu ${c.layerError.toExponential(4)} gpu ${g.layerError.toExponential(4)}`,
  );
}
const pc = perplexity(withCompressedWeights(lm.model, cpu.modules), heldOut, { seqLen: 256 });
const pg = perplexity(withCompressedWeights(lm.model, gpu.modules), heldOut, { seqLen: 256 });
console.log(
  `all codes equal ${(same / total).toFixed(5)}; perplexity cpu ${pc.perplexity.toFixed(4)}, ` +
    `${gpu.device?.name ?? "host"} ${pg.perplexity.toFixed(4)} (${
      ((pg.perplexity / pc.perplexity - 1) * 100).toFixed(3)
    }%)`,
);
