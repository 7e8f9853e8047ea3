/**
 * Helpers of the compress CLI's tests: running the CLI in a subprocess, a
 * seeded calibration text in a temporary folder, the common flags.
 *
 * @module
 */

import { prng } from "../../core/prng.ts";
import { runScript, type ScriptRun } from "../_helpers.ts";

/** The repository root. */
export const ROOT = new URL("../../", import.meta.url).pathname;
/** The CLI entry point. */
export const CLI = `${ROOT}cli/compress.ts`;
/** The llama fixture folder. */
export const LLAMA = `${ROOT}tests/fixtures/hf/models/llama`;
/** The qwen3 fixture folder. */
export const QWEN3 = `${ROOT}tests/fixtures/hf/models/qwen3`;

/** Runs the CLI with the arguments; its exit status, stdout and stderr. */
export function cli(args: string[], env: Record<string, string> = {}): Promise<ScriptRun> {
  return runScript(CLI, args, env);
}

/** A seeded text of short blank-line-separated documents. */
function calibrationText(): string {
  const words = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "warm",
    "mat",
    "and",
    "dog",
    "ran",
    "home",
    "fast",
  ];
  const rng = prng(7);
  const docs = Array.from(
    { length: 40 },
    () => Array.from({ length: 30 }, () => words[rng.int(words.length)]).join(" ") + ".",
  );
  return docs.join("\n\n") + "\n";
}

/** Runs `fn` in a fresh temporary folder holding `calib.txt`, removed after. */
export async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "llmc-cli-" });
  try {
    await Deno.writeTextFile(`${dir}/calib.txt`, calibrationText());
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Calibration windows and their length in the tests. */
export const SAMPLES = 4, LENGTH = 32;
/** The flags every test run passes: model, calibration, CPU backend, quiet. */
export const common = (dir: string, model = LLAMA, length = LENGTH) => [
  "--model",
  model,
  "--calib",
  `${dir}/calib.txt`,
  "--calib-samples",
  String(SAMPLES),
  "--calib-len",
  String(length),
  "--backend",
  "cpu",
  "--quiet",
];
