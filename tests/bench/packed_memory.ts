/**
 * Host memory and CPU time of a packed checkpoint at Llama-3.2-1B shapes:
 * writes the random-weight bf16 folder of `load_memory.ts`, quantizes every
 * block linear with RTN (4 bits, groups of 128, symmetric) and writes it as a
 * GPTQ folder (`writeCheckpoint`), then, each in a fresh process, loads the
 * bf16 folder and the GPTQ folder and runs the logits of 8 tokens on the CPU,
 * reporting the peak resident memory against each folder's size.
 *
 *     deno run -A tests/bench/packed_memory.ts [--dir=DIR] [--keep]
 *
 * Uses the file system and subprocesses; reads /proc (Linux).
 *
 * @module
 */

import { LLAMA_SHAPES, writeRandomLlama } from "../models/_random_checkpoint.ts";
import { loadModel } from "../../models/causal_lm.ts";
import { measure } from "./load_memory.ts";
import { writeCheckpoint } from "../../models/formats/write_checkpoint.ts";
import { LLAMA_LINEARS } from "../../models/model.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { rtn } from "../../quantizers/rtn.ts";

function folderBytes(dir: string): number {
  let n = 0;
  for (const e of Deno.readDirSync(dir)) {
    if (e.name.endsWith(".safetensors")) n += Deno.statSync(`${dir}/${e.name}`).size;
  }
  return n;
}

/** Quantizes every block linear of a folder with RTN and writes it as GPTQ (in a fresh process). */
async function quantize(src: string, out: string): Promise<void> {
  const lm = await loadModel(src);
  const modules = new Map();
  for (let l = 0; l < lm.model.layers.length; l++) {
    for (const key of LLAMA_LINEARS) {
      const q = await rtn(lm.model.layers[l]![key], { bits: 4, groupSize: 128, symmetric: true });
      const r = { ...q, scales: q.scales.map(Math.f16round) };
      modules.set(`layers.${l}.${key}`, { weight: dequantize(r), quantized: r });
    }
  }
  await writeCheckpoint(lm.model, modules, out, { format: "gptq" });
}

async function run(args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, ...args],
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`${args.join(" ")} failed`);
  return new TextDecoder().decode(out.stdout);
}

if (import.meta.main) {
  const arg = (name: string) => Deno.args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
  const measureDir = arg("measure"), quantizeDir = arg("quantize");
  if (measureDir) await measure(measureDir);
  else if (quantizeDir) await quantize(quantizeDir, arg("out")!);
  else {
    const dir = arg("dir") ?? await Deno.makeTempDir({ prefix: "llmc-1b-packed-" });
    await Deno.mkdir(dir, { recursive: true });
    const [bf16, gptq] = [`${dir}/bf16`, `${dir}/gptq-w4g128`];
    let t = performance.now();
    await writeRandomLlama(bf16, LLAMA_SHAPES["1b"]);
    console.error(`wrote ${bf16} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    t = performance.now();
    await run([`--quantize=${bf16}`, `--out=${gptq}`]);
    console.error(
      `quantized and wrote ${gptq} in ${((performance.now() - t) / 1000).toFixed(1)} s`,
    );
    const gib = (b: number) => (b / 2 ** 30).toFixed(2);
    for (const folder of [bf16, gptq]) {
      const m = JSON.parse(await run([`--measure=${folder}`]));
      const bytes = folderBytes(folder);
      console.log(
        `${folder}: ${gib(bytes)} GiB of safetensors; peak RSS after load ${
          gib(m.peakRssAfterLoad)
        } GiB, after the logits of 8 tokens ${gib(m.peakRss)} GiB (process baseline ${
          gib(m.baselineRss)
        } GiB); load ${m.loadSeconds.toFixed(1)} s, logits ${m.logitsSeconds.toFixed(1)} s`,
      );
    }
    if (!Deno.args.includes("--keep")) await Deno.remove(dir, { recursive: true });
  }
}
