/**
 * Non-uniform compression of llama5M on the CPU: a level database (GPTQ at
 * 2, 3, 4, 5, 6, 8 bits with groups of 128, or SparseGPT at 0–70%), then for
 * each target the uniform levels at and next to it, the DP allocation and
 * the EvoPress search started from it, each scored by perplexity on two
 * held-out texts. Uses the `Deno` namespace (files).
 *
 * ```sh
 * deno run -A examples/evopress.ts gptq 2.5,3,3.5 [generations [offspring]]
 * deno run -A examples/evopress.ts sparsegpt 50,60,70 [generations [offspring]]
 * ```
 *
 * The database is calibrated on 16 windows of 256 tokens of C4 (its
 * calibration part); the fitness is measured on 2 windows of 256 tokens of
 * the calibration part of TinyStories (held apart from both); perplexity on
 * the held-out TinyStories part and WikiText-2 test, 4,096 tokens each. The
 * search: 10 generations of 8 offspring (by default), 3 survive 128 tokens, the best of them meets the
 * parent on all 512. The
 * level files go to `out/levels-<kind>/` (a rerun reads them back).
 *
 * @module
 */

import { calibrationSet } from "../cli/_calibration.ts";
import { loadModel } from "../models/causal_lm.ts";
import { withCompressedWeights } from "../models/compressible.ts";
import { loadLlama2cTokenizer } from "../models/llama2c_tokenizer.ts";
import { perplexity } from "../models/perplexity.ts";
import { dpAllocation, moduleSensitivities } from "../pipeline/dp_allocation.ts";
import { evoPress } from "../pipeline/evopress.ts";
import {
  buildLevelDatabase,
  gptqLevels,
  type LevelDatabase,
  sparseGptLevels,
} from "../pipeline/level_database.ts";
import { dataFile } from "./data.ts";
import { encodeDocs, loadCorpus } from "./datasets.ts";

const [kind = "gptq", targetList = "2.5,3,3.5", gens = "10", offspring = "8"] = Deno.args;
const modelPath = dataFile("llama5M/llama5M.bin");
const tokPath = dataFile("stories260K/tok512.bin");
if (!modelPath || !tokPath) Deno.exit(0);
const lm = await loadModel(modelPath);
const tokenizer = await loadLlama2cTokenizer(tokPath);
const calib = await calibrationSet(tokenizer, "c4", {
  samples: 16,
  length: 256,
  seed: 0,
  maxLength: 256,
});
const heldApart = await calibrationSet(tokenizer, "tinystories", {
  samples: 2,
  length: 256,
  seed: 1,
  maxLength: 256,
});
const evals = await Promise.all(
  (["tinystories", "wikitext2"] as const).map(async (name) => ({
    name,
    ids: encodeDocs(tokenizer, (await loadCorpus(name, "eval"))!.docs, 4096),
  })),
);
const levels = kind === "gptq"
  ? gptqLevels([2, 3, 4, 5, 6, 8], 128)
  : sparseGptLevels([0, 10, 20, 30, 40, 50, 60, 70]);
const dir = `out/levels-${kind}`;
await Deno.mkdir(dir, { recursive: true });
let t = performance.now();
const db = await buildLevelDatabase(lm, calib.windows, levels, {
  dir,
  backend: "cpu",
  solveBackend: "cpu",
});
console.log(
  `database: ${levels.length} levels in ${((performance.now() - t) / 1000).toFixed(1)} s`,
);

function ppl(db: LevelDatabase, choice: ReadonlyMap<string, number>): string {
  const modules = new Map(db.modules.map((m) => [m.name, m.variants[choice.get(m.name)!]!]));
  const model = withCompressedWeights(lm.model, modules);
  return evals.map((e) => perplexity(model, e.ids, { seqLen: 256 }).perplexity.toFixed(3)).join(
    " | ",
  );
}

console.log(
  `dense: ${
    evals.map((e) => perplexity(lm.model, e.ids, { seqLen: 256 }).perplexity.toFixed(3)).join(" | ")
  }`,
);
t = performance.now();
const sensitivities = moduleSensitivities(lm, db, heldApart.windows, { tokens: 256 });
console.log(`sensitivities: ${((performance.now() - t) / 1000).toFixed(1)} s`);
console.log(
  `| target | method | bits/weight | density | KL | ${
    evals.map((e) => e.name).join(" | ")
  } | seconds |`,
);
const shown = new Set<number>();
for (const target of targetList.split(",").map(Number)) {
  // The uniform levels at and around the target (each printed once).
  for (const [u, l] of levels.entries()) {
    if (shown.has(u) || Math.abs(l.value - target) >= (kind === "gptq" ? 1 : 10)) continue;
    shown.add(u);
    const choice = new Map(db.modules.map((m) => [m.name, u]));
    const v = db.modules[0]!.variants[u]!;
    // Its KL on the fitness text: a search of 0 generations from it.
    const kl = l.value === target
      ? (await evoPress(lm, db, {
        target,
        calibration: heldApart.windows,
        start: choice,
        generations: 0,
      })).fitness.toFixed(4)
      : "";
    console.log(
      `| ${l.value} | uniform | ${v.bitsPerWeight.toFixed(3)} | ${v.density.toFixed(3)} | ${kl} | ${
        ppl(db, choice)
      } | |`,
    );
  }
  t = performance.now();
  const dp = dpAllocation(lm, db, { target, calibration: heldApart.windows, sensitivities });
  const dpSeconds = (performance.now() - t) / 1000;
  console.log(
    `| ${target} | DP | ${dp.bitsPerWeight.toFixed(3)} | ${dp.density.toFixed(3)} | ${
      dp.fitness.toFixed(4)
    } | ${ppl(db, dp.levels)} | ${dpSeconds.toFixed(1)} |`,
  );
  const evo = await evoPress(lm, db, {
    target,
    calibration: heldApart.windows,
    start: dp.levels,
    generations: Number(gens),
    offspring: Number(offspring),
    selection: [{ tokens: 128, survivors: 3 }, { tokens: 512, survivors: 1 }],
    seed: 0,
    onGeneration: (p) => {
      if (p.state.generation % 5 === 0) {
        console.error(
          `  gen ${p.state.generation}: KL ${p.state.fitness.toFixed(4)} (${
            p.seconds.toFixed(0)
          } s)`,
        );
      }
    },
  });
  console.log(
    `| ${target} | EvoPress | ${evo.bitsPerWeight.toFixed(3)} | ${evo.density.toFixed(3)} | ${
      evo.fitness.toFixed(4)
    } | ${ppl(db, evo.levels)} | ${evo.seconds.toFixed(1)} (${evo.state.tokensScored} tokens) |`,
  );
}
