/**
 * `deno task evopress`: chooses a compression level for every block linear
 * of a model under a global constraint (average bits per weight or average
 * sparsity), by the EvoPress search or the DP allocation over a level
 * database, and writes the choice as a JSON file whose `recipe` the
 * compress CLI takes (`deno task compress --recipe FILE`).
 *
 * ```sh
 * deno task evopress --model llama5M.bin --tokenizer tok512.bin --levels gptq --target 3 \
 *   --db out/levels-gptq --out out/evopress-w3.json
 * ```
 *
 * The level files in `--db` are reused by later runs (a database is built
 * once per model, calibration and level set); `--resume` continues a search
 * from the state its `--out` file holds (it is rewritten after every
 * generation). Exit status 0 when done, 1 when the run failed, 2 for bad
 * flags. Uses the `Deno` namespace.
 *
 * @module
 */

import { quietGpuProbe } from "../examples/data.ts";
import { loadModel } from "../models/causal_lm.ts";
import { loadTokenizer } from "../models/tokenizer.ts";
import { dpAllocation } from "../pipeline/dp_allocation.ts";
import { evoPress, type EvoPressState, type SelectionStep } from "../pipeline/evopress.ts";
import {
  allocationRecipe,
  buildLevelDatabase,
  type DatabaseLevel,
  gptqLevels,
  sparseGptLevels,
} from "../pipeline/level_database.ts";
import type { Recipe } from "../pipeline/recipe.ts";
import type { Backend } from "../kernels/backend.ts";
import { calibrationSet, fitnessWindows } from "./_calibration.ts";
import { failureStatus, integerFlag, splitFlags, UsageError } from "./_flags.ts";
import { tokenizerBeside } from "./_tokenizer_beside.ts";

/** The usage text (`--help`). */
export const EVOPRESS_USAGE =
  `Usage: deno task evopress --model PATH --target X --db DIR --out FILE [flags]

Chooses a level per block linear (EvoPress search or DP allocation) with the weighted average
level exactly X, and writes the choice and its per-module recipe to FILE (JSON) for
deno task compress --recipe FILE.

  --model PATH            Hugging Face folder or llama2.c .bin file
  --tokenizer PATH        tokenizer (default: the folder's, or the tok*.bin beside a .bin)
  --levels KIND           gptq (bits 2,3,4,5,6,8; X in bits) or sparsegpt (0-90% in steps of
                          10; X in percent) (default gptq)
  --bits LIST             GPTQ levels' bits (default 2,3,4,5,6,8)
  --group-size G          GPTQ groups (default 128)
  --sparsities LIST       SparseGPT levels in percent (default 0,10,...,90)
  --target X              the weighted average level value to meet exactly
  --search S              evopress or dp (default evopress)
  --db DIR                folder of the level files (built there once, then read back)
  --out FILE              the result (JSON); rewritten after every generation
  --calib NAME|FILE       the database's calibration text (default c4)
  --calib-samples N       windows (default 16)   --calib-len L   tokens per window (default 256)
  --fitness LIST          held-apart texts the KL fitness is measured on, comma-separated
                          corpus names or files, mixed in one pool (default tinystories,c4; a
                          text that is also --calib leaves out the database's windows)
  --fitness-samples N     windows of the pool the selection samples, shared out among the
                          texts (default 64)
  --evaluation-samples N  windows set apart from the pool, shared out among the texts: the start
                          (DP or uniform) is chosen on them and the result must beat it on them
                          (default 16)
  --fitness-len L         tokens per window (default 256)
  --generations N         (default 24)           --offspring N   (default 16)
  --selection LIST        selection steps as tokens:survivors, the last with 1 survivor; each
                          step scores its candidates on windows drawn afresh from the pool
                          (default 128:4,512:2,1024:1, clipped to the pool)
  --evaluation-tokens N   of the evaluation windows, only the first N tokens (default: all)
  --seed S                seed of the windows and the search (default 0)
  --backend B             where the database's passes run: auto, cpu, webgpu (default auto)
  --resume                continue the search from the state in --out
  --quiet                 no progress lines on stderr
  --help                  this text
`;

const VALUE_FLAGS = [
  "--model",
  "--tokenizer",
  "--levels",
  "--bits",
  "--group-size",
  "--sparsities",
  "--target",
  "--search",
  "--db",
  "--out",
  "--calib",
  "--calib-samples",
  "--calib-len",
  "--fitness",
  "--fitness-samples",
  "--evaluation-samples",
  "--fitness-len",
  "--generations",
  "--offspring",
  "--selection",
  "--evaluation-tokens",
  "--seed",
  "--backend",
] as const;
const SWITCHES = ["--resume", "--quiet", "--help", "-h"] as const;

/** What `--out` holds. */
export interface EvoPressFile {
  /** The search (`evopress` or `dp`). */
  readonly search: string;
  /** The target. */
  readonly target: number;
  /** Whether the search finished. */
  readonly done: boolean;
  /** Weighted average bits per weight, as the pipeline counts them. */
  readonly bitsPerWeight: number;
  /** Weighted average fraction of weights kept. */
  readonly density: number;
  /**
   * Mean KL (nats per token) from the dense model on the fitness text: on the
   * evaluation tokens when done; while a search runs, the parent's on the last
   * generation's sample.
   */
  readonly fitness: number;
  /** The level of every module, its value and the module's weight count. */
  readonly levels: Readonly<Record<string, { level: string; value: number; weights: number }>>;
  /** The per-module recipe for the compress CLI. */
  readonly recipe: Recipe;
  /** The search's state (EvoPress only), for `--resume`. */
  readonly state?: EvoPressState;
}

function list(flag: string, v: string): number[] {
  return v.split(",").map((x) => integerFlag(flag, x.trim(), 0));
}

function selectionSteps(v: string): SelectionStep[] {
  return v.split(",").map((step) => {
    const [tokens, survivors, ...rest] = step.trim().split(":");
    if (tokens === undefined || survivors === undefined || rest.length > 0) {
      throw new UsageError(`--selection needs steps of tokens:survivors: got '${step}'`);
    }
    return {
      tokens: integerFlag("--selection", tokens, 2),
      survivors: integerFlag("--selection", survivors, 1),
    };
  });
}

/**
 * Runs the command line.
 *
 * @param argv The arguments.
 * @returns The exit status.
 */
export async function main(argv: readonly string[]): Promise<number> {
  try {
    const { values, switches } = splitFlags(argv, VALUE_FLAGS, SWITCHES);
    if (switches.has("--help") || switches.has("-h")) {
      console.log(EVOPRESS_USAGE);
      return 0;
    }
    const missing = ["--model", "--target", "--db", "--out"].filter((f) => !values.has(f));
    if (missing.length > 0) throw new UsageError(`Missing ${missing.join(", ")}`);
    const kind = values.get("--levels") ?? "gptq";
    if (kind !== "gptq" && kind !== "sparsegpt") {
      throw new UsageError(`--levels must be gptq or sparsegpt: got '${kind}'`);
    }
    const levels: DatabaseLevel[] = kind === "gptq"
      ? gptqLevels(
        list("--bits", values.get("--bits") ?? "2,3,4,5,6,8"),
        integerFlag("--group-size", values.get("--group-size") ?? "128", 1),
      )
      : sparseGptLevels(
        list("--sparsities", values.get("--sparsities") ?? "0,10,20,30,40,50,60,70,80,90"),
      );
    const target = Number(values.get("--target"));
    if (!Number.isFinite(target)) {
      throw new UsageError(`--target needs a number: got '${values.get("--target")}'`);
    }
    const search = values.get("--search") ?? "evopress";
    if (search !== "evopress" && search !== "dp") {
      throw new UsageError(`--search must be evopress or dp: got '${search}'`);
    }
    const backend = (values.get("--backend") ?? "auto") as Backend;
    if (!["auto", "cpu", "webgpu"].includes(backend)) {
      throw new UsageError(`--backend must be auto, cpu or webgpu: got '${backend}'`);
    }
    const int = (flag: string, d: string, min: number) =>
      integerFlag(flag, values.get(flag) ?? d, min);
    const seed = int("--seed", "0", 0);
    const quiet = switches.has("--quiet");
    const log = (s: string) => {
      if (!quiet) console.error(s);
    };
    const out = values.get("--out")!;
    const db = values.get("--db")!;
    const resume = switches.has("--resume");
    let state: EvoPressState | undefined;
    if (resume) {
      const prev = JSON.parse(await Deno.readTextFile(out)) as EvoPressFile;
      if (prev.state === undefined) throw new UsageError(`--resume: ${out} holds no search state`);
      state = prev.state;
    }

    const model = values.get("--model")!;
    const lm = await loadModel(model);
    let tokPath = values.get("--tokenizer");
    if (tokPath === undefined) {
      const info = await Deno.stat(model);
      tokPath = info.isDirectory ? model : (await tokenizerBeside(model)).path ?? undefined;
      if (tokPath === undefined) {
        throw new UsageError(`--model ${model}: no tokenizer beside it: pass --tokenizer PATH`);
      }
    }
    const tokenizer = await loadTokenizer(tokPath, { vocabSize: lm.config.vocabSize });
    const maxLength = Math.min(lm.config.seqLen, lm.config.slidingWindow ?? Infinity);
    const calib = await calibrationSet(tokenizer, values.get("--calib") ?? "c4", {
      samples: int("--calib-samples", "16", 1),
      length: int("--calib-len", "256", 2),
      seed,
      maxLength,
    });
    const calibSource = values.get("--calib") ?? "c4";
    const fitness = await fitnessWindows(
      tokenizer,
      (values.get("--fitness") ?? "tinystories,c4").split(",").map((x) => x.trim()),
      {
        samples: int("--fitness-samples", "64", 1),
        evaluationSamples: int("--evaluation-samples", "16", 1),
        length: int("--fitness-len", "256", 2),
        seed: seed + 1,
        maxLength,
        skip: { [calibSource]: calib.tokens },
      },
    );
    for (const n of [...calib.notes, ...fitness.notes]) log(n);
    await Deno.mkdir(db, { recursive: true });
    const t0 = performance.now();
    const database = await buildLevelDatabase(lm, calib.windows, levels, {
      dir: db,
      backend,
      solveBackend: backend,
      onProgress: (p) => {
        if (p.fraction === 1) {
          log(`level ${levels[p.level]!.name}: ${p.resumed ? "read back" : "compressed"}`);
        }
      },
    });
    log(`database: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const write = async (file: EvoPressFile) => {
      const tmp = `${out}.tmp`;
      await Deno.writeTextFile(tmp, JSON.stringify(file, null, 1) + "\n");
      await Deno.rename(tmp, out);
    };
    const fileOf = (
      a: {
        levels: ReadonlyMap<string, number>;
        bitsPerWeight: number;
        density: number;
        fitness: number;
      },
      done: boolean,
      st?: EvoPressState,
    ): EvoPressFile => ({
      search,
      target,
      done,
      bitsPerWeight: a.bitsPerWeight,
      density: a.density,
      fitness: a.fitness,
      levels: Object.fromEntries(
        database.modules.map((m) => {
          const l = a.levels.get(m.name)!;
          return [m.name, {
            level: database.levels[l]!.name,
            value: database.levels[l]!.value,
            weights: m.weights,
          }];
        }),
      ),
      recipe: allocationRecipe(database, a.levels),
      ...(st ? { state: st } : {}),
    });
    let result;
    if (search === "dp") {
      result = fileOf(
        dpAllocation(lm, database, { target, calibration: fitness.evaluation }),
        true,
      );
    } else {
      const generations = int("--generations", "24", 0);
      const selection = values.has("--selection")
        ? selectionSteps(values.get("--selection")!)
        : undefined;
      const r = await evoPress(lm, database, {
        target,
        calibration: fitness.pool,
        evaluation: fitness.evaluation,
        generations,
        offspring: int("--offspring", "16", 1),
        ...(selection ? { selection } : {}),
        ...(values.has("--evaluation-tokens")
          ? { evaluationTokens: int("--evaluation-tokens", "0", 2) }
          : {}),
        seed,
        ...(state ? { resume: state } : {}),
        onGeneration: async (p) => {
          log(
            `generation ${p.state.generation}/${p.generations}: parent KL ${
              p.state.fitness.toFixed(5)
            } on this generation's sample${p.improved ? " (replaced)" : ""}, ${
              p.seconds.toFixed(0)
            } s`,
          );
          const levelsByName = new Map(
            database.modules.map((m, i) => [m.name, p.state.levels[i]!]),
          );
          const bits = database.modules.reduce(
            (a, m, i) => a + m.weights * m.variants[p.state.levels[i]!]!.bitsPerWeight,
            0,
          );
          const dens = database.modules.reduce(
            (a, m, i) => a + m.weights * m.variants[p.state.levels[i]!]!.density,
            0,
          );
          const n = database.modules.reduce((a, m) => a + m.weights, 0);
          await write(fileOf(
            {
              levels: levelsByName,
              bitsPerWeight: bits / n,
              density: dens / n,
              fitness: p.state.fitness,
            },
            false,
            p.state,
          ));
        },
      });
      result = fileOf(r, true, r.state);
    }
    await write(result);
    console.log(
      `${search} at ${target}: ${result.bitsPerWeight.toFixed(4)} bits/weight, density ${
        result.density.toFixed(4)
      }, KL ${result.fitness.toFixed(5)}; wrote ${out}`,
    );
    return 0;
  } catch (e) {
    return failureStatus(e, "evopress");
  }
}

if (import.meta.main) {
  quietGpuProbe();
  Deno.exit(await main(Deno.args));
}
