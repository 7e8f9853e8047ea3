/**
 * The one data-root setting for examples and tests: `$LLMC_DATA`, defaulting
 * to `../shared/data` beside the repository. Uses the `Deno` namespace.
 *
 * @module
 */

/**
 * The data root.
 *
 * @returns `$LLMC_DATA` when set, else `<repo>/../shared/data`.
 */
export function dataRoot(): string {
  return Deno.env.get("LLMC_DATA") ?? new URL("../../shared/data", import.meta.url).pathname;
}

/**
 * Path of a shared data file, or null (with the reason printed to stderr) when absent.
 *
 * @param rel Path relative to the data root, e.g. `stories260K/stories260K.bin`.
 * @returns The absolute path, or null.
 */
export function dataFile(rel: string): string | null {
  const path = `${dataRoot()}/${rel}`;
  try {
    Deno.statSync(path);
    return path;
  } catch {
    console.warn(`skipped: ${path} is absent (set LLMC_DATA to the shared data folder)`);
    return null;
  }
}

/**
 * Gives the process a private `XDG_RUNTIME_DIR` when none is set, so that
 * Mesa's Vulkan driver does not print "XDG_RUNTIME_DIR is invalid or not set"
 * when a command-line tool probes for a WebGPU adapter (it needs the folder only
 * for window-system sockets, which compute never uses). For CLIs only: the
 * library itself never touches the environment.
 */
export function quietGpuProbe(): void {
  if (Deno.env.get("XDG_RUNTIME_DIR")) return;
  try {
    Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync({ prefix: "llmc-xdg-" }));
  } catch {
    // no permission to set the environment or create the folder: keep the warning
  }
}
