/** Progress of a long operation: bytes done out of a total. */
export type ProgressCallback = (done: number, total: number) => void;

export interface LongOperationOptions {
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}
