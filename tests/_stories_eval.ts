/**
 * stories260K with held-out TinyStories tokens and calibration windows from
 * the corpus's disjoint first part, for tests that measure perplexity on a
 * real model. Reads the data root (`$LLMC_DATA`).
 *
 * @module
 */
import { dataFile } from "./_helpers.ts";
import { loadLlama2c } from "../models/llama2c.ts";
import { loadLlama2cTokenizer } from "../models/llama2c_tokenizer.ts";
import { calibrationWindows, encodeDocs, loadCorpus } from "../examples/datasets.ts";
import type { LlamaModel } from "../models/model.ts";

/** The model, its evaluation tokens and its calibration windows. */
export interface StoriesEval {
  readonly model: LlamaModel;
  readonly evalIds: number[];
  readonly calib: number[][];
}

/**
 * stories260K, `evalTokens` held-out TinyStories tokens and 16 calibration
 * windows of 256 tokens, or null where the data root lacks them (the caller
 * skips).
 *
 * @param evalTokens Evaluation tokens.
 * @returns The setup, or null.
 */
export async function storiesEval(evalTokens: number): Promise<StoriesEval | null> {
  const modelPath = dataFile("stories260K/stories260K.bin");
  const tokPath = dataFile("stories260K/tok512.bin");
  if (!modelPath || !tokPath) return null;
  const evalCorpus = await loadCorpus("tinystories", "eval");
  const calibCorpus = await loadCorpus("tinystories", "calib");
  if (!evalCorpus || !calibCorpus) return null;
  const model = await loadLlama2c(modelPath);
  const tok = await loadLlama2cTokenizer(tokPath, { vocabSize: 512 });
  const evalIds = encodeDocs(tok, evalCorpus.docs, evalTokens);
  const calib = calibrationWindows(encodeDocs(tok, calibCorpus.docs, 60_000), 16, 256, 0);
  return { model, evalIds, calib };
}
