/**
 * The package's layering, checked from the import lines: every module
 * imports only from its own folder or from folders below it. Run it as a
 * script (`deno run --allow-read tests/layering.ts`, exits 1 and lists the
 * offending imports) or through `tests/layering_test.ts`, which CI runs.
 *
 * Reads the file system.
 *
 * @module
 */

/**
 * The floors, lowest first. Folders on one floor (optim, pipeline) do not
 * import each other. `examples/`, `tests/` and the root `mod.ts` sit on top
 * and may import anything.
 */
export const LAYERS: readonly (readonly string[])[] = [
  ["core"],
  ["kernels"],
  ["hessian"],
  ["quantizers"],
  ["pruners"],
  ["optim", "pipeline"],
  ["models"],
];

/** One import that runs the wrong way. */
export interface UpwardImport {
  /** The importing file, relative to the package root. */
  readonly file: string;
  /** 1-based line of the module specifier. */
  readonly line: number;
  /** The imported module, relative to the package root. */
  readonly target: string;
}

function floorOf(folder: string): number {
  return LAYERS.findIndex((floor) => floor.includes(folder));
}

/**
 * The module specifiers of a source file's static imports and re-exports
 * (`import … from`, `import "…"`, `export … from`, also spread over several
 * lines), its dynamic `import("…")` calls and `new URL("…", import.meta.url)`
 * references, with their 1-based lines. Lines inside comments (JSDoc
 * examples are consumers of the package, not part of it) are skipped.
 *
 * @param source TypeScript source.
 * @returns Specifiers and lines.
 */
export function moduleSpecifiers(source: string): { specifier: string; line: number }[] {
  const out: { specifier: string; line: number }[] = [];
  const lines = source.split("\n");
  let inBlockComment = false;
  let inStatement = false; // inside a multi-line `import {` / `export {`
  for (let i = 0; i < lines.length; i++) {
    const text = lines[i]!;
    const trimmed = text.trim();
    if (inBlockComment) {
      if (trimmed.includes("*/")) inBlockComment = false;
      continue;
    }
    if (trimmed.startsWith("/*")) {
      inBlockComment = !trimmed.includes("*/");
      continue;
    }
    if (trimmed.startsWith("//")) continue;
    const fromLine = /^(?:import|export)\b.*\bfrom\s*["']([^"']+)["']/.exec(text) ??
      /^import\s*["']([^"']+)["']/.exec(text) ??
      (inStatement ? /^\}.*\bfrom\s*["']([^"']+)["']/.exec(text) : null);
    if (fromLine) {
      out.push({ specifier: fromLine[1]!, line: i + 1 });
      inStatement = false;
    } else if (/^(?:import|export)\b[^"']*\{\s*$/.test(text)) {
      inStatement = true;
    }
    for (const m of text.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g)) {
      out.push({ specifier: m[1]!, line: i + 1 });
    }
    for (const m of text.matchAll(/new URL\(\s*["']([^"']+)["']\s*,\s*import\.meta\.url/g)) {
      out.push({ specifier: m[1]!, line: i + 1 });
    }
  }
  return out;
}

function normalize(path: string): string {
  const parts: string[] = [];
  for (const p of path.split("/")) {
    if (p === "..") parts.pop();
    else if (p !== "." && p !== "") parts.push(p);
  }
  return parts.join("/");
}

/**
 * The imports of `files` that run upward or sideways across floors, or out
 * of the layered folders (into `examples/`, `tests/` or the root `mod.ts`).
 * Bare specifiers (`node:…`, `npm:…`, import-map names) are not layers.
 *
 * @param files Source text by path relative to the package root.
 * @returns The offending imports.
 */
export function upwardImports(files: ReadonlyMap<string, string>): UpwardImport[] {
  const bad: UpwardImport[] = [];
  for (const [file, source] of files) {
    const from = file.split("/")[0]!;
    const floor = floorOf(from);
    if (floor < 0 || !file.includes("/")) continue;
    for (const { specifier, line } of moduleSpecifiers(source)) {
      if (!specifier.startsWith(".")) continue;
      const dir = file.slice(0, file.lastIndexOf("/"));
      const target = normalize(`${dir}/${specifier}`);
      const to = target.includes("/") ? target.split("/")[0]! : "";
      if (to === from) continue;
      const toFloor = floorOf(to);
      if (toFloor < 0 || toFloor >= floor) bad.push({ file, line, target });
    }
  }
  return bad;
}

/**
 * Reads every `.ts` file of the layered folders under `root`.
 *
 * @param root The package root.
 * @returns Source text by path relative to the root.
 */
export async function readLayeredSources(root: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  async function walk(rel: string): Promise<void> {
    for await (const entry of Deno.readDir(`${root}/${rel}`)) {
      const path = `${rel}/${entry.name}`;
      if (entry.isDirectory) await walk(path);
      else if (entry.isFile && entry.name.endsWith(".ts")) {
        files.set(path, await Deno.readTextFile(`${root}/${path}`));
      }
    }
  }
  for (const folder of LAYERS.flat()) {
    try {
      await walk(folder);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  return files;
}

if (import.meta.main) {
  const root = new URL("..", import.meta.url).pathname;
  const bad = upwardImports(await readLayeredSources(root));
  for (const b of bad) console.error(`${b.file}:${b.line} imports ${b.target}`);
  console.log(
    bad.length === 0
      ? `no import runs upward (${LAYERS.map((f) => f.join(", ")).join(" < ")})`
      : `${bad.length} imports run upward`,
  );
  if (bad.length > 0) Deno.exit(1);
}
