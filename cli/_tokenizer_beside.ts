/**
 * The tokenizer files that lie beside a llama2.c `.bin` model, and the one a
 * command picks (`tokenizer.bin`, else the only `tok*.bin`), shared by
 * `deno task compress` and `deno task generate`. Uses the `Deno` namespace.
 *
 * @module
 */

/** What lies beside a model file. */
export interface TokenizerBeside {
  /** The model's folder. */
  readonly dir: string;
  /** Names of the tokenizer files there (`tokenizer.bin`, `tok*.bin`). */
  readonly found: readonly string[];
  /** The path to use, or null when there is none or no single one. */
  readonly path: string | null;
}

/**
 * Looks for the tokenizer beside a llama2.c model file.
 *
 * @param model The model file's path.
 * @returns The folder, the names found and the pick.
 */
export async function tokenizerBeside(model: string): Promise<TokenizerBeside> {
  const dir = model.includes("/") ? model.slice(0, model.lastIndexOf("/")) : ".";
  const found: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && /^(tokenizer|tok\d*)\.bin$/.test(e.name)) found.push(e.name);
  }
  const pick = found.includes("tokenizer.bin")
    ? "tokenizer.bin"
    : found.length === 1
    ? found[0]!
    : null;
  return { dir, found, path: pick === null ? null : `${dir}/${pick}` };
}
