/**
 * Real-activation setup shared by the tests that compress stories260K's
 * linear layers: the model, its tokenizer and the TinyStories sample, and
 * the capture of each linear layer's inputs on a few stories. Reads the
 * shared data with `Deno` file APIs.
 *
 * @module
 */

import { dataFile } from "./_helpers.ts";
import { type CapturedInputs, captureLinearInputs } from "../models/capture.ts";
import { loadLlama2c } from "../models/llama2c.ts";
import type { LlamaModel } from "../models/model.ts";
import { type Llama2cTokenizer, loadLlama2cTokenizer } from "../models/llama2c_tokenizer.ts";

/** stories260K with its tokenizer and the stories of the TinyStories sample. */
export interface Stories260K {
  /** The model. */
  readonly model: LlamaModel;
  /** Its 512-piece tokenizer. */
  readonly tok: Llama2cTokenizer;
  /** The sample's stories, split at blank lines, in file order. */
  readonly stories: string[];
}

/**
 * Loads stories260K, its tokenizer and the TinyStories sample.
 *
 * @returns The setup, or null (each missing file's reason printed) when the shared data is absent.
 */
export async function loadStories260K(): Promise<Stories260K | null> {
  const modelPath = dataFile("stories260K/stories260K.bin");
  const tokPath = dataFile("stories260K/tok512.bin");
  const textPath = dataFile("text/tinystories_val_sample.txt");
  if (!modelPath || !tokPath || !textPath) return null;
  const model = await loadLlama2c(modelPath);
  const tok = await loadLlama2cTokenizer(tokPath, { vocabSize: model.config.vocabSize });
  const stories = (await Deno.readTextFile(textPath)).split(/\n\s*\n/);
  return { model, tok, stories };
}

/**
 * The inputs of every linear layer of the model, captured on the first
 * `tokens` tokens (BOS first) of each story.
 *
 * @param setup The model and tokenizer.
 * @param stories One sequence per story.
 * @param tokens Tokens kept per story.
 * @returns The inputs per layer and linear.
 */
export function captureStories(
  setup: Stories260K,
  stories: readonly string[],
  tokens = 128,
): CapturedInputs {
  const sequences = stories.map((s) => setup.tok.encode(s, { bos: true }).slice(0, tokens));
  return captureLinearInputs(setup.model, sequences);
}
