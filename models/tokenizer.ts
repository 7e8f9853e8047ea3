/**
 * The tokenizer interface every format implements, and {@linkcode loadTokenizer},
 * which reads any of them: a Hugging Face folder or `tokenizer.json` (see
 * `hf_tokenizer.ts`) or a llama2.c `.bin` (see `llama2c_tokenizer.ts`). The
 * interface is web-standard; `loadTokenizer` uses the `Deno` namespace.
 *
 * @module
 */

import { loadLlama2cTokenizer } from "./llama2c_tokenizer.ts";
import { parseHfTokenizer } from "./hf_tokenizer.ts";

/** Options of {@linkcode Tokenizer.encode}. */
export interface EncodeOptions {
  /**
   * Begin with the beginning-of-sequence token (true) or not (false).
   * @default what the format adds by itself: a `tokenizer.json` what its
   *   post-processor adds (Hugging Face's `add_special_tokens=True`), llama2.c
   *   nothing
   */
  bos?: boolean;
  /**
   * End with the end-of-sequence token (true) or not (false).
   * @default what the format adds by itself, as for `bos`
   */
  eos?: boolean;
}

/** Options of {@linkcode Tokenizer.decode}. */
export interface DecodeOptions {
  /**
   * Leave out the special tokens (BOS, EOS, unk, chat markers), as Hugging
   * Face's `skip_special_tokens=True`.
   * @default true
   */
  skipSpecialTokens?: boolean;
}

/** A loaded tokenizer, of any format. */
export interface Tokenizer {
  /**
   * Number of ids (one more than the largest). It may be smaller than the
   * model's embedding, which some families pad.
   */
  readonly vocabSize: number;
  /** Beginning-of-sequence id, or undefined when the tokenizer names none. */
  readonly bos: number | undefined;
  /** End-of-sequence id, or undefined when the tokenizer names none. */
  readonly eos: number | undefined;
  /**
   * Token ids of a text.
   *
   * @param text The text.
   * @param options BOS/EOS; each absent one as the format adds it by itself.
   * @returns The ids.
   * @throws {TypeError} when `bos` or `eos` is true and the tokenizer has none.
   */
  encode(text: string, options?: EncodeOptions): number[];
  /**
   * Text of token ids.
   *
   * @param ids The ids.
   * @param options Whether special tokens are left out (by default).
   * @returns The text.
   * @throws {RangeError} for an id the tokenizer does not have.
   */
  decode(ids: readonly number[], options?: DecodeOptions): string;
}

/** Options of {@linkcode loadTokenizer}. */
export interface LoadTokenizerOptions {
  /**
   * The model's vocabulary size (rows of its embedding), to refuse a
   * tokenizer of another model. A llama2.c file, which does not store its
   * piece count, must hold exactly this many pieces; a `tokenizer.json` may
   * have fewer ids (Qwen pads its embedding), not more. Unchecked when absent.
   */
  vocabSize?: number;
}

async function readJson(path: string, required: boolean): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (!required && e instanceof Deno.errors.NotFound) return undefined;
    throw new RangeError(`${path}: cannot read the tokenizer (${(e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new RangeError(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

/**
 * Reads a tokenizer: a Hugging Face folder (its `tokenizer.json`, and the
 * `bos_token`/`eos_token` of its `tokenizer_config.json` when there is one),
 * a `tokenizer.json` file (any name ending in `.json`), or a llama2.c `.bin`.
 * Uses the `Deno` namespace.
 *
 * @example
 * ```ts
 * import { loadTokenizer } from "./tokenizer.ts";
 *
 * const dir = new URL("../tests/fixtures/hf/models/qwen2", import.meta.url).pathname;
 * const tok = await loadTokenizer(dir);
 * const ids = tok.encode("Once upon a time");
 * if (tok.decode(ids) !== "Once upon a time") throw new Error("round trip");
 * ```
 *
 * @param path The folder or file.
 * @param options The model's vocabulary size, to check.
 * @returns The tokenizer.
 * @throws {RangeError} naming the file when it is missing, not valid JSON, not
 *   a tokenizer, or has more ids than `vocabSize`.
 */
export async function loadTokenizer(
  path: string,
  options: LoadTokenizerOptions = {},
): Promise<Tokenizer> {
  const { vocabSize } = options;
  let isDir: boolean;
  try {
    isDir = (await Deno.stat(path)).isDirectory;
  } catch (e) {
    throw new RangeError(`${path}: cannot read the tokenizer (${(e as Error).message})`);
  }
  const size = vocabSize === undefined ? {} : { vocabSize };
  if (isDir) {
    const file = `${path}/tokenizer.json`;
    const json = await readJson(file, true);
    const config = await readJson(`${path}/tokenizer_config.json`, false);
    if (config !== undefined && (typeof config !== "object" || config === null)) {
      throw new RangeError(`${path}/tokenizer_config.json: not a JSON object`);
    }
    return parseHfTokenizer(json, file, {
      ...size,
      ...(config === undefined ? {} : { config: config as Record<string, unknown> }),
    });
  }
  if (path.endsWith(".json")) return parseHfTokenizer(await readJson(path, true), path, size);
  if (path.endsWith(".bin")) return await loadLlama2cTokenizer(path, size);
  throw new RangeError(
    `${path}: not a tokenizer: expected a folder with tokenizer.json, a .json file or a ` +
      `llama2.c .bin file`,
  );
}
