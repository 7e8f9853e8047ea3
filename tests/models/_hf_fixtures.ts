/**
 * The Hugging Face fixtures of tests/fixtures/hf (written by transformers 5.17
 * with make_fixtures.py): the model folders, their reference logits, and the
 * comparison the family tests apply.
 *
 * @module
 */

import { readSafetensors } from "../../core/safetensors_file.ts";

/** The fixture models, one folder each. */
export const FIXTURE_MODELS = [
  "llama",
  "llama3_rope",
  "llama_linear_rope",
  "mistral",
  "qwen2",
  "qwen3",
] as const;

/** Folder of a fixture model. */
export function fixtureDir(name: string): string {
  return new URL(`../fixtures/hf/models/${name}`, import.meta.url).pathname;
}

/** A reference: token ids and transformers' float32 logits [ids.length, vocab]. */
export interface ReferenceLogits {
  readonly ids: number[];
  readonly logits: Float32Array;
}

/** The reference sequences of a fixture model. */
export async function referenceLogits(name: string): Promise<ReferenceLogits[]> {
  const { tensors } = await readSafetensors(`${fixtureDir(name)}/reference.safetensors`);
  const out: ReferenceLogits[] = [];
  for (let i = 0; tensors.has(`ids.${i}`); i++) {
    out.push({
      ids: Array.from(tensors.get(`ids.${i}`)!.data as Int32Array),
      logits: tensors.get(`logits.${i}`)!.data as Float32Array,
    });
  }
  return out;
}

/** Relative RMS error ‖a − b‖ / ‖b‖ and the positions whose argmax differs. */
export function compareLogits(
  a: Float32Array,
  b: Float32Array,
  vocab: number,
): { relRms: number; argmaxMismatches: number[] } {
  if (a.length !== b.length) throw new RangeError(`lengths differ: ${a.length} vs ${b.length}`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  const argmaxMismatches: number[] = [];
  for (let t = 0; t < a.length / vocab; t++) {
    let ia = 0, ib = 0;
    for (let v = 1; v < vocab; v++) {
      if (a[t * vocab + v]! > a[t * vocab + ia]!) ia = v;
      if (b[t * vocab + v]! > b[t * vocab + ib]!) ib = v;
    }
    if (ia !== ib) argmaxMismatches.push(t);
  }
  return { relRms: Math.sqrt(num / den), argmaxMismatches };
}

/** A copy of a fixture folder in a fresh temporary folder (for tests that alter it). */
export async function copyFixture(name: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: `llmc-${name}-` });
  for await (const e of Deno.readDir(fixtureDir(name))) {
    if (e.isFile) await Deno.copyFile(`${fixtureDir(name)}/${e.name}`, `${dir}/${e.name}`);
  }
  return dir;
}

/** Rewrites a folder's config.json through `edit`. */
export async function editConfig(
  dir: string,
  edit: (json: Record<string, unknown>) => void,
): Promise<void> {
  const json = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  edit(json);
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(json));
}
