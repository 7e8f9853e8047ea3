/**
 * A small level database for the allocation tests: stories260K's block
 * linears at GPTQ 2, 3 and 4 bits (per output channel), calibrated on a few
 * stories, and other stories held apart for the fitness. Reads the shared
 * data with `Deno` file APIs.
 *
 * @module
 */

import { type CausalLM, causalLM } from "../../models/causal_lm.ts";
import {
  buildLevelDatabase,
  type BuildLevelDatabaseOptions,
  gptqLevels,
  type LevelDatabase,
} from "../../pipeline/level_database.ts";
import { loadStories260K } from "../_real_layers.ts";

/** The model, its database and the held-apart fitness sequences. */
export interface StoriesLevels {
  /** stories260K. */
  readonly lm: CausalLM;
  /** The database. */
  readonly db: LevelDatabase;
  /** The calibration sequences the database was built on. */
  readonly calibration: number[][];
  /** Held-apart sequences for the fitness. */
  readonly heldApart: number[][];
  /** A larger held-apart pool for resampled fitness: 8 stories of 24 tokens. */
  readonly pool: number[][];
}

/**
 * Builds the database (or reads it from `options.dir`).
 *
 * @param options Passed to `buildLevelDatabase`.
 * @returns The setup, or null when the shared data is absent.
 */
export async function storiesLevels(
  options: BuildLevelDatabaseOptions = {},
): Promise<StoriesLevels | null> {
  const setup = await loadStories260K();
  if (!setup) return null;
  const lm = causalLM(setup.model);
  const encode = (s: string, n: number) => setup.tok.encode(s, { bos: true }).slice(0, n);
  const calibration = setup.stories.slice(0, 4).map((s) => encode(s, 64));
  const heldApart = setup.stories.slice(10, 12).map((s) => encode(s, 48));
  const pool = setup.stories.slice(12, 20).map((s) => encode(s, 24));
  const db = await buildLevelDatabase(lm, calibration, gptqLevels([2, 3, 4], -1), {
    backend: "cpu",
    solveBackend: "cpu",
    ...options,
  });
  return { lm, db, calibration, heldApart, pool };
}
