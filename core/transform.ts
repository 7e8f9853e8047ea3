/**
 * The optax-style transform contract for optimizers, error feedback and
 * gradient compressors. Web-standard only.
 *
 * A transform is a pair of pure functions over named flat tensors:
 * `init(params)` builds its state and `update(grads, state, params?)` returns
 * `[updates, newState]`. Updates are *added* to the parameters by
 * {@linkcode applyUpdates}, as optax's `apply_updates` does, so a descent step
 * returns −lr·direction. State is a plain readonly object with its own `count`
 * (the number of updates taken); `update` never mutates its arguments.
 *
 * Transforms are synchronous, as optax's are: a step is a few passes over
 * CPU memory, and making it `async` would put every optimizer step through the
 * microtask queue without letting any backend do more.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { applyUpdates, chain, type Params, scaleBy, stateless } from "./transform.ts";
 * const clip = stateless((g) => g); // any per-step function of the gradient
 * const sgd = chain(clip, scaleBy(-0.1));
 * let params: Params = { w: new Float32Array([1, 2]) };
 * let state = sgd.init(params);
 * const grads = { w: new Float32Array([1, 1]) };
 * const [updates, next] = sgd.update(grads, state, params);
 * params = applyUpdates(params, updates);
 * state = next;
 * assert(Math.abs(params.w![0]! - 0.9) < 1e-6 && state.count === 1);
 * ```
 *
 * @module
 */

/** Named flat float32 tensors: parameters, gradients or updates. */
export type Params = Readonly<Record<string, Float32Array>>;

/** The state every transform carries: at least the number of updates taken. */
export interface TransformState {
  /** Updates taken so far (0 after `init`). */
  readonly count: number;
}

/** An optax-style gradient transformation. */
export interface GradientTransform<S extends TransformState = TransformState> {
  /**
   * Builds the initial state for these parameters.
   *
   * @param params The parameters (only their names and sizes are read).
   * @returns The state, with `count` 0.
   */
  init(params: Params): S;
  /**
   * Transforms gradients into updates.
   *
   * @param grads Gradients, one per parameter name.
   * @param state The state from `init` or the previous `update`.
   * @param params The current parameters, for transforms that read them.
   * @returns The updates (to be added to the parameters) and the next state.
   */
  update(grads: Params, state: S, params?: Params): [Params, S];
}

/** State of {@linkcode chain}: the inner transforms' states, in order. */
export interface ChainState extends TransformState {
  /** One state per chained transform. */
  readonly inner: readonly TransformState[];
}

/**
 * Composes transforms: the updates of each are the gradients of the next.
 *
 * @param transforms The transforms, applied left to right.
 * @returns A transform whose state holds the inner states.
 */
export function chain(
  ...transforms: GradientTransform<TransformState>[]
): GradientTransform<ChainState> {
  // Each inner transform only ever receives the state it produced.
  const inner = transforms;
  return {
    init(params: Params): ChainState {
      return { count: 0, inner: inner.map((t) => t.init(params)) };
    },
    update(grads: Params, state: ChainState, params?: Params): [Params, ChainState] {
      if (state.inner.length !== inner.length) {
        throw new TypeError(
          `Cannot update a chain of ${inner.length} transforms with a state of ` +
            `${state.inner.length}`,
        );
      }
      let u = grads;
      const next: TransformState[] = [];
      for (let i = 0; i < inner.length; i++) {
        const [ui, si] = inner[i]!.update(u, state.inner[i]!, params);
        u = ui;
        next.push(si);
      }
      return [u, { count: state.count + 1, inner: next }];
    },
  };
}

/**
 * The transform that passes gradients through unchanged.
 *
 * @returns A stateless identity transform.
 */
export function identity(): GradientTransform<TransformState> {
  return stateless((grads) => grads);
}

/**
 * Lifts a per-step function of the gradients (and parameters) into a
 * transform whose state is only its `count`.
 *
 * @param fn Maps gradients (and the parameters, when given) to updates; must not
 *   mutate its arguments.
 * @returns The transform.
 */
export function stateless(
  fn: (grads: Params, params?: Params) => Params,
): GradientTransform<TransformState> {
  return {
    init(): TransformState {
      return { count: 0 };
    },
    update(grads: Params, state: TransformState, params?: Params): [Params, TransformState] {
      return [fn(grads, params), { count: state.count + 1 }];
    },
  };
}

/**
 * Multiplies every update by a constant (optax's `scale`): `scaleBy(-lr)` after
 * a direction gives a descent step.
 *
 * @param factor The multiplier; must be finite.
 * @returns A stateless transform.
 */
export function scaleBy(factor: number): GradientTransform<TransformState> {
  if (!Number.isFinite(factor)) {
    throw new RangeError(
      `Cannot scale updates as 'factor' must be finite: current value is ${factor}`,
    );
  }
  return stateless((grads) => mapParams(grads, (g) => g.map((x) => x * factor)));
}

/** A learning rate: a constant, or a schedule of the step count (0 first). */
export type LearningRate = number | ((count: number) => number);

/**
 * Resolves a learning rate at a step, validating it.
 *
 * @param lr The rate or schedule.
 * @param count The step count (0 at the first update).
 * @returns The rate, finite and non-negative.
 */
export function learningRateAt(lr: LearningRate, count: number): number {
  const v = typeof lr === "number" ? lr : lr(count);
  if (!(Number.isFinite(v) && v >= 0)) {
    throw new RangeError(
      `Cannot step as 'learningRate' must be finite and non-negative: current value is ${v}` +
        (typeof lr === "number" ? "" : ` (at step ${count})`),
    );
  }
  return v;
}

/**
 * Multiplies every update by −lr (optax's `scale_by_learning_rate`); with a
 * schedule, the rate at this transform's own `count`.
 *
 * @param learningRate A rate or schedule.
 * @returns A transform whose state is only its `count`.
 */
export function scaleByLearningRate(learningRate: LearningRate): GradientTransform<TransformState> {
  if (typeof learningRate === "number") learningRateAt(learningRate, 0);
  return {
    init(): TransformState {
      return { count: 0 };
    },
    update(grads: Params, state: TransformState): [Params, TransformState] {
      const f = -learningRateAt(learningRate, state.count);
      return [mapParams(grads, (g) => g.map((x) => x * f)), { count: state.count + 1 }];
    },
  };
}

/**
 * Adds updates to parameters (optax's `apply_updates`); returns fresh arrays.
 *
 * @param params The parameters.
 * @param updates One update per parameter name, of the same length.
 * @returns `params + updates`, name by name.
 */
export function applyUpdates(params: Params, updates: Params): Params {
  const out: Record<string, Float32Array> = {};
  for (const [name, p] of Object.entries(params)) {
    const u = updates[name];
    if (u === undefined) {
      throw new TypeError(`Cannot apply updates: no update for parameter '${name}'`);
    }
    if (u.length !== p.length) {
      throw new RangeError(
        `Cannot apply updates: parameter '${name}' has ${p.length} elements but its ` +
          `update has ${u.length}`,
      );
    }
    const r = new Float32Array(p.length);
    for (let i = 0; i < p.length; i++) r[i] = p[i]! + u[i]!;
    out[name] = r;
  }
  return out;
}

/**
 * Maps every named tensor through a function, keeping the names.
 *
 * @param params The named tensors.
 * @param fn Maps one tensor (and its name) to a new one.
 * @returns The mapped tensors.
 */
export function mapParams(
  params: Params,
  fn: (x: Float32Array, name: string) => Float32Array,
): Params {
  const out: Record<string, Float32Array> = {};
  for (const [name, x] of Object.entries(params)) out[name] = fn(x, name);
  return out;
}

/**
 * Bytes held by typed arrays anywhere inside a state object (numbers and
 * strings are not counted): the optimizer-state memory it really uses.
 *
 * @param state Any transform state.
 * @returns The total `byteLength` of the typed arrays it reaches.
 */
export function stateBytes(state: unknown): number {
  const seen = new Set<unknown>();
  const walk = (v: unknown): number => {
    if (v === null || typeof v !== "object" || seen.has(v)) return 0;
    seen.add(v);
    if (ArrayBuffer.isView(v)) return v.byteLength;
    let total = 0;
    for (const x of Array.isArray(v) ? v : Object.values(v)) total += walk(x);
    return total;
  };
  return walk(state);
}

/**
 * Optimizer-state bytes per parameter: {@linkcode stateBytes} over the
 * parameter count.
 *
 * @param state A transform state.
 * @param params The parameters it was built for.
 * @returns Bytes of state per parameter (Adam in float32: 8).
 */
export function stateBytesPerParam(state: unknown, params: Params): number {
  let n = 0;
  for (const p of Object.values(params)) n += p.length;
  if (n === 0) throw new RangeError("Cannot count state bytes per parameter of no parameters");
  return stateBytes(state) / n;
}
