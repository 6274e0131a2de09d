// The operations console in a real browser: an operator signs in, creates a weekly sale (and sees
// the server's field error beside its field first), pauses and resumes it, and edits its stock
// from a stale version: the conflict view says who changed what, and applies the edit on request.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { admin, BASE, launch, newPage, RUN, shoot } from './helpers.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('an operator creates a weekly sale, pauses and resumes it, and sees the conflict of a stale edit', async () => {
  const page = await newPage(browser);
  page.on('dialog', (dialog) => dialog.accept());
  await page.goto(`${BASE}/admin/`);
  await page.locator('#token').fill('dev-admin-token');
  await page.locator('#actor').fill(`ops-alice-${RUN}`);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('table#sales').waitFor();
  await shoot(page, '10-console-sales');

  await page.getByRole('link', { name: 'New sale' }).click();
  const name = `Weekly drop ${RUN}`;
  await page.locator('[name="name"]').fill(name);
  await page.locator('[name="sku"]').fill('not a sku!');
  await page.locator('[name="price_cents"]').fill('499900');
  await page.locator('[name="stock"]').fill('100');
  await page.locator('[name="per_user_limit"]').fill('2');
  await page.locator('[name="schedule"]').selectOption('weekly');
  await page.locator('[name="weekly.weekday"]').selectOption('tue');
  await page.locator('[name="weekly.time"]').fill('12:00');
  await page.locator('[name="weekly.timezone"]').selectOption('Asia/Shanghai');
  await page.getByRole('button', { name: 'Create sale' }).click();

  // The server's validation error, beside the field it is about.
  const skuError = page.locator('[data-field="sku"] .field-error');
  await skuError.filter({ hasText: /./ }).waitFor();
  assert.equal(await page.locator('[name="sku"]').getAttribute('aria-invalid'), 'true');
  await shoot(page, '11-console-field-error');
  await page.locator('[name="sku"]').fill(`WEEKLY-${RUN}`);
  await page.getByRole('button', { name: 'Create sale' }).click();
  await page.waitForURL(/#\/sales\/\d+$/);
  const id = Number(page.url().match(/#\/sales\/(\d+)$/)[1]);
  await page.getByRole('heading', { name: `#${id} ${name}` }).waitFor();
  await page.locator('svg.chart').first().waitFor();

  // Pause and resume, each confirmed, each in the audit trail under the operator's name.
  await page.getByRole('button', { name: 'Pause' }).click();
  await page.locator('[data-status]', { hasText: '(paused)' }).waitFor();
  await page.getByRole('button', { name: 'Resume' }).click();
  await page.locator('[data-status]:not(:has-text("(paused)"))').waitFor();
  await page.locator('#audit td', { hasText: 'sale.resume' }).first().waitFor();
  assert.ok((await page.locator('#audit').textContent()).includes(`ops-alice-${RUN}`));
  await shoot(page, '12-console-sale');

  // The draw's seed commitment shows from the batch's creation; the batch's report downloads as
  // one self-contained page.
  await page.getByText('seed commitment').waitFor();
  const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#report').click()]);
  assert.match(download.suggestedFilename(), /^sale-\d+-batch-1-report\.html$/);
  const chunks = [];
  for await (const chunk of await download.createReadStream()) chunks.push(chunk);
  const report = Buffer.concat(chunks).toString('utf8');
  assert.ok(report.includes('<svg') && !report.includes('<script'), report.slice(0, 200));

  // Priority codes: generated here, downloaded once as CSV, counted on the sale.
  await page.locator('#codes-count').fill('3');
  const [csv] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Generate and download CSV' }).click()]);
  const csvChunks = [];
  for await (const chunk of await csv.createReadStream()) csvChunks.push(chunk);
  const lines = Buffer.concat(csvChunks).toString('utf8').trim().split(/\r?\n/);
  assert.equal(lines[0], 'code');
  assert.equal(lines.length, 4);
  assert.match(lines[1], /^[0-9A-Z]{5}(-[0-9A-Z]{5}){3}$/);
  const { body: withCodes } = await admin(`/admin/sales/${id}`);
  assert.equal(withCodes.priority_codes.generated, 3);

  // Units held back for code holders: set in the edit form, shown among the live figures.
  await page.locator('#edit-sale [name="priority_units"]').fill('10');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.locator('[data-stat="held for codes"] .stat', { hasText: /^10$/ }).waitFor();
  assert.equal((await admin(`/admin/sales/${id}`)).body.priority_units, 10);

  // Another operator changes the stock while this page's edit form holds the old version.
  await page.locator('#edit-sale [name="stock"]').fill('150');
  const { etag } = await admin(`/admin/sales/${id}`);
  await admin(`/admin/sales/${id}`, { method: 'PATCH', body: { stock: 120 }, headers: { 'If-Match': etag }, actor: `ops-bob-${RUN}` });
  // The live view polls every second; once it has seen Bob's version the form must still send the
  // version it was drawn from (a poll that moved it on once let the stale edit overwrite Bob's).
  const bobs = Number(etag.replace(/"/g, '')) + 1;
  await page.locator('.facts span', { hasText: new RegExp(`^version ${bobs}$`) }).waitFor();
  await page.getByRole('button', { name: 'Save' }).click();
  const conflict = page.locator('#conflict [role="alert"]');
  await conflict.waitFor();
  const text = await conflict.textContent();
  assert.match(text, /Someone changed this sale since you read it/);
  assert.ok(text.includes(`ops-bob-${RUN}`), text);
  assert.ok(text.includes('"stock":120'), text);
  await shoot(page, '13-console-conflict');

  // Applied on request, to the version now current.
  await page.getByRole('button', { name: 'Apply my change to the current version' }).click();
  await page.locator('#conflict [role="alert"]').waitFor({ state: 'detached' });
  const { body: sale } = await admin(`/admin/sales/${id}`);
  assert.equal(sale.stock, 150);
  assert.deepEqual(page.errors, []);
});

test('a wrong admin token is refused at sign-in and nothing is kept', async () => {
  const page = await newPage(browser);
  await page.goto(`${BASE}/admin/`);
  await page.locator('#token').fill('not-the-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('That token is not the admin token.').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('flashsale.admin')), null);
});
