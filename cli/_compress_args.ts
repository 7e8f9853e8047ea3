/**
 * The flags of `deno task compress`: the usage text, their parsing and
 * checking (everything that needs no file is checked here, before any
 * work). Web-standard only.
 *
 * @module
 */

import { integerFlag, splitFlags, UsageError } from "./_flags.ts";

export { UsageError };
import type { Backend } from "../kernels/backend.ts";
import { parseMethodId } from "../examples/demo/methods.ts";
import type { Recipe, Stage } from "../pipeline/recipe.ts";
import { hasActivationStages } from "../pipeline/recipe.ts";
import {
  CHECKPOINT_FORMATS,
  type CheckpointFormat,
  type DenseDType,
} from "../models/formats/write_checkpoint.ts";
import { PACK_QUANTIZED_BITS } from "../models/formats/pack_quantized.ts";
import { GPTQ_CHECKPOINT_BITS } from "../quantizers/gptq_checkpoint.ts";

/** The usage text (`--help`). */
export const COMPRESS_USAGE = `Usage: deno task compress --model PATH --method ID --out DIR [flags]

Compresses a model layer by layer (GPTQ's sequential pipeline) and writes it as a folder.

Required
  --model PATH            Hugging Face folder (config.json, safetensors, tokenizer.json) or
                          llama2.c .bin file
  --method ID             method id, e.g. gptq-w4-g128, rtn-w4-g32, sparsegpt-50, sparsegpt-2:4
                          (--list prints the named ones and the patterns)
  --recipe FILE           instead of --method: a per-module recipe (JSON: a recipe, or the file
                          deno task evopress writes, whose 'recipe' it takes); --format dense
  --out DIR               output folder; must be absent or empty unless --force

Calibration
  --calib NAME|FILE       c4 (documents 0-1799), tinystories (first 60% of its blocks), from the
                          data root $LLMC_DATA (default ../shared/data), or a text file of
                          blank-line-separated documents (default c4)
  --calib-samples N       windows (default 128; fewer if the text holds fewer)
  --calib-len L           tokens per window (default 2048; clipped to the model's context)
  --seed S                seed of the window offsets (default 0)
  --tokenizer PATH        tokenizer (default: the model folder's; for a .bin model, tokenizer.bin
                          or the tok*.bin beside it)

Output and run
  --format F              the Hugging Face folder written (each loadModel reads back):
                          dense: every linear in --dtype (default);
                          gptq: GPTQ's packed layout (qweight, qzeros, scales, g_idx) that
                          transformers, GPTQModel and vLLM load (rtn or gptq methods, 2, 3, 4
                          or 8 bits);
                          compressed-tensors: llm-compressor's layouts: pack-quantized for rtn
                          or gptq methods (groups must divide every layer's inputs),
                          sparse-bitmask or sparse-24-bitmask (2:4) for magnitude, wanda or
                          sparsegpt methods
  --dtype T               f32, f16 or bf16: the linears of --format dense, the kept weights of a
                          pruned compressed-tensors folder (default f32)
  --checkpoint-format C   gptq (zero points stored minus one, as AutoGPTQ; the default) or
                          gptq_v2, for --format gptq
  --backend B             where the calibration passes and the solvers (GPTQ, SparseGPT) run: auto
                          (WebGPU on a hardware adapter, else the CPU), cpu, or webgpu (any
                          adapter) (default auto)
  --gpu-memory GIB        GPU memory the run may use: a run whose estimate is larger is refused
                          before it starts, naming what to lower (default: allocate up front and
                          report a failure then)
  --resume                continue an interrupted run after its last finished block (its journal
                          is in DIR.partial/)
  --force                 replace a non-empty --out, or start over instead of resuming
  --json                  print one JSON report on stdout
  --quiet                 no progress bar or progress lines on stderr
  --list                  print the method ids and exit
  --help                  this text

Exit status: 0 done, 1 failed (the journal in DIR.partial/ stays for --resume), 2 bad flags.
`;

/** The checked flags of a compression run. */
export interface CompressArgs {
  /** `--model`. */
  readonly model: string;
  /** `--method` (a valid id), or `recipe` with `--recipe`. */
  readonly method: string;
  /** `--recipe`, when given (instead of `--method`). */
  readonly recipeFile?: string;
  /** `--out`, without trailing slashes. */
  readonly out: string;
  /** `--calib`. */
  readonly calib: string;
  /** `--calib-samples`. */
  readonly calibSamples: number;
  /** `--calib-len`. */
  readonly calibLen: number;
  /** `--seed`. */
  readonly seed: number;
  /** `--tokenizer`, when given. */
  readonly tokenizer?: string;
  /** `--format`. */
  readonly format: CheckpointFormat;
  /** `--dtype`, the linears of a dense folder. */
  readonly dtype: DenseDType;
  /** `--checkpoint-format`, GPTQ's zero-point convention. */
  readonly checkpointFormat: "gptq" | "gptq_v2";
  /** `--backend`. */
  readonly backend: Backend;
  /** `--gpu-memory`, in bytes, when given. */
  readonly gpuMemoryBytes?: number;
  /** `--json`. */
  readonly json: boolean;
  /** `--quiet`. */
  readonly quiet: boolean;
  /** `--resume`. */
  readonly resume: boolean;
  /** `--force`. */
  readonly force: boolean;
}

/** What the command line asks for. */
export type CompressCommandLine =
  | { readonly kind: "help" }
  | { readonly kind: "list" }
  | { readonly kind: "run"; readonly args: CompressArgs };

const VALUE_FLAGS = [
  "--model",
  "--method",
  "--recipe",
  "--out",
  "--calib",
  "--calib-samples",
  "--calib-len",
  "--seed",
  "--tokenizer",
  "--format",
  "--dtype",
  "--checkpoint-format",
  "--backend",
  "--gpu-memory",
] as const;
const SWITCHES = ["--json", "--quiet", "--resume", "--force", "--list", "--help", "-h"] as const;

/**
 * Parses and checks the command line. `--help` and `--list` win over
 * everything else; otherwise `--model`, `--method` and `--out` are required,
 * the method id must parse, and the format must hold what the method makes.
 *
 * @param argv The arguments (`Deno.args`); `--flag value` or `--flag=value`.
 * @returns What to do.
 * @throws {UsageError} naming the flag and the value at fault.
 */
export function parseCompressArgs(argv: readonly string[]): CompressCommandLine {
  const { values, switches } = splitFlags(argv, VALUE_FLAGS, SWITCHES);
  if (switches.has("--help") || switches.has("-h")) return { kind: "help" };
  if (switches.has("--list")) return { kind: "list" };
  const recipeFile = values.get("--recipe");
  if (recipeFile !== undefined && values.has("--method")) {
    throw new UsageError(`--recipe and --method exclude each other: give one`);
  }
  const missing = ["--model", recipeFile === undefined ? "--method" : "", "--out"].filter((f) =>
    f !== "" && !values.has(f)
  );
  if (missing.length > 0) throw new UsageError(`Missing ${missing.join(", ")}`);
  const method = recipeFile === undefined ? values.get("--method")! : "recipe";
  let recipe: Recipe = { stages: [] };
  if (recipeFile === undefined) {
    let parsed;
    try {
      parsed = parseMethodId(method);
    } catch (e) {
      throw new UsageError(`--method: ${(e as Error).message}`);
    }
    if (parsed.transform || hasActivationStages(parsed.recipe)) {
      throw new UsageError(
        `--method ${method} quantizes activations${
          parsed.transform ? ` after a ${parsed.transform.kind} transform` : ""
        }, which a checkpoint does not hold: this command writes weights only ` +
          `(evaluate it with examples/demo.ts)`,
      );
    }
    recipe = parsed.recipe;
  }
  const format = values.get("--format") ?? "dense";
  if (!(CHECKPOINT_FORMATS as readonly string[]).includes(format)) {
    throw new UsageError(`--format must be ${CHECKPOINT_FORMATS.join(", ")}: got '${format}'`);
  }
  const dtype = values.get("--dtype") ?? "f32";
  if (dtype !== "f32" && dtype !== "f16" && dtype !== "bf16") {
    throw new UsageError(`--dtype must be f32, f16 or bf16: got '${dtype}'`);
  }
  if (values.has("--dtype") && format === "gptq") {
    throw new UsageError(
      `--dtype sets the float weights of --format dense and compressed-tensors; --format gptq ` +
        `stores them packed`,
    );
  }
  const checkpointFormat = values.get("--checkpoint-format") ?? "gptq";
  if (checkpointFormat !== "gptq" && checkpointFormat !== "gptq_v2") {
    throw new UsageError(`--checkpoint-format must be gptq or gptq_v2: got '${checkpointFormat}'`);
  }
  if (values.has("--checkpoint-format") && format !== "gptq") {
    throw new UsageError(`--checkpoint-format applies to --format gptq, not ${format}`);
  }
  if (recipeFile !== undefined && format !== "dense") {
    throw new UsageError(`--recipe writes --format dense: got --format ${format}`);
  }
  if (format !== "dense") checkMethodFits(method, recipe, format as CheckpointFormat);
  const backend = values.get("--backend") ?? "auto";
  if (backend !== "auto" && backend !== "cpu" && backend !== "webgpu") {
    throw new UsageError(`--backend must be auto, cpu or webgpu: got '${backend}'`);
  }
  const gpuMemory = values.get("--gpu-memory");
  let gpuMemoryBytes: number | undefined;
  if (gpuMemory !== undefined) {
    const gib = Number(gpuMemory);
    if (!/^\d+(\.\d+)?$/.test(gpuMemory) || !(gib > 0)) {
      throw new UsageError(`--gpu-memory needs a positive number of GiB: got '${gpuMemory}'`);
    }
    gpuMemoryBytes = Math.round(gib * 2 ** 30);
  }
  const calib = values.get("--calib") ?? "c4";
  if (calib === "wikitext2") {
    throw new UsageError(
      "--calib wikitext2: WikiText-2 test is for evaluation only: calibrate on c4, tinystories " +
        "or a text file",
    );
  }
  const out = values.get("--out")!.replace(/(.)\/+$/, "$1");
  const tokenizer = values.get("--tokenizer");
  return {
    kind: "run",
    args: {
      model: values.get("--model")!,
      method,
      ...(recipeFile !== undefined ? { recipeFile } : {}),
      out,
      calib,
      calibSamples: integerFlag("--calib-samples", values.get("--calib-samples") ?? "128", 1),
      calibLen: integerFlag("--calib-len", values.get("--calib-len") ?? "2048", 2),
      seed: integerFlag("--seed", values.get("--seed") ?? "0", 0),
      ...(tokenizer !== undefined ? { tokenizer } : {}),
      format: format as CheckpointFormat,
      dtype,
      checkpointFormat,
      backend,
      ...(gpuMemoryBytes !== undefined ? { gpuMemoryBytes } : {}),
      json: switches.has("--json"),
      quiet: switches.has("--quiet"),
      resume: switches.has("--resume"),
      force: switches.has("--force"),
    },
  };
}

/**
 * Refuses a method whose result a packed format cannot hold, before any
 * work: every block linear must end as a uniform grid (one `rtn` or `gptq`
 * stage, no rotation, no pruning) of the bits the format packs, or, for
 * compressed-tensors, as a pruned weight (one pruning stage without a grid);
 * GPTQ needs one grid for all.
 */
function checkMethodFits(id: string, recipe: Recipe, format: CheckpointFormat): void {
  const bits = format === "gptq" ? GPTQ_CHECKPOINT_BITS : PACK_QUANTIZED_BITS;
  const lists: [string, readonly Stage[]][] = [
    ["", recipe.stages],
    ...(recipe.overrides ?? [])
      .filter((o) => o.match !== "output")
      .map((o): [string, readonly Stage[]] => [` (modules ${o.match})`, o.stages]),
  ];
  for (const [where, stages] of lists) {
    const kinds = stages.map((s) => s.kind).join(" → ") || "no stage";
    const s = stages[0];
    const pruner = s?.kind === "magnitude" || s?.kind === "wanda" ||
      (s?.kind === "sparsegpt" && s.grid === undefined);
    if (format === "compressed-tensors" && stages.length === 1 && pruner) continue;
    if (stages.length !== 1 || !s || (s.kind !== "rtn" && s.kind !== "gptq")) {
      throw new UsageError(
        `--format ${format} holds uniform grids from one rtn or gptq stage` +
          `${format === "compressed-tensors" ? " or pruned weights from one pruning stage" : ""}` +
          `: method ${id} runs ${kinds}${where}. Use --format dense`,
      );
    }
    if (!bits.includes(s.bits)) {
      throw new UsageError(
        `--format ${format} packs ${bits.join(", ")}-bit codes: method ${id} has ${s.bits}${where}`,
      );
    }
  }
  if (format === "gptq" && lists.length > 1) {
    throw new UsageError(
      `--format gptq holds one grid for every linear: method ${id} overrides some modules`,
    );
  }
}
