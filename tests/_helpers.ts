/**
 * Shared test helpers: float comparison with a readable report, and access
 * to the shared real data (skipped with a reason when absent).
 *
 * @module
 */

import { AssertionError } from "node:assert/strict";

/**
 * Relative Frobenius error ‖a − b‖ / ‖b‖.
 *
 * @param a Values.
 * @param b Reference values.
 * @returns The relative error.
 */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i]! - b[i]!;
    num += d * d;
    den += b[i]! * b[i]!;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

/** Tolerances for {@linkcode assertClose}. */
export interface CloseOptions {
  /** Absolute tolerance. @default 1e-9 */
  atol?: number;
  /** Relative tolerance. @default 1e-9 */
  rtol?: number;
  /** Prefix for the failure message. */
  message?: string;
}

/**
 * Asserts |actual − expected| ≤ atol + rtol·|expected| element-wise; on failure
 * names the worst element, its values and the count of failing elements.
 *
 * @param actual Values to check (a number or array-like).
 * @param expected Reference values.
 * @param options Tolerances.
 */
export function assertClose(
  actual: ArrayLike<number> | number,
  expected: ArrayLike<number> | number,
  options: CloseOptions = {},
): void {
  const { atol = 1e-9, rtol = 1e-9, message = "" } = options;
  const a = typeof actual === "number" ? [actual] : actual;
  const e = typeof expected === "number" ? [expected] : expected;
  if (a.length !== e.length) {
    throw new AssertionError({
      message: `${message} length mismatch: actual ${a.length}, expected ${e.length}`,
    });
  }
  let worst = -1, worstExcess = -Infinity, failures = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!, y = e[i]!;
    const tol = atol + rtol * Math.abs(y);
    const diff = Math.abs(x - y);
    const bad = !(diff <= tol) && !(Number.isNaN(x) && Number.isNaN(y)) && x !== y;
    const excess = Number.isNaN(diff) ? Infinity : diff - tol;
    if (bad) failures++;
    if (bad && excess > worstExcess) {
      worstExcess = excess;
      worst = i;
    }
  }
  if (failures > 0) {
    throw new AssertionError({
      message: `${message} ${failures}/${a.length} elements differ; worst at [${worst}]: ` +
        `actual ${a[worst]}, expected ${e[worst]}, |diff| ${Math.abs(a[worst]! - e[worst]!)} ` +
        `(atol ${atol}, rtol ${rtol})`,
    });
  }
}

export { dataFile, dataRoot } from "../examples/data.ts";

/** What a script run in a subprocess gave. */
export interface ScriptRun {
  /** Exit status. */
  code: number;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
}

/**
 * Runs a Deno script in a subprocess (`deno run -A`), from the repository
 * root, and collects its output.
 *
 * @param script The script's path.
 * @param args Its arguments.
 * @param env Extra environment variables.
 * @returns Its exit status, stdout and stderr.
 */
export async function runScript(
  script: string,
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<ScriptRun> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    cwd: new URL("../", import.meta.url).pathname,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}
