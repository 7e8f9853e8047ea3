/**
 * The statistics every compressor reports with its result (quantizers,
 * pruners and the Optimal Brain Surgeon solver that both use), kept on the
 * ground floor so that each layer can name it. Web-standard only.
 *
 * @module
 */

/** Statistics a compressor reports with its result. */
export interface CompressionStats {
  /** Wall-clock seconds spent. */
  seconds: number;
  /**
   * The Optimal Brain Surgeon loss Σ (w − q)² / U_jj² (U the upper Cholesky
   * factor of the damped H⁻¹), i.e. ‖(W − Ŵ)X‖² per token, when a solver ran.
   */
  obsLoss?: number;
  /** Damping added to the Hessian diagonal, as an absolute value. */
  damping?: number;
  /** Input columns whose Hessian diagonal was zero (their weights were set to 0). */
  deadColumns?: number;
  /** Anything else the method measured. */
  [key: string]: number | undefined;
}
