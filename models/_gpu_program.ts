/**
 * Library-internal: a recorded sequence of compute dispatches that is
 * replayed into fresh command encoders, for work that repeats with the same
 * buffers (one decode step per generated token). Recording goes through the
 * same `encode*` functions as everything else (they take a `GpuBatch`): the
 * recorder is a `GpuBatch` whose `dispatch` creates each bind group once and
 * keeps it, and whose uniforms live in buffers written once. Replaying a
 * step then costs only the pass, pipeline, bind group and dispatch calls,
 * where a fresh `GpuBatch` per token would create every bind group again
 * (about 16 µs of host time each in Deno: ~3 ms per token at 1B shapes).
 * Web-standard only.
 *
 * @module
 */

import { dynamicLayouts } from "../kernels/_dynamic_uniforms.ts";
import { UniformArenas } from "../kernels/_uniform_arenas.ts";
import {
  type Gpu,
  GpuBatch,
  type GpuRead,
  type UniformField,
  workgroupCounts,
} from "../kernels/backend.ts";

/** One recorded dispatch. */
interface Command {
  readonly pipeline: GPUComputePipeline;
  readonly bindGroup: GPUBindGroup;
  readonly offsets: readonly number[];
  readonly groups: readonly [number, number, number];
}

/** One compute pass of a program (a phase when timed). */
interface Pass {
  name: string;
  readonly commands: Command[];
}

/**
 * A `GpuBatch` that records instead of encoding: dispatches become commands
 * of a {@linkcode GpuProgram} (bind groups created now, once), `phase` starts
 * the next pass, uniforms go to arenas owned by the program. It is never
 * submitted: {@linkcode ProgramRecorder.finish} returns the program.
 */
export class ProgramRecorder extends GpuBatch {
  readonly #passes: Pass[] = [{ name: "", commands: [] }];
  readonly #arenas: UniformArenas;
  #finished = false;

  /** @param gpu The GPU to record for. */
  constructor(gpu: Gpu) {
    super(gpu);
    this.#arenas = new UniformArenas(gpu, "program-uniforms");
  }

  #check(): void {
    if (this.#finished) throw new Error("Cannot record into a finished program");
  }

  /** The current pass gets the name; later dispatches go to a new pass. */
  override phase(name: string): void {
    this.#check();
    const last = this.#passes[this.#passes.length - 1]!;
    if (last.commands.length === 0) return;
    last.name = name;
    this.#passes.push({ name: "", commands: [] });
  }

  override uniform(fields: readonly UniformField[]): GPUBufferBinding {
    this.#check();
    return this.#arenas.uniform(fields);
  }

  override dispatch(
    pipeline: GPUComputePipeline,
    resources: readonly (GPUBuffer | GPUBufferBinding)[],
    groups: readonly [number, number?, number?],
  ): void {
    this.#check();
    const counts = workgroupCounts(this.gpu, groups);
    if (counts === null) return;
    const [x, y, z] = counts;
    const dynamic = dynamicLayouts.get(pipeline);
    const offsets: number[] = [];
    const entries = resources.map((r, binding): GPUBindGroupEntry => {
      const b: GPUBufferBinding = "buffer" in r ? r : { buffer: r };
      if (dynamic?.uniforms.has(binding)) {
        offsets.push(b.offset ?? 0);
        const size = b.size === undefined ? {} : { size: b.size };
        return { binding, resource: { buffer: b.buffer, offset: 0, ...size } };
      }
      return { binding, resource: b };
    });
    const bindGroup = this.gpu.device.createBindGroup({
      layout: dynamic?.layout ?? pipeline.getBindGroupLayout(0),
      entries,
    });
    this.#passes[this.#passes.length - 1]!.commands.push({
      pipeline,
      bindGroup,
      offsets,
      groups: [x, y, z],
    });
  }

  override copyAtEnd(): void {
    throw new TypeError("A recorded program has no copies: copy after replaying it");
  }

  override copy(): void {
    throw new TypeError("A recorded program has no copies: copy after replaying it");
  }

  override submit(
    _reads?: readonly GpuRead[],
  ): Promise<
    { data: ArrayBuffer[]; gpuSeconds: number; phases: Record<string, number>; readSeconds: number }
  > {
    return Promise.reject(new TypeError("A recorded program is replayed, not submitted"));
  }

  /**
   * Ends the recording: writes the uniforms and returns the program.
   *
   * @returns The program.
   */
  finish(): GpuProgram {
    this.#check();
    this.#finished = true;
    // The parent's own encoder and timestamp queries are never used: submitting the
    // empty batch releases them.
    super.submit().catch(() => {});
    this.#arenas.upload();
    const passes = this.#passes.filter((p) => p.commands.length > 0);
    return new GpuProgram(passes, this.#arenas.buffers);
  }
}

/** Timestamp queries for a replay: two per pass, from `first` on. */
export interface ProgramTimer {
  /** The query set. */
  readonly querySet: GPUQuerySet;
  /** Index of the first query this replay writes. */
  readonly first: number;
}

/** A recorded sequence of dispatches (see the module docs). */
export class GpuProgram {
  readonly #passes: readonly Pass[];
  readonly #uniforms: readonly GPUBuffer[];

  /**
   * @param passes The recorded passes.
   * @param uniforms The uniform arenas the bind groups read (owned).
   */
  constructor(passes: readonly Pass[], uniforms: readonly GPUBuffer[]) {
    this.#passes = passes;
    this.#uniforms = uniforms;
  }

  /** Names of the passes, in order ("" for an unnamed one). */
  get passNames(): string[] {
    return this.#passes.map((p) => p.name);
  }

  /** Number of dispatches per replay. */
  get dispatches(): number {
    return this.#passes.reduce((n, p) => n + p.commands.length, 0);
  }

  /** Number of dispatches of each pass, in the order of {@linkcode GpuProgram.passNames}. */
  get passDispatches(): number[] {
    return this.#passes.map((p) => p.commands.length);
  }

  /**
   * Records every pass into an encoder, `repeat` times in a row. Untimed,
   * the replays share each compute pass when the program is one pass (the
   * dispatches run in order either way; a pass fewer per replay spares the
   * host its calls and the GPU the pass boundary).
   *
   * @param encoder The command encoder.
   * @param timer Timestamps around each pass (2·passes queries from
   *   `timer.first`; each replay writes the same ones).
   * @param repeat Replays (a positive integer).
   */
  encode(encoder: GPUCommandEncoder, timer?: ProgramTimer, repeat = 1): void {
    if (!Number.isInteger(repeat) || repeat < 1) {
      throw new RangeError(
        `Cannot replay a program as 'repeat' must be a positive integer: current value is ${repeat}`,
      );
    }
    if (timer === undefined && this.#passes.length === 1) {
      const pass = encoder.beginComputePass();
      for (let r = 0; r < repeat; r++) this.#record(pass, this.#passes[0]!);
      pass.end();
      return;
    }
    for (let r = 0; r < repeat; r++) {
      this.#passes.forEach((p, i) => {
        const desc: GPUComputePassDescriptor = timer === undefined ? {} : {
          timestampWrites: {
            querySet: timer.querySet,
            beginningOfPassWriteIndex: timer.first + 2 * i,
            endOfPassWriteIndex: timer.first + 2 * i + 1,
          },
        };
        const pass = encoder.beginComputePass(desc);
        this.#record(pass, p);
        pass.end();
      });
    }
  }

  /** Records one pass's dispatches into an open compute pass. */
  #record(pass: GPUComputePassEncoder, p: Pass): void {
    let last: GPUComputePipeline | null = null;
    for (const c of p.commands) {
      if (c.pipeline !== last) pass.setPipeline(last = c.pipeline);
      if (c.offsets.length > 0) pass.setBindGroup(0, c.bindGroup, c.offsets as number[]);
      else pass.setBindGroup(0, c.bindGroup);
      pass.dispatchWorkgroups(c.groups[0], c.groups[1], c.groups[2]);
    }
  }

  /** Frees the uniform arenas (the program must not be replayed afterwards). */
  dispose(): void {
    for (const b of this.#uniforms) b.destroy();
  }
}
