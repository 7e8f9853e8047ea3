/**
 * Hugging Face `tokenizer.json` tokenizers (Llama 2/3, Mistral, Qwen2/2.5,
 * Qwen3 and anything else `tokenizers` writes), run by
 * `@huggingface/tokenizers`, the format authors' pure TypeScript
 * implementation, behind our {@linkcode Tokenizer} interface with the
 * semantics of the Rust `tokenizers` library: ids as `encode(text)` gives
 * them (BOS/EOS as the post-processor adds them), text as `decode(ids)`
 * gives it, without transformers' clean-up of spaces.
 *
 * {@linkcode hfTokenizerJson} goes the other way: it writes a llama2.c
 * tokenizer as a SentencePiece-style `tokenizer.json` (`▁` for spaces,
 * `<0xXX>` byte fallback, a prepended `▁`, BOS added by the post-processor,
 * as Llama 2's). Merges are listed as every split of a piece into two pieces,
 * ranked by the piece's score, which is how Llama's SentencePiece
 * vocabularies convert to HF merges: lowest-rank-first merging is then
 * llama2.c's greedy highest-score-first merging.
 *
 * Web-standard: `loadTokenizer` in `tokenizer.ts` reads the files.
 *
 * @module
 */

import { Tokenizer as HfLibTokenizer } from "@huggingface/tokenizers";
import type { DecodeOptions, EncodeOptions, Tokenizer } from "./tokenizer.ts";
import type { Llama2cTokenizer } from "./llama2c_tokenizer.ts";

/** Options of {@linkcode parseHfTokenizer}. */
export interface HfTokenizerOptions {
  /**
   * The parsed `tokenizer_config.json` beside the file, when there is one. Only
   * its `bos_token` and `eos_token` are read (a `tokenizer.json` says which
   * token its post-processor adds, not which one ends a sequence); everything
   * else in it is transformers' business and changes nothing here.
   */
  config?: Readonly<Record<string, unknown>>;
  /**
   * The model's vocabulary size (rows of its embedding): the tokenizer may have
   * fewer ids (Qwen pads its embedding), not more. Unchecked when absent.
   */
  vocabSize?: number;
}

/** A tokenizer read from a `tokenizer.json`. */
export interface HfTokenizer extends Tokenizer {
  /** The parsed `tokenizer.json` it was built from (not to be modified). */
  readonly json: Readonly<Record<string, unknown>>;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * The `tokenizer.json` as the library is to read it. Refuses, by key, what
 * `tokenizers` does and the library silently does otherwise (read in its
 * source, version 0.2.0): a `Split` pre-tokenizer whose behavior is not
 * `Isolated` or `Removed` (it isolates), an inverted one not `Removed` (it
 * keeps only the matches), a `Metaspace` pre-tokenizer that splits at `▁` (it
 * never splits; `split` defaults to true in `tokenizers`), and a BPE model with
 * dropout or a `continuing_subword_prefix` (neither is implemented). None of
 * them occurs in the supported families. Works around one library bug: a
 * `Split` on a `String` pattern with an explicit `invert: false` compiles the
 * pattern with a capture group, so `Removed` keeps the delimiters; without the
 * key (false in `tokenizers` too) it compiles it without.
 */
function libraryJson(json: Json, source: string): Json {
  const refuse = (what: string): never => {
    throw new RangeError(`${source}: ${what} is not supported by @huggingface/tokenizers`);
  };
  const pre = (p: unknown): unknown => {
    if (!isObject(p)) return p;
    if (p.type === "Sequence" && Array.isArray(p.pretokenizers)) {
      return { ...p, pretokenizers: p.pretokenizers.map(pre) };
    }
    if (p.type === "Split") {
      const behavior = String(p.behavior ?? "Isolated");
      if (p.invert === true ? behavior !== "Removed" : !/^(Isolated|Removed)$/.test(behavior)) {
        refuse(`pre_tokenizer Split with behavior ${behavior} and invert ${p.invert === true}`);
      }
      if (p.invert === false && isObject(p.pattern) && "String" in p.pattern) {
        const { invert: _, ...rest } = p;
        return rest;
      }
    }
    if (p.type === "Metaspace" && p.split !== false) {
      refuse(`pre_tokenizer Metaspace with split ${JSON.stringify(p.split ?? true)}`);
    }
    return p;
  };
  const model = json.model as Json;
  if (model.dropout !== undefined && model.dropout !== null && model.dropout !== 0) {
    refuse(`model.dropout ${JSON.stringify(model.dropout)}`);
  }
  if (typeof model.continuing_subword_prefix === "string" && model.continuing_subword_prefix) {
    refuse(`model.continuing_subword_prefix ${JSON.stringify(model.continuing_subword_prefix)}`);
  }
  // The library wants every component key present; `tokenizers` reads a
  // missing one as none.
  return {
    normalizer: null,
    post_processor: null,
    decoder: null,
    added_tokens: [],
    ...json,
    pre_tokenizer: pre(json.pre_tokenizer ?? null),
  };
}

/**
 * A tokenizer from a parsed `tokenizer.json`.
 *
 * @example
 * ```ts
 * import { parseHfTokenizer } from "./hf_tokenizer.ts";
 *
 * const path = new URL("../tests/fixtures/hf/tokenizers/sentencepiece.json", import.meta.url);
 * const tok = parseHfTokenizer(JSON.parse(await Deno.readTextFile(path)), path.pathname);
 * const ids = tok.encode("Once upon a time"); // BOS first: the post-processor adds it
 * if (ids[0] !== tok.bos || tok.encode("x", { bos: false })[0] === tok.bos) throw new Error();
 * ```
 *
 * @param json The parsed file.
 * @param source The file name, for error messages.
 * @param options The `tokenizer_config.json` beside it; the model's vocabulary size.
 * @returns The tokenizer.
 * @throws {RangeError} naming the file when it is not a tokenizer the library
 *   builds, uses an unsupported option, names a BOS/EOS token it does not have,
 *   or has more ids than `vocabSize`.
 */
export function parseHfTokenizer(
  json: unknown,
  source = "tokenizer.json",
  options: HfTokenizerOptions = {},
): HfTokenizer {
  const { config = {}, vocabSize: modelVocab } = options;
  if (!isObject(json) || !isObject(json.model)) {
    throw new RangeError(`${source}: not a tokenizer.json (no "model" object)`);
  }
  const spec = libraryJson(json, source);
  let lib: HfLibTokenizer;
  try {
    // The second argument is tokenizer_config.json, given empty: what the
    // library reads there (remove_space, lowercasing, extra special tokens,
    // clean-up) is transformers' behaviour, not tokenizer.json's.
    lib = new HfLibTokenizer(spec, {});
  } catch (e) {
    throw new RangeError(`${source}: cannot build the tokenizer (${(e as Error).message})`);
  }
  const vocabSize = lib.model!.vocab.length;
  if (modelVocab !== undefined && vocabSize > modelVocab) {
    throw new RangeError(
      `${source}: has ${vocabSize} ids, more than the model's vocabulary of ${modelVocab}: ` +
        `the tokenizer does not match the model`,
    );
  }
  const idOf = (name: string, what: string): number => {
    const id = lib.token_to_id(name);
    if (id === undefined) {
      throw new RangeError(`${source}: ${what} ${JSON.stringify(name)} is not a token`);
    }
    return id;
  };

  // The ids the post-processor puts around one text, found by running it on
  // a marker: whatever the processor type, these are what encode(text) adds.
  const MARK = "\u{10FFFF}text\u{10FFFF}";
  const around = lib.post_processor?.post_process([MARK], null, true).tokens ?? [MARK];
  const at = around.indexOf(MARK);
  const prefix = around.slice(0, at).map((t) => idOf(t, "the post-processor's token"));
  const suffix = around.slice(at + 1).map((t) => idOf(t, "the post-processor's token"));

  // BOS/EOS: tokenizer_config.json's when it names them (null: none), else
  // the post-processor's first token before the text and last after it.
  const named = (key: "bos_token" | "eos_token", fallback: number | undefined) => {
    if (!(key in config)) return fallback;
    const v = config[key];
    if (v === null) return undefined;
    const name = isObject(v) ? v.content : v;
    if (typeof name !== "string") {
      throw new RangeError(`${source}: tokenizer_config.json's ${key} is ${JSON.stringify(v)}`);
    }
    return idOf(name, `tokenizer_config.json's ${key}`);
  };
  const bos = named("bos_token", prefix[0]);
  const eos = named("eos_token", suffix[suffix.length - 1]);
  const bosByDefault = bos !== undefined && prefix.includes(bos);
  const eosByDefault = eos !== undefined && suffix.includes(eos);

  return {
    vocabSize,
    bos,
    eos,
    json,
    encode(text: string, options: EncodeOptions = {}): number[] {
      const { bos: withBos, eos: withEos } = options;
      if (withBos === undefined && withEos === undefined) return lib.encode(text).ids;
      if (withBos && bos === undefined) {
        throw new TypeError(`Cannot encode with 'bos' true as ${source} has no BOS token`);
      }
      if (withEos && eos === undefined) {
        throw new TypeError(`Cannot encode with 'eos' true as ${source} has no EOS token`);
      }
      const body = lib.encode(text, { add_special_tokens: false }).ids;
      return [
        ...((withBos ?? bosByDefault) ? [bos!] : []),
        ...prefix.filter((id) => id !== bos),
        ...body,
        ...suffix.filter((id) => id !== eos),
        ...((withEos ?? eosByDefault) ? [eos!] : []),
      ];
    },
    decode(ids: readonly number[], options: DecodeOptions = {}): string {
      const { skipSpecialTokens = true } = options;
      for (const id of ids) {
        if (lib.id_to_token(id) === undefined) {
          throw new RangeError(`Cannot decode token ${id}: ${source} has no such id`);
        }
      }
      // The library refuses an empty list; `tokenizers` decodes it to "". Its
      // clean-up of spaces before punctuation defaults to on; `tokenizers` has none.
      if (ids.length === 0) return "";
      return lib.decode([...ids], {
        skip_special_tokens: skipSpecialTokens,
        clean_up_tokenization_spaces: false,
      });
    },
  };
}

const SPECIAL = ["<unk>", "<s>", "</s>"];

function byteStringToText(p: string): string {
  const bytes = Uint8Array.from(p, (c) => c.charCodeAt(0));
  return new TextDecoder("utf-8", { fatal: false }).decode(bytes);
}

function isHfTokenizer(tok: Tokenizer): tok is HfTokenizer {
  return "json" in tok && isObject(tok.json);
}

function isLlama2cTokenizer(tok: Tokenizer): tok is Llama2cTokenizer {
  return "pieces" in tok && "scores" in tok;
}

function llama2cTokenizerJson(tok: Llama2cTokenizer): Json {
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
  const bos = { SpecialToken: { id: "<s>", type_id: 0 } };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
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
    post_processor: {
      type: "TemplateProcessing",
      single: [bos, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        bos,
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "<s>", type_id: 1 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
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
 * The `tokenizer.json` object of a tokenizer: a copy of the file a
 * `tokenizer.json` tokenizer was read from, or a llama2.c tokenizer converted
 * (see the module docs; read back, it encodes as the llama2.c tokenizer does
 * and adds BOS by default, as Llama 2's does).
 *
 * @param tok The tokenizer: from {@linkcode parseHfTokenizer}, or a llama2.c
 *   tokenizer (ids 0–2 are unk, BOS, EOS).
 * @returns The JSON-ready object (fresh).
 * @throws {TypeError} for a tokenizer of neither kind.
 */
export function hfTokenizerJson(tok: Tokenizer): Record<string, unknown> {
  if (isHfTokenizer(tok)) return structuredClone(tok.json) as Json;
  if (isLlama2cTokenizer(tok)) return llama2cTokenizerJson(tok);
  throw new TypeError(
    "Cannot write a tokenizer.json: the tokenizer was neither read from one nor a llama2.c tokenizer",
  );
}
