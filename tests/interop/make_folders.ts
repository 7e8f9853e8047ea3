/**
 * The folders the interop check reads (`dequantize_check.py`): for five
 * fixture models, a packed folder written by `writeCheckpoint` (GPTQ v1, GPTQ
 * v2, compressed-tensors asymmetric with act-order, compressed-tensors
 * symmetric per channel, compressed-tensors sparse-24-bitmask) and the dense
 * float32 folder of the same weights (grids' scales rounded to f16 first, so
 * both hold the same values). Seeded: every
 * run writes the same bytes. Run it as a script (`deno run -A
 * tests/interop/make_folders.ts DIR`); `interop_test.ts` calls it too.
 *
 * @module
 */

import { loadModel } from "../../models/causal_lm.ts";
import { type CheckpointFormat, writeCheckpoint } from "../../models/formats/write_checkpoint.ts";
import { quantizedModules, type TestGrid } from "../models/formats/_grids.ts";
import type { CheckpointModule } from "../../models/formats/write_checkpoint.ts";
import { LLAMA_LINEARS } from "../../models/model.ts";
import { magnitudePrune } from "../../pruners/magnitude.ts";
import { fixtureDir } from "../models/_hf_fixtures.ts";

/** One interop case: a fixture, the grid of its linears, the packed format. */
export interface InteropCase {
  /** Folder names: `<name>-packed`, `<name>-dense`. */
  readonly name: string;
  /** Fixture model. */
  readonly fixture: string;
  /** Grid of every block linear (else 2:4 magnitude pruning). */
  readonly grid?: TestGrid;
  /** Packed layout. */
  readonly format: Exclude<CheckpointFormat, "dense">;
  /** GPTQ's checkpoint_format. */
  readonly checkpointFormat?: "gptq" | "gptq_v2";
}

/** The cases, in order. */
export const INTEROP_CASES: readonly InteropCase[] = [
  {
    name: "llama-gptq-v1-w4g32-act",
    fixture: "llama",
    grid: { bits: 4, groupSize: 32, symmetric: false, actOrder: true },
    format: "gptq",
  },
  {
    name: "qwen3-gptq-v2-w3g32-sym",
    fixture: "qwen3",
    grid: { bits: 3, groupSize: 32, symmetric: true, actOrder: false },
    format: "gptq",
    checkpointFormat: "gptq_v2",
  },
  {
    name: "qwen2-ct-w4g16-act",
    fixture: "qwen2",
    grid: { bits: 4, groupSize: 16, symmetric: false, actOrder: true },
    format: "compressed-tensors",
  },
  {
    name: "llama3_rope-ct-w8-sym",
    fixture: "llama3_rope",
    grid: { bits: 8, groupSize: -1, symmetric: true, actOrder: false },
    format: "compressed-tensors",
  },
  { name: "mistral-ct-sparse24", fixture: "mistral", format: "compressed-tensors" },
];

/** Token ids the check runs (within every fixture's vocabulary of 448). */
export const INTEROP_IDS: readonly number[] = [1, 17, 200, 33, 4, 90, 91, 5, 400, 12, 7, 7, 300, 2];

/**
 * Writes `<name>-packed` and `<name>-dense` for every case into `dir`.
 *
 * @param dir An existing folder.
 * @returns The case names.
 */
export async function makeInteropFolders(dir: string): Promise<string[]> {
  for (const c of INTEROP_CASES) {
    const lm = await loadModel(fixtureDir(c.fixture));
    const grid = c.grid;
    let modules: Map<string, CheckpointModule>;
    if (grid) modules = await quantizedModules(lm.model, () => grid);
    else {
      modules = new Map();
      for (let l = 0; l < lm.model.layers.length; l++) {
        for (const key of LLAMA_LINEARS) {
          const p = await magnitudePrune(lm.model.layers[l]![key], {
            structure: { kind: "nm", n: 2, m: 4 },
          });
          modules.set(`layers.${l}.${key}`, { weight: p.weight, mask: p.mask.data });
        }
      }
    }
    // The source's config.json, as transformers wrote it.
    const config = JSON.parse(await Deno.readTextFile(`${fixtureDir(c.fixture)}/config.json`));
    await writeCheckpoint(lm.model, modules, `${dir}/${c.name}-packed`, {
      format: c.format,
      config,
      ...(c.checkpointFormat ? { checkpointFormat: c.checkpointFormat } : {}),
    });
    await writeCheckpoint(lm.model, modules, `${dir}/${c.name}-dense`, { format: "dense", config });
  }
  await Deno.writeTextFile(`${dir}/ids.json`, JSON.stringify(INTEROP_IDS) + "\n");
  return INTEROP_CASES.map((c) => c.name);
}

if (import.meta.main) {
  const dir = Deno.args[0];
  if (!dir) {
    console.error("Usage: deno run -A tests/interop/make_folders.ts DIR");
    Deno.exit(2);
  }
  await Deno.mkdir(dir, { recursive: true });
  for (const name of await makeInteropFolders(dir)) console.log(`${dir}/${name}-{packed,dense}`);
}
