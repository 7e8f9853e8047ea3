/**
 * Non-uniform compression of llama5M on the CPU: a level database (GPTQ at
 * 2, 3, 4, 5, 6, 8 bits with groups of 128, or SparseGPT at 0–90%), then for
 * each target the uniform levels at and next to it, the DP allocation and
 * the EvoPress search (from the better of the DP and the uniform
 * allocation), each scored by perplexity on two held-out texts. Uses the
 * `Deno` namespace (files).
 *
 * ```sh
 * deno run -A examples/evopress.ts gptq 2.5,3,3.5 [generations [offspring [dir [fitness [pool [selection]]]]]]
 * deno run -A examples/evopress.ts sparsegpt 50,60,70 [generations [offspring [dir [fitness [pool [selection]]]]]]
 * ```
 *
 * The database is calibrated on 16 windows of 256 tokens of C4 (its
 * calibration part). The fitness texts (`fitness`, default `tinystories,c4`:
 * the calibration parts of TinyStories and C4, C4's past the database's
 * calibration stream) give a pool of `pool` windows of 256 tokens (default
 * 64, shared out among the texts), which each selection step draws from
 * afresh, and apart from it 16 evaluation windows (4,096 tokens, shared out
 * likewise, never sampled by the search) on which the start is chosen, the
 * KL column is measured and the search's result must beat its start.
 * Perplexity on the held-out TinyStories part and WikiText-2 test, 4,096
 * tokens each (texts neither the pool nor the evaluation windows touch). The search:
 * `evoPress`'s defaults (24 generations of 16 offspring, 128 → 512 → 1,024
 * tokens with 4 → 2 → 1 survivors, the parent re-scored at the last step);
 * `selection` replaces the steps, as `tokens:survivors` pairs
 * (`128:4,1024:2,4096:1`).
 * The level files go to `dir` (default `out/levels-<kind>/`; a rerun reads
 * them back).
 *
 * @module
 */

import { calibrationSet, fitnessWindows } from "../cli/_calibration.ts";
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

const [
  kind = "gptq",
  targetList = "2.5,3,3.5",
  gens = "24",
  offspring = "16",
  dir = `out/levels-${kind}`,
  fitnessTexts = "tinystories,c4",
  poolWindows = "64",
  selectionList = "",
] = Deno.args;
const selection = selectionList === "" ? undefined : selectionList.split(",").map((step) => {
  const [tokens, survivors, ...rest] = step.split(":").map(Number);
  if (!Number.isSafeInteger(tokens) || !Number.isSafeInteger(survivors) || rest.length > 0) {
    throw new TypeError(`selection needs steps of tokens:survivors: got '${step}'`);
  }
  return { tokens: tokens!, survivors: survivors! };
});
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
// The pool and the evaluation windows (disjoint; the DP allocation's fitness is measured on the
// evaluation windows too).
const { pool, evaluation, notes } = await fitnessWindows(tokenizer, fitnessTexts.split(","), {
  samples: Number(poolWindows),
  evaluationSamples: 16,
  length: 256,
  seed: 1,
  maxLength: 256,
  skip: { c4: calib.tokens },
});
notes.forEach((n) => console.error(n));
console.log(
  `fitness: ${fitnessTexts}, pool ${pool.length} windows, evaluation ${evaluation.length}` +
    (selectionList === "" ? "" : `, selection ${selectionList}`),
);
const evals = await Promise.all(
  (["tinystories", "wikitext2"] as const).map(async (name) => ({
    name,
    ids: encodeDocs(tokenizer, (await loadCorpus(name, "eval"))!.docs, 4096),
  })),
);
const levels = kind === "gptq"
  ? gptqLevels([2, 3, 4, 5, 6, 8], 128)
  : sparseGptLevels([0, 10, 20, 30, 40, 50, 60, 70, 80, 90]);
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
const sensitivities = moduleSensitivities(lm, db, pool, { tokens: 256 });
console.log(`sensitivities: ${((performance.now() - t) / 1000).toFixed(1)} s`);
console.log(
  `| target | method | bits/weight | density | KL | ${
    evals.map((e) => e.name).join(" | ")
  } | seconds |`,
);
const targets = targetList.split(",").map(Number);
const shown = new Set<number>();
for (const target of targets) {
  // The uniform levels at and around the target, each printed once: at its own target when it
  // is one (with its KL), else beside the first target next to it.
  for (const [u, l] of levels.entries()) {
    if (shown.has(u) || Math.abs(l.value - target) >= (kind === "gptq" ? 1 : 10)) continue;
    if (l.value !== target && targets.includes(l.value)) continue;
    shown.add(u);
    const choice = new Map(db.modules.map((m) => [m.name, u]));
    const v = db.modules[0]!.variants[u]!;
    // Its KL on the evaluation windows: a search of 0 generations from it.
    const kl = l.value === target
      ? (await evoPress(lm, db, {
        target,
        calibration: pool,
        evaluation,
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
  const dp = dpAllocation(lm, db, { target, calibration: evaluation, sensitivities });
  const dpSeconds = (performance.now() - t) / 1000;
  console.log(
    `| ${target} | DP | ${dp.bitsPerWeight.toFixed(3)} | ${dp.density.toFixed(3)} | ${
      dp.fitness.toFixed(4)
    } | ${ppl(db, dp.levels)} | ${dpSeconds.toFixed(1)} |`,
  );
  const evo = await evoPress(lm, db, {
    target,
    calibration: pool,
    evaluation,
    sensitivities,
    generations: Number(gens),
    offspring: Number(offspring),
    ...(selection ? { selection } : {}),
    seed: 0,
    onGeneration: (p) => {
      console.error(
        `  gen ${p.state.generation}: parent KL ${p.state.fitness.toFixed(4)} on its sample${
          p.improved ? " (replaced)" : ""
        } (${p.seconds.toFixed(0)} s)`,
      );
    },
  });
  const s = evo.state;
  console.log(
    `| ${target} | EvoPress | ${evo.bitsPerWeight.toFixed(3)} | ${evo.density.toFixed(3)} | ${
      evo.fitness.toFixed(4)
    } | ${ppl(db, evo.levels)} | ${
      evo.seconds.toFixed(1)
    } (${s.evaluations} evaluations, ${s.tokensScored} tokens; start KL ${
      evo.startFitness.toFixed(4)
    }, ${evo.improved ? "improved" : "kept the start"}) |`,
  );
}
