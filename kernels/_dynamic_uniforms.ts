/**
 * Private: pipelines laid out explicitly, with dynamic offsets for their
 * uniforms. `pipeline_cache.ts` builds and records the layouts,
 * `gpu_batch.ts` looks them up to share bind groups between dispatches.
 *
 * Web-standard only.
 *
 * @module
 */

/**
 * Pipelines laid out with dynamic offsets for their uniforms: the binding
 * numbers of those uniforms, and the group's layout.
 */
export const dynamicLayouts = new WeakMap<
  GPUComputePipeline,
  { readonly layout: GPUBindGroupLayout; readonly uniforms: ReadonlySet<number> }
>();

/**
 * The explicit layout of group 0 of a WGSL source whose bindings are all
 * buffers (uniforms with dynamic offsets), or null when it has others.
 */
export function dynamicUniformLayout(
  device: GPUDevice,
  wgsl: string,
): { layout: GPUBindGroupLayout; uniforms: Set<number> } | null {
  const decl = /@group\((\d+)\)\s*@binding\((\d+)\)\s*var\s*<\s*(\w+)\s*(?:,\s*(\w+)\s*)?>/g;
  const entries: GPUBindGroupLayoutEntry[] = [];
  const uniforms = new Set<number>();
  for (const m of wgsl.matchAll(decl)) {
    if (m[1] !== "0") return null;
    const binding = Number(m[2]), space = m[3], access = m[4] ?? "read";
    if (space === "uniform") {
      uniforms.add(binding);
      entries.push({ binding, visibility: 4, buffer: { type: "uniform", hasDynamicOffset: true } });
    } else if (space === "storage") {
      const type = access === "read_write" ? "storage" : "read-only-storage";
      entries.push({ binding, visibility: 4, buffer: { type } });
    } else return null;
  }
  if (entries.length !== (wgsl.match(/@binding\(/g) ?? []).length) return null;
  return { layout: device.createBindGroupLayout({ entries }), uniforms };
}
