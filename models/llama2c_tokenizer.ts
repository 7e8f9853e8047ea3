/**
 * The llama2.c tokenizer (`tokenizer.bin`, `tok512.bin`): pieces with merge
 * scores, encoded by greedy BPE (repeatedly merge the adjacent pair whose
 * concatenation is the highest-scoring piece), UTF-8 byte fallback to the
 * `<0xXX>` tokens and a dummy-prefix space, as SentencePiece does. Ids 0, 1, 2
 * are unk, BOS and EOS.
 *
 * When no piece holds a space after its first character (true of tok512),
 * merges never cross a word boundary, so the text is encoded word by word
 * (each word with its one leading space) with a cache: the same ids as the
 * whole-text merge, much faster. Other vocabularies use the whole-text merge.
 *
 * `parseLlama2cTokenizer` is web-standard; `loadLlama2cTokenizer` reads a file
 * with `Deno`.
 *
 * @module
 */

import type { DecodeOptions, EncodeOptions, Tokenizer } from "./tokenizer.ts";

/** Options of {@linkcode parseLlama2cTokenizer}. */
export interface Llama2cTokenizerOptions {
  /**
   * The model's vocabulary size: the file must hold exactly this many pieces
   * (the format does not store its count). When absent, every piece in the
   * file is read.
   */
  vocabSize?: number;
}

/** A llama2.c tokenizer: a {@linkcode Tokenizer} that also exposes its pieces and scores. */
export interface Llama2cTokenizer extends Tokenizer {
  /** Pieces as byte strings (one char per byte), by id. */
  readonly pieces: readonly string[];
  /** Merge score of each piece. */
  readonly scores: Float32Array;
  /** Beginning-of-sequence id: 1. */
  readonly bos: number;
  /** End-of-sequence id: 2. */
  readonly eos: number;
  /**
   * Token ids of a text, with the dummy-prefix space.
   *
   * @param text The text.
   * @param options BOS/EOS, each absent by default (llama2.c's `encode` adds
   *   them only when asked).
   * @returns The ids.
   */
  encode(text: string, options?: EncodeOptions): number[];
  /**
   * Text of token ids: byte tokens decoded, the space after BOS dropped.
   *
   * @param ids The ids.
   * @param options Whether unk, BOS and EOS (ids 0–2) are left out (by default)
   *   or written as their pieces.
   * @returns The text.
   * @throws {RangeError} for an id outside the vocabulary.
   */
  decode(ids: readonly number[], options?: DecodeOptions): string;
}

const utf8 = new TextEncoder();

function toByteString(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    s += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
  return s;
}

/**
 * A llama2.c tokenizer from piece strings and scores (ids 0, 1, 2 = unk, BOS,
 * EOS; byte fallback through pieces named `<0xXX>`).
 *
 * @param pieces Pieces as byte strings (one char per byte), by id.
 * @param scores Merge score of each piece.
 * @returns The tokenizer.
 */
export function makeLlama2cTokenizer(
  pieces: readonly string[],
  scores: Float32Array,
): Llama2cTokenizer {
  const ids = new Map<string, number>();
  pieces.forEach((p, i) => {
    if (!ids.has(p)) ids.set(p, i);
  });
  const byteIds = new Int32Array(256).fill(-1);
  for (let b = 0; b < 256; b++) {
    const id = ids.get(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    if (id !== undefined) byteIds[b] = id;
  }
  const wordSafe = pieces.every((p) => p.indexOf(" ", 1) < 0);

  const merge = (s: string): number[] => {
    const out: number[] = [];
    // Initial tokens: one per UTF-8 code point, else its bytes.
    for (let i = 0; i < s.length;) {
      const lead = s.charCodeAt(i);
      let len = 1;
      if (lead >= 0xc0) {
        while (i + len < s.length && len < 4 && (s.charCodeAt(i + len) & 0xc0) === 0x80) len++;
      }
      const cp = s.slice(i, i + len);
      const id = ids.get(cp);
      if (id !== undefined) out.push(id);
      else {
        for (let k = 0; k < len; k++) {
          const b = byteIds[s.charCodeAt(i + k)]!;
          out.push(b >= 0 ? b : 0);
        }
      }
      i += len;
    }
    return out.length <= 64 ? mergeQuadratic(out) : mergeHeap(out);
  };

  // The greedy rule: merge the adjacent pair whose concatenation is the
  // highest-scoring piece; among equal scores, the leftmost pair.
  const pairId = (a: number, b: number): number => {
    const id = ids.get(pieces[a]! + pieces[b]!);
    return id !== undefined && scores[id]! > -1e10 ? id : -1;
  };
  const mergeQuadratic = (out: number[]): number[] => {
    for (;;) {
      let best = -Infinity, at = -1, bestId = -1;
      for (let i = 0; i + 1 < out.length; i++) {
        const id = pairId(out[i]!, out[i + 1]!);
        if (id >= 0 && scores[id]! > best) {
          best = scores[id]!;
          at = i;
          bestId = id;
        }
      }
      if (at < 0) return out;
      out.splice(at, 2, bestId);
    }
  };
  // The same rule in O(n log n) for long texts: a linked list of tokens and a
  // heap of candidate pairs ordered by (score desc, position asc); entries
  // made stale by earlier merges are skipped when popped.
  const mergeHeap = (init: number[]): number[] => {
    const n = init.length;
    const tok = Int32Array.from(init), next = new Int32Array(n), prev = new Int32Array(n);
    const version = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    type Entry = [score: number, pos: number, id: number, vLeft: number, vRight: number];
    const heap: Entry[] = [];
    const before = (a: Entry, b: Entry) => a[0] > b[0] || (a[0] === b[0] && a[1] < b[1]);
    const push = (e: Entry) => {
      heap.push(e);
      for (let i = heap.length - 1; i > 0;) {
        const p = (i - 1) >> 1;
        if (!before(heap[i]!, heap[p]!)) break;
        [heap[i], heap[p]] = [heap[p]!, heap[i]!];
        i = p;
      }
    };
    const pop = (): Entry => {
      const top = heap[0]!, last = heap.pop()!;
      if (heap.length > 0) {
        heap[0] = last;
        for (let i = 0;;) {
          const l = 2 * i + 1, r = l + 1;
          let m = i;
          if (l < heap.length && before(heap[l]!, heap[m]!)) m = l;
          if (r < heap.length && before(heap[r]!, heap[m]!)) m = r;
          if (m === i) break;
          [heap[i], heap[m]] = [heap[m]!, heap[i]!];
          i = m;
        }
      }
      return top;
    };
    const consider = (i: number) => {
      const j = next[i]!;
      if (i < 0 || j < 0) return;
      const id = pairId(tok[i]!, tok[j]!);
      if (id >= 0) push([scores[id]!, i, id, version[i]!, version[j]!]);
    };
    for (let i = 0; i + 1 < n; i++) consider(i);
    while (heap.length > 0) {
      const [, i, id, vi, vj] = pop();
      const j = next[i]!;
      if (j < 0 || version[i] !== vi || version[j] !== vj || version[i]! < 0) continue;
      tok[i] = id;
      version[i] = version[i]! + 1;
      version[j] = -1; // removed
      next[i] = next[j]!;
      if (next[j]! >= 0) prev[next[j]!] = i;
      consider(prev[i]!);
      consider(i);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0 && i < n; i = next[i]!) out.push(tok[i]!);
    return out;
  };

  const cache = new Map<string, number[]>();
  const encodeWords = (s: string): number[] => {
    const out: number[] = [];
    for (const m of s.matchAll(/ +(?= [^ ])| ?[^ ]+| +$/g)) {
      const w = m[0];
      let r = cache.get(w);
      if (r === undefined) {
        r = merge(w);
        if (cache.size < 100_000) cache.set(w, r);
      }
      for (const id of r) out.push(id);
    }
    return out;
  };

  return {
    vocabSize: pieces.length,
    pieces,
    scores,
    bos: 1,
    eos: 2,
    encode(text: string, options: EncodeOptions = {}): number[] {
      const { bos = false, eos = false } = options;
      const body = text.length === 0 ? [] : (() => {
        const s = " " + toByteString(utf8.encode(text));
        return wordSafe ? encodeWords(s) : merge(s);
      })();
      return [...(bos ? [1] : []), ...body, ...(eos ? [2] : [])];
    },
    decode(tokens: readonly number[], options: DecodeOptions = {}): string {
      const { skipSpecialTokens = true } = options;
      const bytes: number[] = [];
      let prev = -1;
      for (const id of tokens) {
        let p = pieces[id];
        if (p === undefined) {
          throw new RangeError(`Cannot decode token ${id}: the vocabulary has ${pieces.length}`);
        }
        if (prev === 1 && p.startsWith(" ")) p = p.slice(1);
        prev = id;
        if (skipSpecialTokens && id <= 2) continue;
        const m = /^<0x([0-9A-F]{2})>$/.exec(p);
        if (m) bytes.push(parseInt(m[1]!, 16));
        else for (let i = 0; i < p.length; i++) bytes.push(p.charCodeAt(i));
      }
      return new TextDecoder().decode(new Uint8Array(bytes));
    },
  };
}

/**
 * Parses a llama2.c tokenizer file: int32 max_token_length, then per piece
 * {float32 score, int32 length, bytes}.
 *
 * @param bytes The whole file.
 * @param source The file name, for error messages.
 * @param options The expected vocabulary size.
 * @returns The tokenizer.
 * @throws {RangeError} naming the file when it is malformed or does not match `vocabSize`.
 */
export function parseLlama2cTokenizer(
  bytes: Uint8Array,
  source = "tokenizer",
  options: Llama2cTokenizerOptions = {},
): Llama2cTokenizer {
  const { vocabSize } = options;
  if (vocabSize !== undefined && !(Number.isSafeInteger(vocabSize) && vocabSize > 0)) {
    throw new RangeError(
      `Cannot load a tokenizer as 'vocabSize' must be a positive integer: current value is ${vocabSize}`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4) throw new RangeError(`${source}: too short for a llama2.c tokenizer`);
  const maxLen = view.getInt32(0, true);
  const pieces: string[] = [];
  const scores: number[] = [];
  let o = 4;
  while (o < bytes.length && (vocabSize === undefined || pieces.length < vocabSize)) {
    if (o + 8 > bytes.length) {
      throw new RangeError(`${source}: truncated inside piece ${pieces.length} (at byte ${o})`);
    }
    const score = view.getFloat32(o, true);
    const len = view.getInt32(o + 4, true);
    o += 8;
    if (len < 0 || len > maxLen || o + len > bytes.length) {
      throw new RangeError(
        `${source}: piece ${pieces.length} has length ${len} (max_token_length ${maxLen}, ` +
          `${bytes.length - o} bytes left): not a llama2.c tokenizer or truncated`,
      );
    }
    pieces.push(toByteString(bytes.subarray(o, o + len)));
    scores.push(score);
    o += len;
  }
  if (vocabSize !== undefined && pieces.length < vocabSize) {
    throw new RangeError(
      `${source}: holds ${pieces.length} pieces, but the model's vocabulary has ${vocabSize}: ` +
        `the tokenizer does not match the model`,
    );
  }
  if (o !== bytes.length) {
    throw new RangeError(
      `${source}: ${bytes.length - o} bytes left after ${pieces.length} pieces: the tokenizer ` +
        `does not match the model's vocabulary of ${vocabSize}`,
    );
  }
  if (pieces.length < 3) throw new RangeError(`${source}: fewer than 3 pieces`);
  return makeLlama2cTokenizer(pieces, Float32Array.from(scores));
}

/**
 * Reads a llama2.c tokenizer file. Uses the `Deno` namespace.
 *
 * @param path The `.bin` file (e.g. tok512.bin).
 * @param options The expected vocabulary size.
 * @returns The tokenizer.
 */
export async function loadLlama2cTokenizer(
  path: string,
  options: Llama2cTokenizerOptions = {},
): Promise<Llama2cTokenizer> {
  return parseLlama2cTokenizer(await Deno.readFile(path), path, options);
}
