/**
 * Test helper: spqr()'s default options written out as the OBS solver's
 * "spqr" decider, for the tests that call the solver directly beside spqr().
 *
 * @module
 */

/** spqr()'s defaults as the OBS solver's decider. */
export const SPQR_DEFAULT_DECIDER = {
  kind: "spqr",
  bits: 3,
  groupSize: 16,
  scaleBits: 3,
  zeroBits: 3,
  statisticGroupSize: 16,
  outlierThreshold: 0.2,
} as const;
