/**
 * `deno task generate`: greedy generation from a model (a Hugging Face
 * folder or a llama2.c `.bin`), on WebGPU with a KV cache on the GPU or on
 * the CPU.
 *
 * ```sh
 * deno task generate --model path/to/Llama-3.2-1B --prompt "Once upon a time" --max-tokens 64
 * ```
 *
 * The text streams to stdout as it is generated, the timings go to stderr;
 * `--json` prints one report instead. `--help` prints the flags. Exit status
 * 0 when done, 1 when the run failed, 2 for bad flags or a prompt that does
 * not fit. Uses the `Deno` namespace.
 *
 * @module
 */

import { failureStatus, integerFlag, splitFlags, UsageError } from "./_flags.ts";
import { tokenizerBeside } from "./_tokenizer_beside.ts";
import { quietGpuProbe } from "../examples/data.ts";
import type { Backend } from "../kernels/backend.ts";
import { loadModel } from "../models/causal_lm.ts";
import { decodeSession, type GenerateResult } from "../models/generate.ts";
import { loadTokenizer, type Tokenizer } from "../models/tokenizer.ts";

/** The usage text (`--help`). */
export const GENERATE_USAGE = `Usage: deno task generate --model PATH --prompt TEXT [flags]

Greedy generation; on WebGPU the weights and a KV cache stay on the GPU.

Required
  --model PATH            Hugging Face folder (config.json, safetensors, tokenizer.json) or
                          llama2.c .bin file
  --prompt TEXT           the prompt, encoded by the model's tokenizer (with the BOS token when
                          the tokenizer adds one by itself)

Flags
  --max-tokens N          tokens to generate (default 64); prompt + N must fit the model's context
  --backend B             auto (WebGPU on a hardware adapter, else the CPU), cpu, or webgpu (any
                          adapter) (default auto)
  --weights T             storage of the dense weights on the GPU: f16 or f32 (default f16)
  --tokenizer PATH        tokenizer (default: the model folder's; for a .bin model, tokenizer.bin
                          or the tok*.bin beside it)
  --in-flight N           decode steps queued before the first is read back (default 64)
  --steps-per-submission N
                          decode steps recorded into one submission, their tokens read back
                          together (default 8)
  --ignore-eos            do not stop at the tokenizer's end-of-sequence token
  --profile               time each step's phases on the GPU (timestamp queries; one step in
                          flight, so tokens/s is lower)
  --json                  print one JSON report on stdout (no streamed text)
  --help                  this text

Exit status: 0 done, 1 failed, 2 bad flags or a prompt that does not fit.
`;

/** The checked flags. */
export interface GenerateArgs {
  readonly model: string;
  readonly prompt: string;
  readonly maxTokens: number;
  readonly backend: Backend;
  readonly weights: "f16" | "f32";
  readonly tokenizer?: string;
  readonly inFlight: number;
  readonly stepsPerSubmission: number;
  readonly ignoreEos: boolean;
  readonly profile: boolean;
  readonly json: boolean;
}

const VALUE_FLAGS = [
  "--model",
  "--prompt",
  "--max-tokens",
  "--backend",
  "--weights",
  "--tokenizer",
  "--in-flight",
  "--steps-per-submission",
];
const SWITCHES = ["--ignore-eos", "--profile", "--json", "--help", "-h"];

/**
 * Parses and checks the command line.
 *
 * @param argv The arguments; `--flag value` or `--flag=value`.
 * @returns The flags, or null for `--help`.
 * @throws {UsageError} naming the flag and the value at fault.
 */
export function parseGenerateArgs(argv: readonly string[]): GenerateArgs | null {
  const { values, switches } = splitFlags(argv, VALUE_FLAGS, SWITCHES);
  if (switches.has("--help") || switches.has("-h")) return null;
  const missing = ["--model", "--prompt"].filter((f) => !values.has(f));
  if (missing.length > 0) throw new UsageError(`Missing ${missing.join(", ")}`);
  const prompt = values.get("--prompt")!;
  if (prompt === "") throw new UsageError("--prompt is empty");
  const backend = values.get("--backend") ?? "auto";
  if (backend !== "auto" && backend !== "cpu" && backend !== "webgpu") {
    throw new UsageError(`--backend must be auto, cpu or webgpu: got '${backend}'`);
  }
  const weights = values.get("--weights") ?? "f16";
  if (weights !== "f16" && weights !== "f32") {
    throw new UsageError(`--weights must be f16 or f32: got '${weights}'`);
  }
  const tokenizer = values.get("--tokenizer");
  return {
    model: values.get("--model")!,
    prompt,
    maxTokens: integerFlag("--max-tokens", values.get("--max-tokens") ?? "64", 1),
    backend,
    weights,
    ...(tokenizer !== undefined ? { tokenizer } : {}),
    inFlight: integerFlag("--in-flight", values.get("--in-flight") ?? "64", 1),
    stepsPerSubmission: integerFlag(
      "--steps-per-submission",
      values.get("--steps-per-submission") ?? "8",
      1,
    ),
    ignoreEos: switches.has("--ignore-eos"),
    profile: switches.has("--profile"),
    json: switches.has("--json"),
  };
}

/** The tokenizer of a model: `--tokenizer`, the model folder, or the .bin's neighbour. */
async function tokenizerPath(args: GenerateArgs): Promise<string> {
  if (args.tokenizer !== undefined) return args.tokenizer;
  if (!args.model.endsWith(".bin")) return args.model;
  const { found, path } = await tokenizerBeside(args.model);
  if (path === null) {
    throw new UsageError(
      `--model ${args.model} is a llama2.c file without one tokenizer beside it ` +
        `(found ${
          found.length === 0 ? "none" : [...found].sort().join(", ")
        }): pass --tokenizer PATH`,
    );
  }
  return path;
}

/**
 * Text of generated ids; an id the tokenizer lacks (some families pad the
 * embedding past the tokenizer's ids) shows as `<id>`.
 */
function decodeText(tok: Tokenizer, ids: readonly number[]): string {
  let text = "", run: number[] = [];
  for (const id of [...ids, -1]) {
    if (id >= 0 && id < tok.vocabSize) {
      run.push(id);
      continue;
    }
    text += tok.decode(run);
    run = [];
    if (id >= 0) text += `<${id}>`;
  }
  return text;
}

/** The JSON report of a run. */
export interface GenerateReport extends GenerateResult {
  readonly model: string;
  readonly backend: "cpu" | "webgpu";
  readonly weights: "f16" | "f32";
  readonly prompt: string;
  readonly text: string;
  readonly loadSeconds: number;
}

/**
 * Loads the model and its tokenizer and generates.
 *
 * @param args The flags.
 * @param write Receives the text as it is generated (not with `--json`).
 * @returns The report.
 * @throws {UsageError} for a prompt that is empty once encoded or does not fit.
 */
export async function generateCommand(
  args: GenerateArgs,
  write: (text: string) => void,
): Promise<GenerateReport> {
  const t0 = performance.now();
  const lm = await loadModel(args.model);
  const tok = await loadTokenizer(await tokenizerPath(args), { vocabSize: lm.config.vocabSize });
  const ids = tok.encode(args.prompt);
  if (ids.length === 0) throw new UsageError("--prompt encodes to no tokens");
  const total = ids.length + args.maxTokens;
  if (total > lm.config.seqLen) {
    throw new UsageError(
      `--max-tokens ${args.maxTokens}: the prompt's ${ids.length} tokens and ${args.maxTokens} ` +
        `new ones exceed the model's context of ${lm.config.seqLen}`,
    );
  }
  const session = await decodeSession(lm.model, {
    backend: args.backend,
    weights: args.weights,
    maxTokens: total,
  });
  const loadSeconds = (performance.now() - t0) / 1000;
  try {
    const stop = args.ignoreEos || tok.eos === undefined ? [] : [tok.eos];
    const generated: number[] = [];
    let shown = "";
    const result = await session.generate(ids, {
      maxNewTokens: args.maxTokens,
      stop,
      inFlight: args.inFlight,
      stepsPerSubmission: args.stepsPerSubmission,
      profile: args.profile,
      onToken: (id) => {
        if (args.json) return;
        generated.push(id);
        // Decode the whole continuation: a character may span several tokens.
        const text = decodeText(tok, generated);
        if (text.startsWith(shown)) write(text.slice(shown.length));
        shown = text;
      },
    });
    return {
      model: args.model,
      backend: session.backend,
      weights: args.weights,
      prompt: args.prompt,
      text: decodeText(tok, result.tokens),
      loadSeconds,
      ...result,
    };
  } finally {
    session.dispose();
  }
}

/**
 * Runs the command line.
 *
 * @param argv The arguments.
 * @returns The exit status.
 */
export async function main(argv: readonly string[]): Promise<number> {
  const encoder = new TextEncoder();
  try {
    const args = parseGenerateArgs(argv);
    if (args === null) {
      console.log(GENERATE_USAGE);
      return 0;
    }
    const report = await generateCommand(args, (s) => Deno.stdout.writeSync(encoder.encode(s)));
    if (args.json) console.log(JSON.stringify(report));
    else {
      console.log();
      const gpu = report.gpu
        ? `; GPU ${(report.gpu.stepSeconds * 1e3).toFixed(3)} ms per step`
        : "";
      console.error(
        `${report.tokens.length} tokens (${report.finishReason}) on ${report.backend}` +
          `${report.backend === "webgpu" ? ` (${report.weights} weights)` : ""}: ` +
          `prompt of ${report.promptTokens} in ${report.prefillSeconds.toFixed(3)} s, then ` +
          `${report.tokensPerSecond.toFixed(1)} tokens/s${gpu}; load ${
            report.loadSeconds.toFixed(1)
          } s`,
      );
    }
    return 0;
  } catch (e) {
    return failureStatus(e, "generate");
  }
}

if (import.meta.main) {
  quietGpuProbe();
  Deno.exit(await main(Deno.args));
}
