/**
 * What the command lines share: their usage error and the split of the
 * arguments into flags with a value and switches. Web-standard only.
 *
 * @module
 */

/**
 * Bad input on the command line (or an output folder in the way): the CLI
 * prints the message and exits with status 2.
 */
export class UsageError extends Error {
  /**
   * @param message What is wrong and what to do.
   */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * Splits the arguments into flags with a value (`--flag value` or
 * `--flag=value`; the last one wins, so that a flag can be appended to a
 * command) and switches.
 *
 * @param argv The arguments.
 * @param valueFlags The flags that take a value.
 * @param switchFlags The switches.
 * @returns The values by flag and the switches given.
 * @throws {UsageError} for a flag without its value, an unknown flag or a bare argument.
 */
export function splitFlags(
  argv: readonly string[],
  valueFlags: readonly string[],
  switchFlags: readonly string[],
): { values: Map<string, string>; switches: Set<string> } {
  const values = new Map<string, string>();
  const switches = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf("=");
    const flag = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg;
    if (valueFlags.includes(flag)) {
      const v = flag !== arg ? arg.slice(eq + 1) : argv[++i];
      if (v === undefined) throw new UsageError(`${flag} needs a value`);
      values.set(flag, v);
    } else if (switchFlags.includes(arg)) {
      switches.add(arg);
    } else if (arg.startsWith("-")) {
      throw new UsageError(`Unknown flag '${flag}'`);
    } else {
      throw new UsageError(`Unexpected argument '${arg}' (flags take the form --name value)`);
    }
  }
  return { values, switches };
}

/**
 * A flag's integer value.
 *
 * @param flag The flag (for the message).
 * @param v Its value.
 * @param min The least value allowed.
 * @returns The integer.
 * @throws {UsageError} unless `v` is a decimal integer ≥ min.
 */
export function integerFlag(flag: string, v: string, min: number): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`${flag} needs an integer ≥ ${min}: got '${v}'`);
  }
  return n;
}

/**
 * Reports a command's failure on stderr and gives its exit status: 2 for a
 * usage error (with where the flags are listed), 1 for anything else.
 *
 * @param e What was thrown.
 * @param task The `deno task` name, for the hint.
 * @returns The exit status.
 */
export function failureStatus(e: unknown, task: string): number {
  if (e instanceof UsageError) {
    console.error(`error: ${e.message}\n(deno task ${task} --help lists the flags)`);
    return 2;
  }
  console.error(`error: ${(e as Error).message}`);
  return 1;
}
