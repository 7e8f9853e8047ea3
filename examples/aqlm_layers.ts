/**
 * AQLM against GPTQ on the real linear layers of llama5M (or stories260K):
 * captures each layer's inputs on held-out text, builds its Hessian, and
 * prints the relative output error ‖(W − Ŵ)X‖²/‖WX‖² of AQLM at 2 bits per
 * weight (codes) and of GPTQ at 2 and 3 bits, with bits per weight counted
 * with codebooks, scales and zero points. Uses the `Deno` namespace.
 *
 *   deno run -A examples/aqlm_layers.ts [--model llama5M|stories260K] [--blocks 0,5]
 *     [--linears w1,w2] [--tokens 4096] [--iterations 3]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { dataFile, quietGpuProbe } from "./data.ts";

import {
  captureLinearInputs,
  type LlamaLinear,
  loadLlama2c,
  loadLlama2cTokenizer,
} from "../models/mod.ts";
import { hessian } from "../hessian/hessian.ts";
import { layerError } from "../hessian/layer_error.ts";
import { gptq } from "../quantizers/gptq.ts";
import { dequantize } from "../quantizers/dequantize.ts";
import { aqlm, dequantizeAqlm } from "../quantizers/aqlm.ts";
import { tensor } from "../core/tensor.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: "llama5M" },
    blocks: { type: "string", default: "0,5" },
    linears: { type: "string", default: "w1,w2" },
    tokens: { type: "string", default: "4096" },
    iterations: { type: "string", default: "3" },
  },
});
quietGpuProbe();
const modelName = values.model;
const modelPath = dataFile(`${modelName}/${modelName}.bin`);
const tokPath = dataFile("stories260K/tok512.bin");
const textPath = dataFile("text/tinystories_val_sample.txt");
if (!modelPath || !tokPath || !textPath) {
  console.error("skipped: the shared data folder is absent (set LLMC_DATA)");
  Deno.exit(0);
}
const model = await loadLlama2c(modelPath);
const tok = await loadLlama2cTokenizer(tokPath, { vocabSize: model.config.vocabSize });
// Held-out text for llama5M: the last 40% of the blank-line-separated TinyStories blocks.
const blocks = (await Deno.readTextFile(textPath)).split(/\n\s*\n/).filter((b) => b.trim());
const heldOut = blocks.slice(Math.floor(blocks.length * 0.6));
const seqLen = Math.min(256, model.config.seqLen);
const wanted = Number(values.tokens);
const sequences: number[][] = [];
let ids: number[] = [];
for (const b of heldOut) {
  ids = ids.concat(tok.encode(b, { bos: true }));
  while (ids.length >= seqLen && sequences.length * seqLen < wanted) {
    sequences.push(ids.slice(0, seqLen));
    ids = ids.slice(seqLen);
  }
  if (sequences.length * seqLen >= wanted) break;
}
const layerIds = values.blocks.split(",").map(Number);
const linears = values.linears.split(",") as LlamaLinear[];
const captured = captureLinearInputs(model, sequences, { layers: layerIds, linears });
const iterations = Number(values.iterations);

console.log(
  `${modelName}, ${
    sequences.length * seqLen
  } held-out tokens; relative output error ‖(W−Ŵ)X‖²/‖WX‖² (bits/weight incl. overhead)`,
);
console.log(
  "layer        shape      GPTQ 2b g128     GPTQ 3b g128     AQLM 2x8g8       AQLM 1x16g8",
);
for (const l of layerIds) {
  for (const name of linears) {
    const w = model.layers[l]![name];
    const [rows, cols] = w.shape as [number, number];
    const h = hessian(captured.get(l)![name]!);
    const cells: string[] = [];
    for (const bits of [2, 3]) {
      const q = await gptq(w, h, { bits, groupSize: 128 });
      const bpw = bits + (2 * 16) / 128; // f16 scale and zero per group of 128
      cells.push(`${layerError(w, dequantize(q), h).toExponential(2)} (${bpw.toFixed(2)})`);
    }
    for (const [codebooks, codebookBits] of [[2, 8], [1, 16]] as const) {
      if (codebookBits === 16 && rows * cols < 1 << 19) {
        cells.push("   (too small)  ");
        continue;
      }
      const q = await aqlm(w, h, { codebooks, codebookBits, groupSize: 8, iterations });
      const err = layerError(w, tensor("f32", [rows, cols], dequantizeAqlm(q)), h);
      cells.push(`${err.toExponential(2)} (${q.bitsPerWeight.total.toFixed(2)})`);
    }
    console.log(
      `${l}.${name}`.padEnd(12),
      `${rows}x${cols}`.padEnd(10),
      cells.map((c) => c.padEnd(16)).join(" "),
    );
  }
}
