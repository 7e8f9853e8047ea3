/**
 * The calibration windows of a command-line run: a named corpus's
 * calibration split (see `examples/datasets.ts`) or a text file, tokenized
 * with the model's tokenizer and cut into seeded windows, clipped (with a
 * note) to what the model's context and the text allow. Uses the `Deno`
 * namespace.
 *
 * @module
 */

import { mixSeed } from "../core/_mix_seed.ts";
import { prng } from "../core/prng.ts";
import { dataRoot } from "../examples/data.ts";
import {
  blankLineBlocks,
  calibrationWindows,
  type CorpusName,
  encodeDocs,
  loadCorpus,
} from "../examples/datasets.ts";
import type { Tokenizer } from "../models/tokenizer.ts";

/**
 * The corpora `--calib` takes by name (their calibration splits). WikiText-2
 * is known too, and refused: it is an evaluation text only.
 */
export const CALIBRATION_CORPORA: readonly CorpusName[] = ["c4", "tinystories"];

/** Options of {@linkcode calibrationSet}. */
export interface CalibrationOptions {
  /** Windows wanted. */
  readonly samples: number;
  /** Tokens per window wanted. */
  readonly length: number;
  /** Seed of the window offsets. */
  readonly seed: number;
  /** The longest window the model takes (its context, or its sliding window). */
  readonly maxLength: number;
}

/** The calibration set. */
export interface Calibration {
  /** The corpus name, or the text file as given. */
  readonly source: string;
  /** The windows, `samples` of `length` tokens. */
  readonly windows: number[][];
  /** Windows drawn (after clipping). */
  readonly samples: number;
  /** Tokens per window (after clipping). */
  readonly length: number;
  /** Seed of the offsets. */
  readonly seed: number;
  /** Tokens of the stream the windows were drawn from. */
  readonly tokens: number;
  /** What was clipped, and why, one sentence each. */
  readonly notes: readonly string[];
}

/**
 * Reads the calibration text, tokenizes it (each document after a BOS) and
 * draws the windows at seeded offsets.
 *
 * @param tokenizer The model's tokenizer.
 * @param source A corpus name (`c4`, `tinystories`; `wikitext2` is refused as
 *   an evaluation text) or a text file of blank-line-separated documents.
 * @param options Windows, their length, the seed and the model's context.
 * @returns The windows and what was clipped.
 * @throws {RangeError} for WikiText-2, a missing file or a text too short for two tokens.
 * @throws {Error} when a named corpus is absent from the data root.
 */
export async function calibrationSet(
  tokenizer: Tokenizer,
  source: string,
  options: CalibrationOptions,
): Promise<Calibration> {
  const { seed, maxLength } = options;
  let { samples, length } = options;
  const docs = await calibrationDocs(source);
  const notes: string[] = [];
  if (length > maxLength) {
    notes.push(
      `--calib-len ${length} is longer than the model takes (${maxLength} tokens): ` +
        `windows of ${maxLength}`,
    );
    length = maxLength;
  }
  // Four times what the windows cover, so that they rarely overlap, and at least 200k tokens.
  const stream = encodeDocs(tokenizer, docs, Math.max(200_000, 4 * samples * length));
  if (stream.length < 2) {
    throw new RangeError(`--calib ${source} holds ${stream.length} tokens: too short to calibrate`);
  }
  if (stream.length <= length) {
    notes.push(
      `--calib ${source} holds ${stream.length} tokens: windows of ${stream.length - 1} ` +
        `(asked for ${length})`,
    );
    length = stream.length - 1;
  }
  const fit = Math.max(1, Math.floor(stream.length / length));
  if (samples > fit) {
    notes.push(
      `--calib ${source} holds ${stream.length} tokens, room for ${fit} windows of ${length}: ` +
        `drawing ${fit} (asked for ${samples})`,
    );
    samples = fit;
  }
  return {
    source,
    windows: calibrationWindows(stream, samples, length, seed),
    samples,
    length,
    seed,
    tokens: stream.length,
    notes,
  };
}

/** The documents of a calibration source: a corpus's calibration split or a text file. */
async function calibrationDocs(source: string): Promise<readonly string[]> {
  let docs: readonly string[];
  if ((CALIBRATION_CORPORA as readonly string[]).includes(source) || source === "wikitext2") {
    const corpus = await loadCorpus(source as CorpusName, "calib");
    if (!corpus) {
      throw new Error(
        `the ${source} text is absent from the data root ${dataRoot()}: set LLMC_DATA to the ` +
          `shared data folder or pass --calib FILE`,
      );
    }
    docs = corpus.docs;
  } else {
    let text: string;
    try {
      text = await Deno.readTextFile(source);
    } catch (e) {
      throw new RangeError(
        `--calib ${source} is neither a corpus (${
          CALIBRATION_CORPORA.join(", ")
        }) nor a readable text file (${(e as Error).message})`,
      );
    }
    docs = blankLineBlocks(text);
  }
  return docs;
}

/** Options of {@linkcode fitnessWindows}. */
export interface FitnessWindowsOptions {
  /** Windows of the pool the search samples, shared out among the sources. */
  readonly samples: number;
  /** Windows of the evaluation, shared out among the sources. */
  readonly evaluationSamples: number;
  /** Tokens per window wanted. */
  readonly length: number;
  /** Seed of the windows' choice. */
  readonly seed: number;
  /** The longest window the model takes (its context, or its sliding window). */
  readonly maxLength: number;
  /**
   * Tokens at the start of a source's stream to leave out, by source (the
   * database's calibration stream, when it is the same text), unless too
   * little is left after them.
   */
  readonly skip?: Readonly<Record<string, number>>;
}

/** The fitness pool and the evaluation windows, disjoint. */
export interface FitnessWindows {
  /** The pool the search samples: each source's windows in turn. */
  readonly pool: number[][];
  /** The evaluation windows, none overlapping a pool window: each source's in turn. */
  readonly evaluation: number[][];
  /** Tokens per window (after clipping). */
  readonly length: number;
  /** What was clipped, and why, one sentence each. */
  readonly notes: readonly string[];
}

/**
 * The search's fitness windows from one or several calibration texts (a
 * mixed pool): each source's stream is cut into consecutive windows, which
 * are shuffled (seeded) and dealt out, the evaluation's first, so the pool
 * and the evaluation never share a token position and no two windows
 * overlap.
 *
 * @param tokenizer The model's tokenizer.
 * @param sources Corpus names or text files, as {@linkcode calibrationSet} takes.
 * @param options Windows of the pool and of the evaluation, their length, the seed.
 * @returns The pool, the evaluation and what was clipped.
 * @throws {RangeError} for no source, WikiText-2, a missing file or a text too short for 2 windows.
 */
export async function fitnessWindows(
  tokenizer: Tokenizer,
  sources: readonly string[],
  options: FitnessWindowsOptions,
): Promise<FitnessWindows> {
  const { samples, evaluationSamples, seed, maxLength, skip = {} } = options;
  if (sources.length === 0) throw new RangeError(`--fitness needs at least one text`);
  const notes: string[] = [];
  let length = options.length;
  if (length > maxLength) {
    notes.push(
      `--fitness-len ${length} is longer than the model takes (${maxLength} tokens): ` +
        `windows of ${maxLength}`,
    );
    length = maxLength;
  }
  const share = (n: number, i: number) =>
    Math.floor(n / sources.length) + (i < n % sources.length ? 1 : 0);
  const pool: number[][] = [];
  const evaluation: number[][] = [];
  for (const [i, source] of sources.entries()) {
    const docs = await calibrationDocs(source);
    const [p, e] = [share(samples, i), share(evaluationSamples, i)];
    const at = skip[source] ?? 0;
    let stream = encodeDocs(tokenizer, docs, at + Math.max(200_000, (p + e) * length));
    if (Math.floor((stream.length - at) / length) >= 2) {
      stream = stream.slice(at);
    } else if (at > 0) {
      notes.push(
        `--fitness ${source}: too short to leave out the database's ${at} calibration tokens`,
      );
    }
    const tiles = Math.floor(stream.length / length);
    if (tiles < 2) {
      throw new RangeError(
        `--fitness ${source} holds ${stream.length} tokens: too short for 2 windows of ${length}`,
      );
    }
    const order = Array.from({ length: tiles }, (_, k) => k);
    const rng = prng(mixSeed(seed, i, "fitness"));
    for (let k = tiles - 1; k > 0; k--) {
      const j = rng.int(k + 1);
      [order[k], order[j]] = [order[j]!, order[k]!];
    }
    let [pe, pp] = [e, p];
    if (pe + pp > tiles) {
      pe = Math.min(e, Math.max(1, Math.floor(tiles / 2)));
      pp = Math.min(p, tiles - pe);
      notes.push(
        `--fitness ${source} holds room for ${tiles} windows of ${length}: ${pe} for the ` +
          `evaluation, ${pp} for the pool (asked for ${e} and ${p})`,
      );
    }
    const tile = (k: number) => stream.slice(order[k]! * length, (order[k]! + 1) * length);
    for (let k = 0; k < pe; k++) evaluation.push(tile(k));
    for (let k = pe; k < pe + pp; k++) pool.push(tile(k));
  }
  return { pool, evaluation, length, notes };
}
