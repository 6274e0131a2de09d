// The join's proof of work, as the waiting room pays it: solved in a Web Worker
// (`pow-worker.js`), so the countdown and the page keep moving while the phone works.

/**
 * Solves `challenge` at `bits` leading zero bits. Resolves to `{ solution, ms, tries }`.
 */
export function solve(challenge, bits) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./pow-worker.js', import.meta.url), { type: 'module' });
    worker.onmessage = ({ data }) => {
      worker.terminate();
      resolve(data);
    };
    worker.onerror = (event) => {
      worker.terminate();
      reject(new Error(event.message || 'the proof of work failed'));
    };
    worker.postMessage({ challenge, bits });
  });
}

/** Whether a refused join asks for a proof of work (and carries the challenge to solve). */
export function wantsProof(problem) {
  return (problem?.code === 'pow_required' || problem?.code === 'pow_invalid') && Boolean(problem.body?.pow);
}
