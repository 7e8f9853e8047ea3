/**
 * The evaluation and calibration texts of ../shared/data, split the way
 * SOURCES.md prescribes so that calibration never sees evaluation tokens:
 * TinyStories blocks (blank-line separated): first 60% for calibration, last
 * 40% held out; C4 documents 0–1799 for calibration, 1800–1999 held out;
 * WikiText-2 test for evaluation only. Uses the `Deno` namespace.
 *
 * @module
 */

import { prng } from "../core/prng.ts";
import { dataFile } from "./data.ts";
import type { Tokenizer } from "../models/tokenizer.ts";

/** A named corpus: documents, each encoded after a BOS. */
export interface Corpus {
  /** Short name for tables, e.g. `tinystories`. */
  readonly name: string;
  /** The documents. */
  readonly docs: readonly string[];
}

/** The corpora this module knows. */
export type CorpusName = "tinystories" | "wikitext2" | "c4";

/**
 * Blank-line-separated blocks of a text (trimmed, empty ones dropped).
 *
 * @param text The text.
 * @returns The blocks.
 */
export function blankLineBlocks(text: string): string[] {
  return text.split(/\n\s*\n/).map((b) => b.trim()).filter((b) => b.length > 0);
}

/**
 * Reads one side of a corpus from the data root, or null (reason printed) when absent.
 *
 * @param name Which corpus.
 * @param split `eval` (held out) or `calib` (calibration part; WikiText-2 has none).
 * @returns The corpus or null.
 */
export async function loadCorpus(
  name: CorpusName,
  split: "eval" | "calib",
): Promise<Corpus | null> {
  if (name === "tinystories") {
    const path = dataFile("text/tinystories_val_sample.txt");
    if (!path) return null;
    const blocks = blankLineBlocks(await Deno.readTextFile(path));
    const cut = Math.ceil(0.6 * blocks.length);
    return {
      name,
      docs: split === "calib"
        ? blocks.slice(0, Math.floor(0.6 * blocks.length))
        : blocks.slice(cut),
    };
  }
  if (name === "c4") {
    const path = dataFile("text/c4_validation_2k.jsonl");
    if (!path) return null;
    const lines = (await Deno.readTextFile(path)).split("\n").filter((l) => l.trim().length > 0);
    const docs = lines.map((l) => (JSON.parse(l) as { text: string }).text);
    return { name, docs: split === "calib" ? docs.slice(0, 1800) : docs.slice(1800, 2000) };
  }
  if (name === "wikitext2") {
    if (split === "calib") {
      throw new RangeError(
        `WikiText-2 test is for evaluation only: calibrate on c4 or tinystories`,
      );
    }
    const path = dataFile("text/wikitext2_test.raw");
    if (!path) return null;
    return { name, docs: [await Deno.readTextFile(path)] };
  }
  throw new RangeError(`Unknown corpus '${name}': use tinystories, wikitext2 or c4`);
}

/**
 * A token stream: each document after a BOS, concatenated, stopping once
 * `maxTokens` are reached (so a capped evaluation does not encode everything).
 * A tokenizer without a BOS (Qwen's) ends each document with its EOS
 * instead, as Qwen's pretraining data separates documents, or with nothing
 * when it has neither.
 *
 * @param tokenizer The tokenizer.
 * @param docs The documents.
 * @param maxTokens Stop after this many tokens. @default Infinity
 * @returns Token ids.
 */
export function encodeDocs(
  tokenizer: Tokenizer,
  docs: readonly string[],
  maxTokens = Infinity,
): number[] {
  const out: number[] = [];
  const { bos, eos } = tokenizer;
  for (const d of docs) {
    if (out.length >= maxTokens) break;
    if (bos !== undefined) {
      for (const id of tokenizer.encode(d, { bos: true })) out.push(id);
    } else {
      for (const id of tokenizer.encode(d, { bos: false, eos: eos !== undefined })) out.push(id);
    }
  }
  return out.length > maxTokens ? out.slice(0, maxTokens) : out;
}

/**
 * Seeded calibration windows: `count` windows of `seqLen` tokens at random
 * offsets of a token stream, as GPTQ samples its calibration windows.
 *
 * @param stream The calibration token stream.
 * @param count Number of windows.
 * @param seqLen Tokens per window.
 * @param seed Seed of the offsets.
 * @returns The windows.
 */
export function calibrationWindows(
  stream: readonly number[],
  count: number,
  seqLen: number,
  seed = 0,
): number[][] {
  if (stream.length <= seqLen) {
    throw new RangeError(
      `Cannot draw calibration windows of ${seqLen} tokens from ${stream.length} tokens`,
    );
  }
  const rng = prng(seed);
  return Array.from({ length: count }, () => {
    const at = rng.int(stream.length - seqLen);
    return stream.slice(at, at + seqLen);
  });
}
