// Solves a join's proof-of-work challenge off the page's thread: the first n such that
// SHA-256(challenge ":" n) starts with `bits` zero bits (the server's rule, flashsale_queue::pow).
// Hashes go 256 at a time through WebCrypto, so the page stays responsive on a phone.

const encoder = new TextEncoder();

function zeroBits(hash) {
  let bits = 0;
  for (const byte of hash) {
    if (byte !== 0) return bits + Math.clz32(byte) - 24;
    bits += 8;
  }
  return bits;
}

self.onmessage = async ({ data: { challenge, bits } }) => {
  const started = performance.now();
  const prefix = `${challenge}:`;
  for (let base = 0; ; base += 256) {
    const batch = [];
    for (let n = base; n < base + 256; n += 1) batch.push(crypto.subtle.digest('SHA-256', encoder.encode(prefix + n)));
    const hashes = await Promise.all(batch);
    const found = hashes.findIndex((hash) => zeroBits(new Uint8Array(hash)) >= bits);
    if (found >= 0) {
      self.postMessage({ solution: base + found, ms: performance.now() - started, tries: base + found + 1 });
      return;
    }
  }
};
