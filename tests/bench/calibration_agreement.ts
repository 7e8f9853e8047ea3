/**
 * How closely the GPU calibration runner follows the CPU path on a real
 * model: llama5M (from the data root), GPTQ 4-bit g128 with the solver on
 * the CPU in both runs (so only the calibration passes differ), 32 windows of
 * 256 TinyStories tokens; prints each module's fraction of equal codes and
 * both layer errors, then both perplexities on 8,192 held-out tokens.
 *
 *     deno run -A tests/bench/calibration_agreement.ts [--backend=webgpu] [--against=ulp]
 *
 * `--against=ulp` measures the noise floor instead: the CPU path against
 * itself on the same model with one entry in eight of the token embedding
 * moved by one float32 ulp (seeded), a perturbation of the inputs of the size
 * two float32 summation orders give (GPTQ's error feedback carries a code that
 * one rounding flips into the rest of its row, and the next groups' inputs).
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
import { prng } from "../../core/prng.ts";

/** The float32 next to `v` in direction `dir` (±1). */
function nextFloat32(v: number, dir: 1 | -1): number {
  const f = new Float32Array([v]), bits = new Int32Array(f.buffer);
  if (v === 0) return dir * 2 ** -149;
  bits[0]! += (v > 0) === (dir > 0) ? 1 : -1;
  return f[0]!;
}

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
const against = Deno.args.find((a) => a.startsWith("--against="))?.slice(10) ?? "gpu";
if (against !== "gpu" && against !== "ulp") throw new RangeError(`--against must be gpu or ulp`);
const cpu = await compressModel(lm, calibration, recipe, { backend: "cpu" });
let gpu;
if (against === "ulp") {
  // Another copy of the model, its embedding nudged by one ulp in one entry of eight.
  const nudged = await loadModel(modelPath);
  const e = nudged.model.tokenEmbedding.data as Float32Array, rng = prng(7);
  for (let i = 0; i < e.length; i++) {
    if (rng.int(8) === 0) e[i] = nextFloat32(e[i]!, rng.int(2) === 0 ? 1 : -1);
  }
  gpu = await compressModel(nudged, calibration, recipe, { backend: "cpu" });
} else gpu = await compressModel(lm, calibration, recipe, { backend: backend as "webgpu" });
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
    `${against === "ulp" ? "cpu, embedding nudged" : gpu.device?.name ?? "host"} ${
      pg.perplexity.toFixed(4)
    } (${((pg.perplexity / pc.perplexity - 1) * 100).toFixed(3)}%)`,
);
