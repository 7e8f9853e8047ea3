/**
 * The calibration windows of a command-line run: a named corpus's
 * calibration split (see `examples/datasets.ts`) or a text file, tokenized
 * with the model's tokenizer and cut into seeded windows, clipped (with a
 * note) to what the model's context and the text allow. Uses the `Deno`
 * namespace.
 *
 * @module
 */

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
