/**
 * Library-internal: validation shared by the Adam-like optimizers.
 *
 * @module
 */

/** Validates β1, β2, ε the same way for every Adam-like optimizer. */
export function checkAdamHyper(beta1: number, beta2: number, eps: number, what: string): void {
  for (const [key, v] of [["beta1", beta1], ["beta2", beta2]] as const) {
    if (!(v >= 0 && v < 1)) {
      throw new RangeError(
        `Cannot build ${what} as '${key}' must be in [0, 1): current value is ${v}`,
      );
    }
  }
  if (!(eps >= 0 && Number.isFinite(eps))) {
    throw new RangeError(
      `Cannot build ${what} as 'eps' must be finite and non-negative: current value is ${eps}`,
    );
  }
}
