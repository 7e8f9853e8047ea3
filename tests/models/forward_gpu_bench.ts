/**
 * Llama forward pass and perplexity: WebGPU against the CPU, measured in the
 * same run (llama5M when ../shared/data has it, else stories260K). The GPU
 * benches run on a hardware adapter only (a software one is slower than the
 * CPU path); set LLMC_BENCH_SOFTWARE_GPU=1 to run them anyway. Tokens per
 * second = tokens in the bench name / time per iteration.
 *
 * @module
 */

import { acquireGpu } from "../../kernels/backend.ts";
import { prng } from "../../core/prng.ts";
import { dataFile } from "../_helpers.ts";
import { loadLlama2c } from "../../models/llama2c.ts";
import { llamaForward } from "../../models/forward.ts";
import { perplexity } from "../../models/perplexity.ts";
import { llamaSession, perplexityGpu, sessionPerplexity } from "../../models/forward_gpu.ts";

const name = dataFile("llama5M/llama5M.bin") ? "llama5M" : "stories260K";
const path = dataFile(`${name}/${name}.bin`);
const model = path ? await loadLlama2c(path) : null;
const gpu = await acquireGpu();
const useGpu = gpu !== null && (!gpu.software || Deno.env.get("LLMC_BENCH_SOFTWARE_GPU") === "1");
if (model && !useGpu) {
  console.log(
    gpu === null
      ? "skipping the WebGPU benches: no adapter"
      : `skipping the WebGPU benches on the software adapter ${gpu.description}`,
  );
}

if (model) {
  const T = Math.min(256, model.config.seqLen);
  const rng = prng(1);
  const V = model.config.vocabSize;
  const tokens = Array.from({ length: T }, () => rng.int(V));
  const windows = 4;
  const stream = Array.from({ length: windows * T + 1 }, () => rng.int(V));
  const session = useGpu ? await llamaSession(model, { backend: "webgpu" }) : null;
  if (session) globalThis.addEventListener("unload", () => session.dispose());

  Deno.bench(`${name} forward of ${T} tokens on the CPU`, {
    group: "forward",
    baseline: true,
    n: 5,
    warmup: 1,
  }, () => {
    llamaForward(model, tokens);
  });
  Deno.bench(`${name} forward of ${T} tokens on WebGPU (one submission, one read-back)`, {
    group: "forward",
    n: 50,
    warmup: 3,
    ignore: session === null,
  }, async () => {
    await session!.forward(tokens);
  });
  Deno.bench(`${name} perplexity of ${windows}×${T} tokens on the CPU`, {
    group: "perplexity",
    baseline: true,
    n: 1,
    warmup: 0,
  }, () => {
    perplexity(model, stream, { seqLen: T });
  });
  Deno.bench(`${name} perplexity of ${windows}×${T} tokens on WebGPU, weights uploaded each time`, {
    group: "perplexity",
    n: 10,
    warmup: 1,
    ignore: !useGpu,
  }, async () => {
    await perplexityGpu(model, stream, { seqLen: T, backend: "webgpu" });
  });
  Deno.bench(`${name} perplexity of ${windows}×${T} tokens on WebGPU through one session`, {
    group: "perplexity",
    n: 10,
    warmup: 1,
    ignore: session === null,
  }, async () => {
    await sessionPerplexity(session!, stream, { seqLen: T });
  });
} else {
  console.log("skipping the Llama forward benches: no model in the data folder");
}
