/**
 * The llama2.c tokenizer in Hugging Face's `tokenizer.json` form (a
 * SentencePiece-style BPE model: `▁` for spaces, `<0xXX>` byte fallback, a
 * prepended `▁`), both ways. Merges are listed as every split of a piece
 * into two pieces, ranked by the piece's score, which is how Llama's
 * SentencePiece vocabularies convert to HF merges; read back, a piece's score
 * is minus the rank of its first merge, so greedy-by-score gives HF's
 * lowest-rank-first merges. `parseHfTokenizer` and `hfTokenizerJson` are
 * web-standard; `loadHfTokenizer` uses `Deno`.
 *
 * @module
 */

import { makeTokenizer } from "./tokenizer.ts";
import type { Tokenizer, TokenizerOptions } from "./tokenizer.ts";

const SPECIAL = ["<unk>", "<s>", "</s>"];

function byteStringToText(p: string): string {
  const bytes = Uint8Array.from(p, (c) => c.charCodeAt(0));
  return new TextDecoder("utf-8", { fatal: false }).decode(bytes);
}

function textToByteString(t: string): string {
  return String.fromCharCode(...new TextEncoder().encode(t));
}

/**
 * The `tokenizer.json` object of a tokenizer.
 *
 * @param tok The tokenizer (ids 0–2 are unk, BOS, EOS).
 * @returns The JSON-ready object.
 */
export function hfTokenizerJson(tok: Tokenizer): Record<string, unknown> {
  const names = tok.pieces.map((p, i) =>
    i < 3 ? SPECIAL[i]! : byteStringToText(p).replaceAll(" ", "▁")
  );
  const vocab: Record<string, number> = {};
  names.forEach((n, i) => {
    if (!(n in vocab)) vocab[n] = i;
  });
  const order = names.map((_, i) => i).filter((i) => i >= 3 && !/^<0x[0-9A-F]{2}>$/.test(names[i]!))
    .sort((a, b) => tok.scores[b]! - tok.scores[a]! || a - b);
  const merges: [string, string][] = [];
  for (const id of order) {
    const n = names[id]!;
    const chars = [...n];
    for (let k = 1; k < chars.length; k++) {
      const a = chars.slice(0, k).join(""), b = chars.slice(k).join("");
      if (a in vocab && b in vocab) merges.push([a, b]);
    }
  }
  return {
    version: "1.0",
    added_tokens: SPECIAL.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: {
      type: "Sequence",
      normalizers: [{ type: "Prepend", prepend: "▁" }, {
        type: "Replace",
        pattern: { String: " " },
        content: "▁",
      }],
    },
    pre_tokenizer: null,
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<unk>",
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      vocab,
      merges,
    },
  };
}

/**
 * A tokenizer from a parsed `tokenizer.json` (a BPE model with byte fallback).
 *
 * @param json The parsed file.
 * @param source The file name, for error messages.
 * @param options The expected vocabulary size.
 * @returns The tokenizer.
 * @throws {RangeError} naming the file for another model type or a vocabulary mismatch.
 */
export function parseHfTokenizer(
  json: Record<string, unknown>,
  source = "tokenizer.json",
  options: TokenizerOptions = {},
): Tokenizer {
  const model = json.model as
    | { type?: string; vocab?: Record<string, number>; merges?: unknown[] }
    | undefined;
  if (
    !model || model.type !== "BPE" || typeof model.vocab !== "object" ||
    !Array.isArray(model.merges)
  ) {
    throw new RangeError(
      `${source}: only BPE tokenizers are supported (model.type is ${JSON.stringify(model?.type)})`,
    );
  }
  const entries = Object.entries(model.vocab);
  const size = Math.max(...entries.map(([, id]) => id)) + 1;
  if (options.vocabSize !== undefined && size !== options.vocabSize) {
    throw new RangeError(
      `${source}: holds ${size} pieces, but the model's vocabulary has ${options.vocabSize}: ` +
        `the tokenizer does not match the model`,
    );
  }
  const pieces: string[] = new Array(size).fill("");
  for (const [name, id] of entries) {
    pieces[id] = id === 1
      ? "\n<s>\n"
      : id === 2
      ? "\n</s>\n"
      : textToByteString(name.replaceAll("▁", " "));
  }
  const scores = new Float32Array(size).fill(-Infinity);
  const idOf = new Map(pieces.map((p, i) => [p, i]));
  model.merges.forEach((m, rank) => {
    const [a, b] = typeof m === "string" ? m.split(" ") as [string, string] : m as [string, string];
    const id = idOf.get(textToByteString((a + b).replaceAll("▁", " ")));
    if (id !== undefined && scores[id] === -Infinity) scores[id] = -rank;
  });
  return makeTokenizer(pieces, scores);
}

/**
 * Reads `tokenizer.json` from a Hugging Face folder. Uses the `Deno` namespace.
 *
 * @param dir The folder.
 * @param options The expected vocabulary size.
 * @returns The tokenizer.
 */
export async function loadHfTokenizer(
  dir: string,
  options: TokenizerOptions = {},
): Promise<Tokenizer> {
  const path = `${dir}/tokenizer.json`;
  return parseHfTokenizer(JSON.parse(await Deno.readTextFile(path)), path, options);
}
