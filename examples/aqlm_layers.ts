/**
 * AQLM against GPTQ on the real linear layers of llama5M (or stories260K):
 * captures each layer's inputs on held-out text, builds its Hessian, and
 * prints the relative output error ‖(W − Ŵ)X‖²/‖WX‖² of AQLM at 2 bits per
 * weight (codes) and of GPTQ at 2 and 3 bits, with bits per weight counted
 * with codebooks, scales and zero points. Uses the `Deno` namespace.
 *
 *   deno run -A examples/aqlm_layers.ts [--model llama5M|stories260K] [--blocks 0,5]
 *     [--linears w1,w2] [--tokens 4096] [--iterations N] [--seed 0]
 *
 * Against the reference implementation (github.com/Vahe1994/AQLM), in three steps:
 *
 *   deno run -A examples/aqlm_layers.ts --export DIR [--blocks 0,5] [--linears wk,wo,w1,w2]
 *   /usr/bin/python3 tests/fixtures/aqlm_reference.py REFERENCE_CHECKOUT DIR
 *   deno run -A examples/aqlm_layers.ts --reference DIR
 *
 * `--export` writes each layer's weight and Hessian to DIR/<block>.<linear>.safetensors
 * (`weight` f32, `xtx` f64); the Python driver writes the reference's
 * dequantized weight and wall time beside them; `--reference` runs `aqlm()` at
 * its defaults (2×8 bits, groups of 8, beam 4, relative tolerance 0.01) on the
 * same files and prints both errors, computed by `layerError`, and both times.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { dataFile, quietGpuProbe } from "./data.ts";
import { readSafetensors, writeSafetensors } from "../core/safetensors_file.ts";
import type { Hessian } from "../hessian/hessian.ts";

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
    iterations: { type: "string" },
    seed: { type: "string", default: "0" },
    export: { type: "string" },
    reference: { type: "string" },
  },
});
quietGpuProbe();
const seed = Number(values.seed);
const rounds = values.iterations === undefined ? {} : { iterations: Number(values.iterations) };
if (values.reference !== undefined) {
  await compareWithReference(values.reference);
  Deno.exit(0);
}
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
if (values.export !== undefined) {
  await Deno.mkdir(values.export, { recursive: true });
  for (const l of layerIds) {
    for (const name of linears) {
      const h = hessian(captured.get(l)![name]!);
      const xtx = tensor("f64", [h.cols, h.cols], h.xtx);
      const path = `${values.export}/${l}.${name}.safetensors`;
      await writeSafetensors(path, { weight: model.layers[l]![name], xtx }, {
        tokens: String(h.count),
        model: modelName,
      });
      console.log(`wrote ${path}`);
    }
  }
  Deno.exit(0);
}

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
      const q = await aqlm(w, h, { codebooks, codebookBits, groupSize: 8, seed, ...rounds });
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

/**
 * Runs `aqlm()` at its defaults (2×8 bits, groups of 8) on every layer that
 * `--export` wrote to `dir` and prints its error and time next to the
 * reference's (from `aqlm_reference.py`), with the geometric mean of the
 * error ratios and of the speedups.
 */
async function compareWithReference(dir: string): Promise<void> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.name.endsWith(".safetensors") && !e.name.endsWith(".reference.safetensors")) {
      names.push(e.name.slice(0, -".safetensors".length));
    }
  }
  names.sort();
  console.log("relative output error ‖(W−Ŵ)X‖²/‖WX‖², AQLM 2x8g8, beam 4, relative tolerance 0.01");
  console.log(
    "layer     shape      ours      reference  ratio   ours s  ref s   speedup  rounds (ours/ref)",
  );
  let logRatio = 0, logSpeed = 0, n = 0;
  for (const name of names) {
    const refPath = `${dir}/${name}.reference.safetensors`;
    try {
      await Deno.stat(refPath);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      console.log(`${name}: no reference result (run tests/fixtures/aqlm_reference.py)`);
      continue;
    }
    const input = await readSafetensors(`${dir}/${name}.safetensors`);
    const ref = await readSafetensors(refPath);
    const w = input.tensors.get("weight")!, xtx = input.tensors.get("xtx")!;
    const [rows, cols] = w.shape as [number, number];
    const h: Hessian = {
      cols,
      count: Number(input.metadata.tokens ?? 1),
      xtx: Float64Array.from(xtx.data as Float64Array),
    };
    const start = performance.now();
    const q = await aqlm(w, h, { codebooks: 2, codebookBits: 8, groupSize: 8, seed, ...rounds });
    const ours = (performance.now() - start) / 1000;
    const mine = layerError(w, tensor("f32", [rows, cols], dequantizeAqlm(q)), h);
    const theirs = layerError(w, ref.tensors.get("weight")!, h);
    const refSeconds = Number(ref.metadata.seconds);
    logRatio += Math.log(mine / theirs);
    logSpeed += Math.log(refSeconds / ours);
    n++;
    console.log(
      name.padEnd(9),
      `${rows}x${cols}`.padEnd(10),
      mine.toFixed(5).padEnd(9),
      theirs.toFixed(5).padEnd(10),
      (mine / theirs).toFixed(3).padEnd(7),
      ours.toFixed(1).padStart(6),
      refSeconds.toFixed(1).padStart(6),
      `${(refSeconds / ours).toFixed(1)}×`.padStart(7),
      ` ${q.objective.length - 1}/${ref.metadata.rounds}`,
    );
  }
  if (n > 0) {
    console.log(
      `geomean over ${n} layers: error ratio ${Math.exp(logRatio / n).toFixed(3)}, speedup ${
        Math.exp(logSpeed / n).toFixed(1)
      }×`,
    );
  }
}
