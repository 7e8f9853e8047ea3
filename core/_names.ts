/**
 * Library-internal: transforms require the gradients to name exactly the
 * parameters their state was built for, so that no state is silently dropped.
 *
 * @module
 */

/**
 * Throws a TypeError unless `grads` and `state` have the same keys.
 *
 * @param grads The gradients' record.
 * @param state A per-parameter record of the state.
 * @param what The transform, for the message.
 */
export function checkSameNames(
  grads: Readonly<Record<string, unknown>>,
  state: Readonly<Record<string, unknown>>,
  what: string,
): void {
  const g = Object.keys(grads), s = Object.keys(state);
  if (g.length === s.length && g.every((k) => Object.hasOwn(state, k))) return;
  const missing = s.filter((k) => !Object.hasOwn(grads, k));
  const extra = g.filter((k) => !Object.hasOwn(state, k));
  throw new TypeError(
    `Cannot update ${what}: the gradients must name the parameters of its state` +
      (missing.length ? `; missing ${missing.map((k) => `'${k}'`).join(", ")}` : "") +
      (extra.length ? `; unknown ${extra.map((k) => `'${k}'`).join(", ")}` : ""),
  );
}
