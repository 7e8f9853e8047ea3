/**
 * What `deno task compress` does once its flags are checked: load the model
 * and its tokenizer, draw the calibration windows, compress block by block
 * with a journal in `OUT.partial/journal/` (so `--resume` continues after the
 * last finished block), write the output folder (dense, GPTQ or
 * compressed-tensors) into `OUT.partial/output/` and rename it to `OUT` only
 * when it is complete, and report. Uses the `Deno` namespace.
 *
 * For tests, `LLMC_COMPRESS_STOP_AFTER_BLOCK=k` makes a run fail right after
 * block k is in the journal, as an interruption would.
 *
 * @module
 */

import { tokenizerBeside } from "./_tokenizer_beside.ts";
import { parseMethodId } from "../examples/demo/methods.ts";
import { type Journal, openJournal } from "../examples/demo/journal.ts";
import { progressBar } from "../examples/demo/report.ts";
import { type CausalLM, loadModel } from "../models/causal_lm.ts";
import { llamaDims, llamaParameterCount } from "../models/model.ts";
import type { LlamaConfig } from "../models/model.ts";
import { hasActivationStages, type Recipe, validateRecipe } from "../pipeline/recipe.ts";
import { type CheckpointFormat, writeCheckpoint } from "../models/formats/write_checkpoint.ts";
import { loadTokenizer, type Tokenizer } from "../models/tokenizer.ts";
import type { CompressedLinear } from "../pipeline/compress_linear.ts";
import { type CompressArgs, UsageError } from "./_compress_args.ts";
import { CALIBRATION_CORPORA, calibrationSet } from "./_calibration.ts";
import { compressRun, type CompressRunResult } from "./_compress_run.ts";
import { measureLayerErrors } from "./_layer_errors.ts";
import { hostPeakBytes, trackGpuBuffers } from "./_memory.ts";

/** One module of the report. */
export interface ModuleReport {
  /** Module name, e.g. `layers.0.wq`. */
  readonly name: string;
  /** ‖(W − Ŵ)X‖² / ‖WX‖² on the calibration windows (0 uncompressed; null if not finite). */
  readonly layerError: number | null;
  /** Storage bits per weight (32 uncompressed). */
  readonly bits: number;
  /** Fraction of weights kept. */
  readonly density: number;
  /** Seconds spent compressing it (by the run that did, for resumed modules). */
  readonly seconds: number;
}

/** The report of a run (`--json` prints it). */
export interface CompressReport {
  /** `--model`, as given. */
  readonly model: string;
  /** The method id. */
  readonly method: string;
  /** The output folder. */
  readonly out: string;
  /** The output format. */
  readonly format: CheckpointFormat;
  /** The calibration windows, after clipping. */
  readonly calibration: {
    readonly source: string;
    readonly samples: number;
    readonly length: number;
    readonly seed: number;
    readonly tokens: number;
    readonly tokenizer: string;
  };
  /** Every linear the pipeline visited, in order. */
  readonly modules: readonly ModuleReport[];
  /** Weight-count-weighted mean bits per weight over the compressed modules (32 if none). */
  readonly bitsPerWeight: number;
  /** Modules taken from the journal of an interrupted run. */
  readonly resumedModules: number;
  /**
   * Wall-clock seconds by phase: load, calibration (reading and tokenizing
   * the text), compress (the pipeline, and measuring data-free layer errors),
   * write, total; and the pipeline's own phases (its calibration forwards and
   * Hessians, the solves, the propagation).
   */
  readonly seconds: {
    readonly load: number;
    readonly calibration: number;
    readonly compress: number;
    readonly write: number;
    readonly total: number;
    readonly pipeline: {
      readonly calibration: number;
      readonly compress: number;
      readonly propagate: number;
    };
  };
  /**
   * Peak memory: the process's resident set (`VmHWM`; null off Linux) and the
   * live WebGPU buffers (see `_memory.ts`; 0 when none was created, null
   * without WebGPU).
   */
  readonly memory: { readonly hostPeakBytes: number | null; readonly gpuPeakBytes: number | null };
}

/** The files a Hugging Face folder's tokenizer and generation settings live in. */
const HF_SIDE_FILES: readonly string[] = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "generation_config.json",
];

/**
 * Refuses, before any compression, group sizes that compressed-tensors
 * cannot describe: its groups must divide every linear's input features.
 */
function checkGroupsDivide(config: LlamaConfig, recipe: Recipe, method: string): void {
  const { qDim } = llamaDims(config);
  const inputs = [...new Set([config.dim, qDim, config.hiddenDim])];
  const stages = [recipe.stages, ...(recipe.overrides ?? []).map((o) => o.stages)].flat();
  for (const s of stages) {
    if ((s.kind !== "rtn" && s.kind !== "gptq") || !s.groupSize || s.groupSize < 0) continue;
    const bad = inputs.filter((k) => k % s.groupSize! !== 0);
    if (bad.length > 0) {
      throw new UsageError(
        `--format compressed-tensors needs groups that divide every linear's inputs: method ` +
          `${method} has groups of ${s.groupSize}, and ${bad.join(", ")} input features are not ` +
          `a multiple of it. Use --format gptq or dense, or another group size`,
      );
    }
  }
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

async function isEmptyDir(path: string): Promise<boolean> {
  for await (const _ of Deno.readDir(path)) return false;
  return true;
}

/** The tokenizer file or folder of a model: `--tokenizer`, the model folder, or the .bin's neighbour. */
async function tokenizerPath(args: CompressArgs, modelIsDir: boolean): Promise<string> {
  if (args.tokenizer !== undefined) {
    if (!(await statOrNull(args.tokenizer))) {
      throw new UsageError(`--tokenizer ${args.tokenizer}: no such file or folder`);
    }
    return args.tokenizer;
  }
  if (modelIsDir) return args.model;
  const { found, path } = await tokenizerBeside(args.model);
  if (path === null) {
    throw new UsageError(
      `--model ${args.model} is a llama2.c file and ${
        found.length === 0
          ? "no tokenizer (tokenizer.bin or tok*.bin) lies beside it"
          : `several tokenizers lie beside it (${[...found].sort().join(", ")})`
      }: pass --tokenizer PATH`,
    );
  }
  return path;
}

/**
 * The method of `--recipe FILE`: a recipe in JSON, or an object whose
 * `recipe` is one (the file `deno task evopress` writes).
 */
async function recipeMethod(
  file: string,
): Promise<{ id: string; description: string; recipe: Recipe }> {
  let recipe: Recipe;
  try {
    const json = JSON.parse(await Deno.readTextFile(file));
    recipe = json !== null && typeof json === "object" && "recipe" in json ? json.recipe : json;
    validateRecipe(recipe);
  } catch (e) {
    throw new UsageError(`--recipe ${file}: ${(e as Error).message}`);
  }
  if (hasActivationStages(recipe)) {
    throw new UsageError(
      `--recipe ${file}: its 'act' stages quantize activations, which a checkpoint does not ` +
        `hold: this command writes weights only`,
    );
  }
  const n = recipe.overrides?.length ?? 0;
  return { id: "recipe", description: `the recipe of ${file} (${n} module overrides)`, recipe };
}

/** Total bytes of the files a model is read from (part of the journal's fingerprint). */
async function modelBytes(path: string, isDir: boolean): Promise<number> {
  if (!isDir) return (await Deno.stat(path)).size;
  let n = 0;
  for await (const e of Deno.readDir(path)) {
    if (e.isFile && (e.name.endsWith(".safetensors") || e.name === "config.json")) {
      n += (await Deno.stat(`${path}/${e.name}`)).size;
    }
  }
  return n;
}

/** The side files to copy into the output: the tokenizer's folder's, and the model's generation settings. */
async function sideFiles(
  modelDir: string | null,
  tokPath: string,
): Promise<Map<string, string>> {
  const copy = new Map<string, string>();
  const tokInfo = await Deno.stat(tokPath);
  const tokDir = tokInfo.isDirectory ? tokPath : null;
  if (!tokDir && tokPath.endsWith(".json")) copy.set("tokenizer.json", tokPath);
  for (const name of HF_SIDE_FILES) {
    const from = name === "generation_config.json" ? modelDir : tokDir;
    if (from && (await statOrNull(`${from}/${name}`))?.isFile) copy.set(name, `${from}/${name}`);
  }
  return copy;
}

/** Moves the finished output folder to `out` (replacing it when `--force` allowed that). */
async function moveIntoPlace(tmp: string, out: string, partial: string): Promise<void> {
  const existing = await statOrNull(out);
  if (existing && (await isEmptyDir(out))) await Deno.remove(out);
  else if (existing) {
    const aside = `${partial}/replaced`;
    await Deno.remove(aside, { recursive: true }).catch(() => {});
    await Deno.rename(out, aside);
  }
  await Deno.rename(tmp, out);
}

/**
 * Runs a compression as the CLI's flags say.
 *
 * @param args The checked flags.
 * @param log Progress lines and notes (stderr); the progress bar writes to stderr itself.
 * @returns The report.
 * @throws {UsageError} for an output folder in the way, a missing model or
 *   tokenizer, or a journal of other settings; other errors as they come (the
 *   journal stays).
 */
export async function compressCommand(
  args: CompressArgs,
  log: (line: string) => void,
): Promise<CompressReport> {
  const t0 = performance.now();
  const gpu = trackGpuBuffers();
  const method = args.recipeFile === undefined
    ? parseMethodId(args.method)
    : await recipeMethod(args.recipeFile);
  const { out } = args;
  const partial = `${out}.partial`;
  const info = (line: string) => {
    if (!args.quiet) log(line);
  };

  // Everything that can be checked before loading anything.
  const outInfo = await statOrNull(out);
  if (outInfo && !outInfo.isDirectory) throw new UsageError(`--out ${out} is a file, not a folder`);
  if (outInfo && !args.force && !(await isEmptyDir(out))) {
    throw new UsageError(`--out ${out} exists and is not empty: pass --force to replace it`);
  }
  const journalDir = `${partial}/journal`;
  const journalInfo = await statOrNull(journalDir);
  if (journalInfo && !args.resume) {
    if (!args.force) {
      throw new UsageError(
        `${journalDir} holds the journal of an unfinished run: pass --resume to continue it, ` +
          `or --force to start over`,
      );
    }
    await Deno.remove(partial, { recursive: true });
  }
  const modelInfo = await statOrNull(args.model);
  if (!modelInfo) throw new UsageError(`--model ${args.model}: no such file or folder`);
  if ((await Deno.realPath(args.model)) === (outInfo ? await Deno.realPath(out) : null)) {
    throw new UsageError(`--out ${out} is the --model folder`);
  }
  const tokPath = await tokenizerPath(args, modelInfo.isDirectory);
  if (
    !(CALIBRATION_CORPORA as readonly string[]).includes(args.calib) &&
    !(await statOrNull(args.calib))?.isFile
  ) {
    throw new UsageError(
      `--calib ${args.calib} is neither a corpus (${
        CALIBRATION_CORPORA.join(", ")
      }) nor a text file`,
    );
  }

  const tLoad = performance.now();
  const lm: CausalLM = await loadModel(args.model);
  const tokenizer: Tokenizer = await loadTokenizer(tokPath, { vocabSize: lm.config.vocabSize });
  info(
    `model ${args.model}: ${lm.config.family ?? "llama"}, ${
      llamaParameterCount(lm.config).toLocaleString("en-US")
    } parameters, ${lm.blocks.length} blocks; method ${method.id}: ${method.description}`,
  );
  if (args.format === "compressed-tensors") checkGroupsDivide(lm.config, method.recipe, method.id);

  const tCalib = performance.now();
  const maxLength = Math.min(lm.config.seqLen, lm.config.slidingWindow ?? Infinity);
  const calib = await calibrationSet(tokenizer, args.calib, {
    samples: args.calibSamples,
    length: args.calibLen,
    seed: args.seed,
    maxLength,
  });
  for (const note of calib.notes) log(`note: ${note}`);
  info(
    `calibration: ${calib.samples} windows of ${calib.length} tokens from ${calib.source} ` +
      `(${calib.tokens.toLocaleString("en-US")} tokens), seed ${calib.seed}`,
  );

  const tCompress = performance.now();
  const fingerprint = JSON.stringify({
    model: await Deno.realPath(args.model),
    bytes: await modelBytes(args.model, modelInfo.isDirectory),
    method: method.id,
    ...(args.recipeFile !== undefined ? { recipe: method.recipe } : {}),
    calibration: {
      source: (await statOrNull(calib.source))?.isFile
        ? await Deno.realPath(calib.source)
        : calib.source,
      samples: calib.samples,
      length: calib.length,
      seed: calib.seed,
      tokenizer: await Deno.realPath(tokPath),
    },
  });
  let journal: Journal;
  try {
    journal = await openJournal(journalDir, fingerprint);
  } catch (e) {
    if (!/other settings/.test((e as Error).message)) throw e;
    throw new UsageError(
      `--resume: ${journalDir} is the journal of a run with another model, method or ` +
        `calibration; pass --force without --resume to start over`,
    );
  }
  const completed: Map<string, CompressedLinear> = args.resume
    ? await journal.completed(method.id)
    : new Map();
  if (args.resume) {
    info(
      completed.size > 0
        ? `resuming after ${completed.size} finished modules from ${journalDir}`
        : `nothing to resume in ${journalDir}: starting from the first block`,
    );
  }
  const stopEnv = Deno.env.get("LLMC_COMPRESS_STOP_AFTER_BLOCK");
  const stopAfter = stopEnv === undefined ? null : Number(stopEnv);
  const bar = progressBar(!args.quiet);
  // A block's journal file is written while the pipeline goes on with the
  // next block (one write in flight: the next block's waits for it, and so
  // does the end of the run); a failed write stops the run there.
  let saving: Promise<void> = Promise.resolve();
  let run: CompressRunResult;
  try {
    run = await compressRun(lm, calib.windows, method.recipe, {
      backend: args.backend,
      // The journal has every finished block: the host keeps one at a time.
      keepModules: false,
      ...(args.gpuMemoryBytes !== undefined ? { gpuMemoryBytes: args.gpuMemoryBytes } : {}),
      completed,
      onProgress: (p) => {
        const where = p.block < p.blocks ? `block ${p.block + 1}/${p.blocks}` : "head";
        bar.update(p.fraction, `${where} ${p.phase}${p.module ? ` ${p.module}` : ""}`);
      },
      onBlockDone: async (block, modules) => {
        await saving;
        saving = journal.saveBlock(method.id, block, modules);
        saving.catch(() => {}); // awaited (and thrown) by the next block or the end
        if (block === stopAfter) {
          await saving;
          throw new Error(
            `stopped after block ${block} as LLMC_COMPRESS_STOP_AFTER_BLOCK asks (for tests)`,
          );
        }
      },
    });
    await saving;
  } catch (e) {
    // The blocks finished before the failure are in the journal.
    await saving.catch(() => {});
    bar.done();
    throw new Error(
      `${(e as Error).message}\n${journalDir} keeps the finished blocks: the same command with ` +
        `--resume continues after them`,
      { cause: e },
    );
  }
  bar.done();
  for (const note of run.notes) log(`note: ${note}`);
  // Every module, read back from the journal (a quantized one holds its
  // codes; its weight is dequantized when read), with the layer errors that
  // data-free stages leave out measured now.
  const modules = measureLayerErrors(lm, calib.windows, await journal.completed(method.id));

  const tWrite = performance.now();
  const tmp = `${partial}/output`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  try {
    const config = modelInfo.isDirectory
      ? JSON.parse(await Deno.readTextFile(`${args.model}/config.json`)) as Record<string, unknown>
      : undefined;
    await writeCheckpoint(lm.model, modules, tmp, {
      format: args.format,
      dtype: args.dtype,
      checkpointFormat: args.checkpointFormat,
      ...(config ? { config } : {}),
      copy: await sideFiles(modelInfo.isDirectory ? args.model : null, tokPath),
      tokenizer,
      metadata: {
        method: method.id,
        recipe: JSON.stringify(method.recipe),
        calibration: JSON.stringify({
          source: calib.source,
          samples: calib.samples,
          length: calib.length,
          seed: calib.seed,
        }),
      },
    });
    await moveIntoPlace(tmp, out, partial);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    const message = (e as Error).message;
    const flag = /"gptq_v2" stores it/.test(message) ? " and --checkpoint-format gptq_v2" : "";
    throw new Error(
      `${message}\n${journalDir} keeps every compressed block: the same command with ` +
        `--resume${flag} (output flags may change) writes the folder without compressing again`,
      { cause: e },
    );
  }
  await Deno.remove(partial, { recursive: true });
  const tEnd = performance.now();
  info(
    `wrote ${out} (${
      args.format === "dense"
        ? `dense ${args.dtype}`
        : args.format === "gptq"
        ? `GPTQ, checkpoint_format ${args.checkpointFormat}`
        : "compressed-tensors pack-quantized"
    } Hugging Face folder)`,
  );

  const s = (a: number, b: number) => (b - a) / 1000;
  return {
    model: args.model,
    method: method.id,
    out,
    format: args.format,
    calibration: {
      source: calib.source,
      samples: calib.samples,
      length: calib.length,
      seed: calib.seed,
      tokens: calib.tokens,
      tokenizer: tokPath,
    },
    modules: [...modules.values()].map((m) => ({
      name: m.name,
      layerError: Number.isFinite(m.layerError) ? m.layerError : null,
      bits: m.bitsPerWeight,
      density: m.density,
      seconds: m.seconds,
    })),
    bitsPerWeight: run.bitsPerWeight,
    resumedModules: run.resumed,
    seconds: {
      load: s(tLoad, tCalib),
      calibration: s(tCalib, tCompress),
      compress: s(tCompress, tWrite),
      write: s(tWrite, tEnd),
      total: s(t0, tEnd),
      pipeline: run.phases,
    },
    memory: { hostPeakBytes: hostPeakBytes(), gpuPeakBytes: gpu.peakBytes() },
  };
}
