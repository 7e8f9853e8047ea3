/**
 * The command-line demo: compresses a real Llama model (stories260K by
 * default, llama5M with `--llama5m`) layer by layer with each method of a set
 * (RTN, GPTQ, rotations, HIGGS, SparseGPT, Wanda, magnitude, ...), measures
 * the perplexity of every result on held-out text, and prints one table:
 * method, bits per weight, size, perplexity per text (with the number of
 * tokens scored), seconds. It also writes an SVG plot of perplexity against
 * bits per weight.
 *
 * Without a model file (no `--model`, nothing under the data root, and no
 * network to fetch stories260K once into a cache), it says so and runs a
 * layer-level demo on seeded synthetic layers instead.
 *
 * Run `deno run -A examples/demo.ts --help` for the flags. Uses the `Deno`
 * namespace.
 *
 * @module
 */

import { dataRoot, quietGpuProbe } from "./data.ts";
import {
  cpuOnlyFeature,
  hfConfig,
  llamaCompressible,
  type LlamaModel,
  llamaParameterCount,
  loadHfLlama,
  loadLlama2c,
  loadTokenizer,
  meanActivationBits,
  meanKvCacheBits,
  perplexityGpu,
  perplexityPool,
  type PerplexityResult,
  toHfTensors,
  type Tokenizer,
  webgpuForwardFeature,
  withActivationQuant,
  withCompressedWeights,
  withKvCacheQuant,
} from "../models/mod.ts";
import { transformModel } from "./demo/transform.ts";
import { blankLineBlocks, calibrationWindows, encodeDocs, loadCorpus } from "./datasets.ts";
import type { CorpusName } from "./datasets.ts";
import { resolveBackend } from "../kernels/backend.ts";
import { compressModel } from "../pipeline/compress_model.ts";
import type { CompressedLinear } from "../pipeline/compress_linear.ts";
import { writeSafetensors } from "../core/safetensors_file.ts";
import { tensor } from "../core/tensor.ts";
import type { Tensor } from "../core/tensor.ts";
import { compressedToTensors } from "../quantizers/serialize.ts";
import type { StoredWeight } from "../quantizers/serialize.ts";
import { formatMethodList, selectMethods } from "./demo/methods.ts";
import type { DemoMethod } from "./demo/methods.ts";
import { formatTable, perplexitySvg, progressBar } from "./demo/report.ts";
import type { DemoRow } from "./demo/report.ts";
import { openJournal } from "./demo/journal.ts";
import type { Journal } from "./demo/journal.ts";
import { syntheticLayers, syntheticRow } from "./demo/synthetic.ts";

const HELP = `Usage: deno run -A examples/demo.ts [flags]

Model and data
  --model PATH|stories260K|llama5M  llama2.c .bin file or Hugging Face folder (default stories260K
                            from the data root $LLMC_DATA, else ../shared/data, else a cached download)
  --llama5m                 same as --model llama5M
  --tokenizer PATH          llama2.c tokenizer .bin, or a Hugging Face folder with tokenizer.json
                            (or tokenizer.bin / tok*.bin) (default: tok512.bin beside stories260K,
                            or the --model folder)
  --calib LIST              calibration texts, windows split evenly: tinystories (first 60% of its
                            blocks), c4 (docs 0-1799) or text files (default tinystories; for
                            llama5M c4,tinystories)
  --calib-samples N         calibration windows (default 32)
  --calib-len N             tokens per calibration window (default 256)
  --eval LIST               comma-separated: tinystories (last 40% of blocks), wikitext2 (test),
                            c4 (docs 1800-1999), or text files (default tinystories,wikitext2)
  --eval-tokens N           tokens scored per text (default 8192)
  --full                    score every token of each evaluation text
  --seq-len N               evaluation window (default 256)
  --no-true-sequential      compress all linears of a block from the uncompressed block's inputs
  --seed N                  seed of the calibration windows and rotations (default 0)

Methods and output
  --methods LIST            (or --method) comma-separated method ids (named ones, or built from a
                            pattern such as gptq-w4-g128 or sparsegpt-2:4), "default" or "all"
                            (see --list)
  --list                    print the methods and exit
  --json                    print one JSON array of rows to stdout (the table goes to stderr)
  --out PATH                write each compressed model, dense float32, as HF-named safetensors
                            (PATH itself for one method, else PATH with .<method> before .safetensors)
  --out-format F            dense (HF names, float32) or packed (uniform-grid codes bit-packed,
                            AQLM codes and codebooks; other layers dense; llama2.c-style names)
  --resume DIR              journal folder: finished methods and blocks are kept there, and a rerun
                            continues from the last finished block
  --plot PATH               SVG plot of perplexity vs bits per weight (default out/ppl_vs_bits.svg)
  --no-plot                 do not write the plot
  --workers N               perplexity worker threads (default: the number of CPU cores)
  --backend B               perplexity on auto (WebGPU on a hardware adapter, else CPU workers),
                            cpu, or webgpu (any adapter)
  --synthetic               run the layer-level demo on synthetic layers
  --quiet                   no progress bar
  --help                    this text
`;

interface Args {
  model: string;
  tokenizer?: string;
  calib: string | null;
  calibSamples: number;
  calibLen: number;
  eval: string[];
  evalTokens: number;
  seqLen: number;
  seed: number;
  methods: string[];
  json: boolean;
  out?: string;
  outFormat: "dense" | "packed";
  resume?: string;
  plot: string | null;
  workers: number;
  backend: "auto" | "cpu" | "webgpu";
  synthetic: boolean;
  trueSequential: boolean;
  quiet: boolean;
}

function parseArgs(argv: readonly string[]): Args | null {
  const a: Args = {
    model: "stories260K",
    calib: null,
    calibSamples: 32,
    calibLen: 256,
    eval: ["tinystories", "wikitext2"],
    evalTokens: 8192,
    seqLen: 256,
    seed: 0,
    methods: ["default"],
    json: false,
    outFormat: "dense",
    plot: "out/ppl_vs_bits.svg",
    workers: navigator.hardwareConcurrency ?? 2,
    backend: "auto",
    synthetic: false,
    trueSequential: true,
    quiet: false,
  };
  const int = (flag: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) {
      throw new RangeError(
        `${flag} needs an integer ≥ ${min}: got ${v === undefined ? "nothing" : `'${v}'`}`,
      );
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i]!.includes("=")
      ? argv[i]!.split(/=(.*)/s, 2)
      : [argv[i]!, undefined];
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new RangeError(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case "--help":
      case "-h":
        console.log(HELP);
        return null;
      case "--list":
        console.log(formatMethodList());
        return null;
      case "--model":
        a.model = value();
        break;
      case "--llama5m":
        a.model = "llama5M";
        break;
      case "--tokenizer":
        a.tokenizer = value();
        break;
      case "--calib":
        a.calib = value();
        break;
      case "--calib-samples":
        a.calibSamples = int(flag, value(), 1);
        break;
      case "--calib-len":
        a.calibLen = int(flag, value(), 2);
        break;
      case "--eval":
        a.eval = value().split(",").filter((s) => s.length > 0);
        break;
      case "--eval-tokens":
        a.evalTokens = int(flag, value(), 2);
        break;
      case "--full":
        a.evalTokens = Infinity;
        break;
      case "--seq-len":
        a.seqLen = int(flag, value(), 1);
        break;
      case "--seed":
        a.seed = int(flag, value(), 0);
        break;
      case "--methods":
      case "--method":
        a.methods = value().split(",").filter((s) => s.length > 0);
        break;
      case "--json":
        a.json = true;
        break;
      case "--out":
        a.out = value();
        break;
      case "--out-format": {
        const f = value();
        if (f !== "dense" && f !== "packed") {
          throw new RangeError(`--out-format must be dense or packed: got '${f}'`);
        }
        a.outFormat = f;
        break;
      }
      case "--resume":
        a.resume = value();
        break;
      case "--plot":
        a.plot = value();
        break;
      case "--no-plot":
        a.plot = null;
        break;
      case "--workers":
        a.workers = int(flag, value(), 1);
        break;
      case "--backend": {
        const b = value();
        if (b !== "auto" && b !== "cpu" && b !== "webgpu") {
          throw new RangeError(`--backend must be auto, cpu or webgpu: got '${b}'`);
        }
        a.backend = b;
        break;
      }
      case "--no-true-sequential":
        a.trueSequential = false;
        break;
      case "--synthetic":
        a.synthetic = true;
        break;
      case "--quiet":
        a.quiet = true;
        break;
      default:
        throw new RangeError(`Unknown flag '${flag}' (see --help)`);
    }
  }
  return a;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

const STORIES = {
  base: "https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K",
  files: {
    "stories260K.bin": "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696",
    "tok512.bin": "037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312",
  } as Record<string, string>,
};

function cacheDir(): string {
  const home = Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE") ?? ".";
  return Deno.env.get("LLMC_CACHE") ??
    `${Deno.env.get("XDG_CACHE_HOME") ?? `${home}/.cache`}/llmcompress`;
}

async function sha256(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** stories260K from the cache, downloading it once (sha256-checked); null when offline. */
async function cachedStories(log: (s: string) => void): Promise<string | null> {
  const dir = `${cacheDir()}/stories260K`;
  for (const [name, hash] of Object.entries(STORIES.files)) {
    const path = `${dir}/${name}`;
    if (await exists(path)) continue;
    try {
      log(`downloading ${STORIES.base}/${name} into ${dir} (once)`);
      const res = await fetch(`${STORIES.base}/${name}`, { signal: AbortSignal.timeout(30_000) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const bytes = new Uint8Array(await res.arrayBuffer());
      const got = await sha256(bytes);
      if (got !== hash) throw new Error(`sha256 ${got} differs from the published ${hash}`);
      await Deno.mkdir(dir, { recursive: true });
      const tmp = `${path}.${crypto.randomUUID()}.tmp`;
      await Deno.writeFile(tmp, bytes);
      await Deno.rename(tmp, path);
    } catch (e) {
      log(`could not download ${name}: ${(e as Error).message}`);
      return null;
    }
  }
  return dir;
}

interface Loaded {
  model: LlamaModel;
  modelPath: string;
  tokenizer: Tokenizer;
  tokenizerPath: string;
  name: string;
}

/** The model and tokenizer, or null (with the reason logged) when there is no model file. */
async function loadModel(args: Args, log: (s: string) => void): Promise<Loaded | null> {
  const root = dataRoot();
  let modelPath: string | null = null, name = args.model;
  let tokDefault: string | null = `${root}/stories260K/tok512.bin`;
  if (args.model === "stories260K" || args.model === "llama5M") {
    const rel = args.model === "stories260K"
      ? "stories260K/stories260K.bin"
      : "llama5M/llama5M.bin";
    if (await exists(`${root}/${rel}`)) modelPath = `${root}/${rel}`;
    else if (args.model === "stories260K") {
      const dir = await cachedStories(log);
      if (dir) {
        modelPath = `${dir}/stories260K.bin`;
        if (!(await exists(tokDefault))) tokDefault = `${dir}/tok512.bin`;
      }
    }
    if (!modelPath) {
      log(
        `no model file: ${root}/${rel} is absent` +
          (args.model === "stories260K" ? " and it could not be downloaded (offline?)" : "") +
          ` (set LLMC_DATA to the shared data folder, or pass --model)`,
      );
      return null;
    }
  } else {
    modelPath = args.model;
    name = modelPath.replace(/\/+$/, "").split("/").pop()!;
  }
  const info = await Deno.stat(modelPath);
  const model = info.isDirectory ? await loadHfLlama(modelPath) : await loadLlama2c(modelPath);
  let tokPath: string | null = args.tokenizer ?? (info.isDirectory ? modelPath : tokDefault);
  const vocabSize = model.config.vocabSize;
  if (tokPath && (await Deno.stat(tokPath).catch(() => null))?.isDirectory) {
    const dir = tokPath;
    if (await exists(`${dir}/tokenizer.json`)) {
      const tokenizer = await loadTokenizer(dir, { vocabSize });
      return { model, modelPath, tokenizer, tokenizerPath: `${dir}/tokenizer.json`, name };
    }
    tokPath = null;
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && /^(tokenizer|tok\d*)\.bin$/.test(e.name)) tokPath = `${dir}/${e.name}`;
    }
    if (!tokPath) {
      throw new Error(
        `${dir}: no tokenizer.json or llama2.c tokenizer (tokenizer.bin, tok*.bin) in the folder; ` +
          `pass --tokenizer FILE`,
      );
    }
  }
  if (!tokPath || !(await exists(tokPath))) {
    throw new Error(`no tokenizer: ${tokPath ?? "none given"} is absent; pass --tokenizer FILE`);
  }
  const tokenizer = await loadTokenizer(tokPath, { vocabSize });
  return { model, modelPath, tokenizer, tokenizerPath: tokPath, name };
}

const CORPORA = new Set<string>(["tinystories", "wikitext2", "c4"]);
const CORPUS_FILES: Record<string, string> = {
  tinystories: "text/tinystories_val_sample.txt",
  wikitext2: "text/wikitext2_test.raw",
  c4: "text/c4_validation_2k.jsonl",
};

/** Named corpora whose file is absent from the data root. */
async function missingCorpora(specs: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const s of new Set(specs)) {
    if (CORPORA.has(s) && !(await exists(`${dataRoot()}/${CORPUS_FILES[s]}`))) out.push(s);
  }
  return out;
}

function calibSpecOf(args: Args, name: string): string {
  // stories260K was trained on TinyStories; llama5M on C4, TinyStories and Shakespeare.
  return args.calib ?? (name === "llama5M" ? "c4,tinystories" : "tinystories");
}

async function textDocs(
  spec: string,
  split: "eval" | "calib",
): Promise<{ name: string; docs: string[] }> {
  if (CORPORA.has(spec)) {
    const c = await loadCorpus(spec as CorpusName, split);
    if (!c) throw new Error(`the ${spec} text is absent from the data root ${dataRoot()}`);
    return { name: spec, docs: [...c.docs] };
  }
  const text = await Deno.readTextFile(spec);
  return { name: spec.split("/").pop()!, docs: blankLineBlocks(text) };
}

function linearNumel(model: LlamaModel): number {
  let n = 0;
  for (const l of model.layers) {
    for (const w of [l.wq, l.wk, l.wv, l.wo, l.w1, l.w2, l.w3]) n += w.data.length;
  }
  return n;
}

/**
 * The packed file's tensors: quantized linears through `compressedToTensors`
 * (codes bit-packed), everything else float32 under llama2.c-style names.
 */
function packedTensors(
  model: LlamaModel,
  modules: ReadonlyMap<string, CompressedLinear>,
): { tensors: Map<string, Tensor>; metadata: Record<string, string>; packed: number } {
  const tensors = new Map<string, Tensor>();
  const dim = model.config.dim;
  tensors.set("tok_embeddings.weight", model.tokenEmbedding);
  const stored = new Map<string, StoredWeight>();
  model.layers.forEach((layer, i) => {
    tensors.set(`layers.${i}.attention_norm.weight`, tensor("f32", [dim], layer.attnNorm));
    tensors.set(`layers.${i}.ffn_norm.weight`, tensor("f32", [dim], layer.ffnNorm));
    for (const n of ["wq", "wk", "wv", "wo", "w1", "w2", "w3"] as const) {
      const name = `layers.${i}.${n}`, m = modules.get(name);
      const q = m?.quantized;
      // Rotated layers hold codes in the rotated basis, and a low-rank correction
      // (eora, svd) adds B·A to the codes' weight: both are stored dense here.
      const dense = m?.stages.some((k) => k === "rotate" || k === "eora" || k === "svd");
      if (m && q && (q.kind === "uniform" || q.kind === "aqlm") && !dense) {
        stored.set(name, q);
      } else tensors.set(`${name}.weight`, m?.weight ?? layer[n]);
    }
  });
  tensors.set("norm.weight", tensor("f32", [dim], model.finalNorm));
  if (model.classifier !== model.tokenEmbedding) tensors.set("output.weight", model.classifier);
  const c = compressedToTensors(stored);
  for (const [k, t] of c.tensors) tensors.set(k, t);
  return { tensors, metadata: c.metadata, packed: stored.size };
}

function outPath(base: string, method: string, several: boolean): string {
  if (!several) return base;
  const m = /\.safetensors$/.exec(base);
  return m ? `${base.slice(0, m.index)}.${method}.safetensors` : `${base}.${method}.safetensors`;
}

async function runSynthetic(
  args: Args,
  methods: DemoMethod[],
  log: (s: string) => void,
): Promise<DemoRow[]> {
  log(
    "running the LAYER-LEVEL demo on seeded synthetic layers (not a language model): " +
      "methods are compared by relative layer error ‖(W − Ŵ)X‖² / ‖WX‖²",
  );
  const layers = syntheticLayers(args.seed);
  const bar = progressBar(!args.quiet);
  const rows: DemoRow[] = [];
  for (const [i, m] of methods.entries()) {
    bar.update(i / methods.length, m.id);
    rows.push(await syntheticRow(layers, m));
  }
  bar.done();
  return rows;
}

async function main(): Promise<void> {
  const args = parseArgs(Deno.args);
  if (!args) return;
  const log = (s: string) => console.error(s);
  const methods = selectMethods(args.methods);
  const t0 = performance.now();
  let loaded = args.synthetic ? null : await loadModel(args, log);
  if (loaded) {
    const specs = [...args.eval, ...calibSpecOf(args, loaded.name).split(",")];
    const missing = await missingCorpora(specs);
    if (missing.length > 0) {
      log(
        `no ${
          missing.join(", ")
        } text under ${dataRoot()} (set LLMC_DATA, or pass --eval/--calib ` +
          `text files): no language-model evaluation possible`,
      );
      loaded = null;
    }
  }
  if (!loaded) {
    const rows = await runSynthetic(args, methods, log);
    const table = formatTable(rows, ["synthetic layers"], "rel. layer error,");
    if (args.json) {
      console.error(table);
      console.log(
        JSON.stringify(rows.map((r) => ({ ...r, perplexity: null, layerError: r.layerError }))),
      );
    } else console.log(table);
    log(
      `layer-level demo: ${rows.length} methods in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s`,
    );
    return;
  }
  const { model, tokenizer, name } = loaded;
  log(
    `model ${name}: ${loaded.modelPath} (${
      llamaParameterCount(model.config).toLocaleString("en-US")
    } parameters)`,
  );

  // Data: calibration and evaluation never share tokens (held-out splits of SOURCES.md).
  const evalTexts = await Promise.all(args.eval.map((s) => textDocs(s, "eval")));
  const streams = evalTexts.map((t) => ({
    name: t.name,
    ids: encodeDocs(tokenizer, t.docs, args.evalTokens),
  }));
  const calibSpec = calibSpecOf(args, name);
  const calibNames = calibSpec.split(",").filter((c) => c.length > 0);
  if (calibNames.includes("wikitext2")) {
    throw new Error("WikiText-2 test is for evaluation only: calibrate on c4 or tinystories");
  }
  const sameFile = calibNames.find((c) => !CORPORA.has(c) && args.eval.includes(c));
  if (sameFile) {
    throw new Error(
      `${sameFile} is both a calibration and an evaluation text: calibrate on other text ` +
        `(the named corpora tinystories and c4 are split into disjoint parts)`,
    );
  }
  for (const c of calibNames.filter((c) => args.eval.includes(c))) {
    log(`note: ${c} is calibrated on its first part and evaluated on its held-out rest`);
  }
  // Windows split evenly over the calibration texts (the first ones get the remainder).
  const calibration: number[][] = [];
  for (const [i, c] of calibNames.entries()) {
    const text = await textDocs(c, "calib");
    const count = Math.floor(args.calibSamples / calibNames.length) +
      (i < args.calibSamples % calibNames.length ? 1 : 0);
    if (count === 0) continue;
    const stream = encodeDocs(tokenizer, text.docs, Math.max(200_000, count * args.calibLen * 4));
    calibration.push(...calibrationWindows(stream, count, args.calibLen, args.seed + i));
  }
  const calibText = { name: calibNames.join("+") };
  log(
    `calibration: ${args.calibSamples} windows of ${args.calibLen} tokens from ${calibText.name}; ` +
      `evaluation: ${
        streams.map((s) =>
          `${s.name} ${Math.min(s.ids.length, args.evalTokens).toLocaleString("en-US")} tokens`
        ).join(", ")
      }, windows of ${args.seqLen}`,
  );

  const fingerprint = JSON.stringify({
    model: loaded.modelPath,
    bytes: (await Deno.stat(loaded.modelPath)).size,
    calib: [calibSpec, args.calibSamples, args.calibLen, args.seed, args.trueSequential],
    eval: [args.eval, args.evalTokens === Infinity ? "full" : args.evalTokens, args.seqLen],
  });
  const journal: Journal | null = args.resume ? await openJournal(args.resume, fingerprint) : null;

  const pool = perplexityPool(args.workers);
  const gpu = args.backend === "webgpu" ||
    (args.backend === "auto" && (await resolveBackend("auto", "perplexity")) !== null);
  if (gpu) log("perplexity on WebGPU");
  const bar = progressBar(!args.quiet);
  const totalEval =
    streams.reduce((s, x) => s + Math.max(0, Math.min(x.ids.length, args.evalTokens) - 1), 0) *
    methods.length;
  let evalDone = 0, compressDone = 0;
  let label = "";
  const show = () =>
    bar.update(
      0.5 * (compressDone / methods.length) + 0.5 * (evalDone / Math.max(1, totalEval)),
      label,
    );
  const totalParams = llamaParameterCount(model.config), linears = linearNumel(model);
  const pending: Promise<DemoRow>[] = [];

  try {
    for (const [index, method] of methods.entries()) {
      const done = journal?.rows.get(method.id);
      if (done) {
        log(`${method.id}: taken from the journal ${args.resume}`);
        compressDone = index + 1;
        evalDone += totalEval / methods.length;
        pending.push(Promise.resolve(done));
        continue;
      }
      label = `${method.id}: compressing`;
      show();
      const tc = performance.now();
      // SmoothQuant or QuaRot first: the method compresses the transformed model.
      const base = transformModel(model, method.transform, calibration, args.seed);
      let compressed = base, bits = 32, layerError: number | null = null, density = 1;
      let modules: ReadonlyMap<string, CompressedLinear> = new Map();
      if (method.recipe.stages.length > 0) {
        const completed = journal
          ? await journal.completed(method.id)
          : new Map<string, CompressedLinear>();
        if (completed.size > 0) {
          log(`${method.id}: resuming after ${completed.size} finished modules`);
        }
        const res = await compressModel(llamaCompressible(base), calibration, method.recipe, {
          completed,
          trueSequential: args.trueSequential,
          onProgress: (p) => {
            label = `${method.id}: block ${Math.min(p.block + 1, p.blocks)}/${p.blocks} ${p.phase}${
              p.module ? ` ${p.module}` : ""
            }`;
            compressDone = index + p.fraction;
            show();
          },
          onBlockDone: async (b, mods) => {
            if (!journal) return;
            const fresh = mods.filter((m) => !completed.has(m.name));
            if (fresh.length > 0) await journal.saveBlock(method.id, b, fresh);
          },
        });
        // The recipe's activation stages (static scales calibrated on the compressed model).
        compressed = withActivationQuant(withCompressedWeights(base, res.modules), method.recipe, {
          calibration,
          modules: res.modules,
        });
        modules = res.modules;
        bits = res.bitsPerWeight;
        let err = 0, kept = 0, n = 0;
        for (const m of res.modules.values()) {
          if (m.stages.length === 0) continue;
          n += m.weight.data.length;
          err += m.layerError * m.weight.data.length;
          kept += m.density * m.weight.data.length;
        }
        layerError = n > 0 && Number.isFinite(err) ? err / n : null;
        density = n > 0 ? kept / n : 1;
      }
      // A quantized KV cache (CPU forward pass), after the weights and activations.
      if (method.kvCache) compressed = withKvCacheQuant(compressed, method.kvCache);
      const seconds = (performance.now() - tc) / 1000;
      compressDone = index + 1;
      if (args.out && method.recipe.stages.length > 0) {
        const several = methods.filter((m) => m.recipe.stages.length > 0).length > 1;
        const path = outPath(args.out, method.id, several);
        const config = JSON.stringify(
          hfConfig(compressed.config, compressed.classifier === compressed.tokenEmbedding),
        );
        const meta = {
          format: "pt",
          method: method.id,
          recipe: JSON.stringify(method.recipe),
          config,
        };
        let packedNote = "";
        if (args.outFormat === "packed") {
          const p = packedTensors(base, modules);
          await writeSafetensors(path, p.tensors, { ...meta, ...p.metadata });
          packedNote = `, ${p.packed} linears packed`;
        } else await writeSafetensors(path, toHfTensors(compressed), meta);
        const bytes = (await Deno.stat(path)).size;
        log(`${method.id}: wrote ${path} (${bytes.toLocaleString("en-US")} bytes${packedNote})`);
        const cpuOnly = cpuOnlyFeature(compressed);
        if (cpuOnly) log(`${method.id}: note: the file does not hold ${cpuOnly}`);
      }
      const sizeBytes = Math.round(((totalParams - linears) * 32 + bits * linears) / 8);
      const te = performance.now();
      const evals: Promise<PerplexityResult>[] = streams.map((s) => {
        let last = 0;
        const options = {
          seqLen: args.seqLen,
          maxTokens: args.evalTokens,
          onProgress: (scored: number) => {
            evalDone += scored - last;
            last = scored;
            show();
          },
        };
        // Only mismatched activation settings of linears that share a product run on the CPU.
        return gpu && webgpuForwardFeature(compressed) === null
          ? perplexityGpu(compressed, s.ids, { ...options, backend: "webgpu" })
          : pool.evaluate(compressed, s.ids, options);
      });
      pending.push(
        Promise.all(evals).then(async (rs) => {
          const row: DemoRow = {
            method: method.id,
            bitsPerWeight: bits,
            sizeBytes,
            perplexity: Object.fromEntries(rs.map((r, i) => [streams[i]!.name, r.perplexity])),
            tokens: Object.fromEntries(rs.map((r, i) => [streams[i]!.name, r.tokens])),
            seconds,
            evalSeconds: (performance.now() - te) / 1000,
            layerError,
            density,
            bitsPerActivation: meanActivationBits(compressed),
            bitsPerKv: meanKvCacheBits(compressed),
          };
          await journal?.saveRow(row);
          return row;
        }),
      );
      // Keep at most one model being evaluated behind the one being compressed.
      if (pending.length >= 2) await pending[pending.length - 2];
    }
    label = "evaluating";
    const rows = await Promise.all(pending);
    bar.done();
    const texts = streams.map((s) => s.name);
    const table = formatTable(rows, texts);
    const total = (performance.now() - t0) / 1000;
    const footer =
      `${name}, calibration ${args.calibSamples}×${args.calibLen} tokens of ${calibText.name}, ` +
      `bits/weight over the block linears (classifier and embedding kept in float32), ` +
      `size = linears at their bits + the rest in float32; total ${total.toFixed(0)} s`;
    if (args.json) {
      console.error(table + "\n" + footer);
      console.log(JSON.stringify(rows));
    } else console.log(table + "\n\n" + footer);
    if (args.plot) {
      const dir = args.plot.includes("/") ? args.plot.slice(0, args.plot.lastIndexOf("/")) : ".";
      await Deno.mkdir(dir, { recursive: true });
      await Deno.writeTextFile(
        args.plot,
        perplexitySvg(rows, texts, `${name}: perplexity vs bits per weight`),
      );
      log(`plot: ${args.plot}`);
    }
  } finally {
    pool.close();
  }
}

if (import.meta.main) {
  quietGpuProbe();
  try {
    await main();
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
