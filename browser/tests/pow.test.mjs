// The join's proof of work in a real browser: a buyer joins a sale that asks one, the page solves
// the challenge in a Web Worker and joins; then the solve time by difficulty, measured in this
// browser (BENCHMARKS.md takes its table from here: it prints it and writes pow-browser.txt).

import assert from 'node:assert/strict';
import { writeFile, mkdir } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { admin, BASE, launch, newPage, RUN } from './helpers.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('the waiting room pays the proof of work of a sale in a worker, and what it costs by difficulty', async () => {
  const { body: sale } = await admin('/admin/sales', {
    method: 'POST',
    body: {
      name: `Proof ${RUN}`,
      sku: `POW-${RUN}`,
      price_cents: 100,
      currency: 'CNY',
      stock: 5,
      per_user_limit: 1,
      opens_at: new Date(Date.now() + 3_600_000).toISOString(),
      prequeue_secs: 7_200,
      join_pow_bits: 12,
    },
  });
  const page = await newPage(browser, { locale: 'en-US' });
  await page.goto(`${BASE}/s/${sale.id}`);
  await page.locator('#name').fill(`pow-${RUN}`);
  await page.locator('form.sign-in button[type=submit]').click();
  await page.locator('.who').waitFor();
  await page.getByRole('button', { name: 'Join the queue' }).click();
  await page.locator('[data-queue-status="waiting"]').waitFor({ timeout: 60_000 });
  assert.match(await page.locator('#queue-title').textContent(), /pre-queue/);

  // The solver the page uses, timed here by difficulty (fresh random challenges: the number of
  // tries is geometric, so several per level).
  const src = await page.locator('script[type=module]').first().getAttribute('src');
  const powUrl = new URL('pow.js', new URL(src, BASE)).pathname;
  const rows = [];
  for (const bits of [8, 12, 14, 16, 18]) {
    const times = await page.evaluate(
      async ({ powUrl, bits }) => {
        const { solve } = await import(powUrl);
        const out = [];
        for (let i = 0; i < 11; i += 1) {
          const challenge = `bench-${bits}-${i}-${Math.random()}`;
          out.push((await solve(challenge, bits)).ms);
        }
        return out.sort((a, b) => a - b);
      },
      { powUrl, bits },
    );
    rows.push(`${String(bits).padStart(2)} bits: median ${times[5].toFixed(0).padStart(6)} ms, max ${times[10].toFixed(0).padStart(6)} ms (11 challenges)`);
  }
  const table = rows.join('\n');
  console.log(`proof of work in ${await browser.version()}:\n${table}`);
  await mkdir(process.env.SCREENSHOTS || 'screenshots', { recursive: true });
  await writeFile(`${process.env.SCREENSHOTS || 'screenshots'}/pow-browser.txt`, `${table}\n`);
  assert.deepEqual(page.errors, []);
});
