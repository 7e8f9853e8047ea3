/**
 * Library-internal: the finiteness check of a Hessian's inputs, shared by
 * the host (`hessian.ts`) and device (`device_hessian.ts`) constructors.
 * Web-standard only.
 *
 * @module
 */

/**
 * Throws unless every value is finite.
 *
 * @param data The values.
 * @param what Their name in the message.
 * @throws {RangeError} naming the first NaN or infinite element.
 */
export function checkFiniteInputs(data: ArrayLike<number>, what: string): void {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i]!)) {
      throw new RangeError(
        `Cannot accumulate a Hessian as '${what}' must be finite: element ${i} is ${data[i]}`,
      );
    }
  }
}
